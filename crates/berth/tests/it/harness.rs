//! Starting and stopping the real binary, and small helpers for the /v2 API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_meta::testsuite::ScratchDatabase;
use reqwest::{Client, Response, StatusCode};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether servers run on PostgreSQL + S3 (`BERTH_TEST_BACKEND=fleet`, which
/// `scripts/test.sh` sets for its second pass) instead of the embedded SQLite + filesystem.
pub fn fleet() -> bool {
    std::env::var("BERTH_TEST_BACKEND").as_deref() == Ok("fleet")
}

fn need_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the backends with scripts/pg-start.sh and scripts/s3-start.sh")
    })
}

/// A fresh PostgreSQL database and S3 key prefix, shared by every server started on it.
/// The database is dropped when the last copy goes.
#[derive(Debug, Clone)]
pub struct FleetBackend {
    pub db_url: String,
    pub s3_prefix: String,
    /// Where servers reach S3; `None`: the test server itself (`BERTH_TEST_S3_ENDPOINT`).
    pub s3_endpoint: Option<String>,
    _database: Arc<ScratchDatabase>,
}

impl FleetBackend {
    /// Create an empty database on the test cluster and pick an unused S3 prefix.
    pub fn create() -> Self {
        Self::create_on(&need_env("BERTH_TEST_DATABASE_URL"))
    }

    /// Create an empty database on the cluster `admin` (a URL whose role may create
    /// databases) and pick an unused S3 prefix.
    pub fn create_on(admin: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "berth_it_{}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let database = ScratchDatabase::create(admin, &name);
        // A short prefix: s3s-fs names a metadata file after the base64 of each whole key, so
        // keys longer than about 158 bytes (a sha512 blob key is 145 without a prefix) exceed
        // the filesystem's 255-byte file names there. Real S3 allows 1024-byte keys.
        let short = &sha256(name.as_bytes())["sha256:".len()..][..8];
        Self {
            db_url: database.url().to_owned(),
            s3_prefix: format!("t{short}/"),
            s3_endpoint: None,
            _database: Arc::new(database),
        }
    }

    /// The same database and prefix, with S3 reached at `endpoint` (a fault proxy, say).
    pub fn with_s3_endpoint(&self, endpoint: &str) -> Self {
        Self {
            s3_endpoint: Some(endpoint.to_owned()),
            ..self.clone()
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--metadata-url".into(),
            self.db_url.clone(),
            "--s3-endpoint".into(),
            self.s3_endpoint
                .clone()
                .unwrap_or_else(|| need_env("BERTH_TEST_S3_ENDPOINT")),
            "--s3-bucket".into(),
            need_env("BERTH_TEST_S3_BUCKET"),
            "--s3-prefix".into(),
            self.s3_prefix.clone(),
        ]
    }
}

/// The password of `admin` on every test server.
pub const ADMIN_PASSWORD: &str = "Berth-Test-Admin-1";

/// A running `berth serve`.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub http: Client,
    extra_args: Vec<String>,
    tls: bool,
    backend: Option<FleetBackend>,
    /// The file its log (stdout and stderr) goes to; `None`: stdout is dropped and stderr
    /// is the test's.
    log: Option<PathBuf>,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`Server::start`] with more `berth serve` arguments.
    pub async fn start_with(args: &[&str]) -> Self {
        let http = Client::builder().no_proxy().build().unwrap();
        let args = args.iter().map(|a| a.to_string()).collect();
        Self::launch(http, args, false).await
    }

    /// [`Server::start_with`] plus a config file holding `config` (TOML).
    pub async fn start_on_config(args: &[&str], config: &str) -> Self {
        let http = Client::builder().no_proxy().build().unwrap();
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        let backend = fleet().then(FleetBackend::create);
        Self::launch_with(http, args, false, backend, Some(config), false).await
    }

    /// [`Server::start_on_config`] with the server's log (its stdout and stderr) kept in a
    /// file; read it with [`Server::log`].
    pub async fn start_logged(args: &[&str], config: &str) -> Self {
        let http = Client::builder().no_proxy().build().unwrap();
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        let backend = fleet().then(FleetBackend::create);
        Self::launch_with(http, args, false, backend, Some(config), true).await
    }

    /// Another instance over the same PostgreSQL + S3 backend as `backend`.
    pub async fn start_on(backend: &FleetBackend) -> Self {
        Self::start_on_with(backend, &[], None).await
    }

    /// An instance over `backend` with extra `serve` arguments and, when given, a config file
    /// holding `config` (TOML; flags and the backend's arguments win over it).
    pub async fn start_on_with(
        backend: &FleetBackend,
        args: &[&str],
        config: Option<&str>,
    ) -> Self {
        let http = Client::builder().no_proxy().build().unwrap();
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        Self::launch_with(http, args, false, Some(backend.clone()), config, false).await
    }

    async fn launch(http: Client, extra_args: Vec<String>, tls: bool) -> Self {
        let backend = fleet().then(FleetBackend::create);
        Self::launch_with(http, extra_args, tls, backend, None, false).await
    }

    async fn launch_with(
        http: Client,
        mut extra_args: Vec<String>,
        tls: bool,
        backend: Option<FleetBackend>,
        config: Option<&str>,
        keep_log: bool,
    ) -> Self {
        if let Some(b) = &backend {
            extra_args.extend(b.args());
        }
        let dir = tempfile::tempdir().unwrap();
        if let Some(config) = config {
            let file = dir.path().join("berth.toml");
            std::fs::write(&file, config).unwrap();
            extra_args.extend(["--config".into(), file.display().to_string()]);
        }
        let log = keep_log.then(|| dir.path().join("berth.log"));
        let mut s = Self {
            child: None,
            port: 0,
            dir,
            base: String::new(),
            http,
            extra_args,
            tls,
            backend,
            log,
        };
        s.spawn().await;
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Everything the server has logged so far (started with [`Server::start_logged`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.as_ref().expect("started with start_logged")).unwrap()
    }

    /// Run one SQL statement on this server's metadata database (SQLite or PostgreSQL), for a
    /// state the API cannot make, such as a robot past its expiry.
    pub fn sql(&self, statement: &str) {
        let out = match &self.backend {
            Some(b) => Command::new("psql")
                .arg(&b.db_url)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", statement])
                .output()
                .expect("run psql (postgresql-client)"),
            None => Command::new("sqlite3")
                .args(["-bail", "-cmd", ".timeout 10000"])
                .arg(self.data_dir().join("meta.db"))
                .arg(statement)
                .output()
                .expect("run sqlite3"),
        };
        assert!(
            out.status.success(),
            "{statement}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The blob store this server writes to, for tests that look at (or damage) it.
    pub fn storage(&self) -> crate::storage::Storage {
        match &self.backend {
            Some(b) => crate::storage::Storage::s3(&b.s3_prefix),
            None => crate::storage::Storage::Fs(self.data_dir()),
        }
    }

    async fn spawn(&mut self) {
        for _ in 0..5 {
            let port = free_port();
            // The log goes to stdout; a kept log also takes stderr (panics, startup errors).
            let (stdout, stderr) = match &self.log {
                Some(path) => {
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .unwrap();
                    (file.try_clone().unwrap().into(), file.into())
                }
                None => (Stdio::null(), Stdio::inherit()),
            };
            let child = Command::new(env!("CARGO_BIN_EXE_berth"))
                .arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(self.data_dir())
                .args(&self.extra_args)
                .env("BERTH_LOG_LEVEL", "warn")
                // The OCI behaviour tests run without access control; the access tests pass
                // `--auth-mode token`, which wins over the variable.
                .env("BERTH_AUTH_MODE", "open")
                .env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .expect("start berth");
            self.child = Some(child);
            self.port = port;
            let scheme = if self.tls { "https" } else { "http" };
            self.base = format!("{scheme}://127.0.0.1:{port}");
            if self.wait_ready().await {
                return;
            }
            self.kill9();
        }
        panic!("berth did not start");
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("berth exited early: {status}");
                return false;
            }
            match self.http.get(self.url("/v2/")).send().await {
                // 401: up, and asking for a sign-in (access control on).
                Ok(r) if r.status() == StatusCode::OK || r.status() == StatusCode::UNAUTHORIZED => {
                    return true
                }
                Ok(r) => eprintln!("not ready: {}", r.status()),
                Err(e) if Instant::now() + Duration::from_secs(9) < deadline => {
                    let _ = e; // still starting
                }
                Err(e) => eprintln!("not ready: {e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start with TLS; readiness is checked over HTTPS with the given certificate.
    pub async fn start_tls(ca: &Path, cert: &Path, key: &Path) -> Self {
        let pem = std::fs::read(ca).unwrap();
        let http = Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .no_proxy()
            .build()
            .unwrap();
        let args = vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ];
        Self::launch(http, args, true).await
    }

    /// Wait for a process that was sent SIGTERM to exit.
    pub fn terminate_wait(&mut self) -> std::process::ExitStatus {
        self.child.take().expect("running").wait().unwrap()
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_bytes(&self, path: &str) -> Vec<u8> {
        self.get(path).await.bytes().await.unwrap().to_vec()
    }

    pub async fn head(&self, path: &str) -> Response {
        self.http.head(self.url(path)).send().await.unwrap()
    }

    pub async fn post(&self, path: &str) -> Response {
        self.http.post(self.url(path)).send().await.unwrap()
    }

    pub async fn put(&self, path: &str) -> Response {
        self.http.put(self.url(path)).send().await.unwrap()
    }

    /// `PATCH` one chunk of an upload with its `Content-Range`.
    pub async fn patch_chunk(&self, path: &str, range: impl AsRef<str>, body: Vec<u8>) -> Response {
        self.http
            .patch(self.url(path))
            .header("content-range", range.as_ref())
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.http.delete(self.url(path)).send().await.unwrap()
    }

    /// Push a blob monolithically; returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "push blob: {}",
            r.text().await.unwrap()
        );
        d
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Push a config and one layer, then an image manifest under `tag`; returns the
    /// manifest bytes and digest.
    pub async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Vec<u8>, String) {
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{}}}",
            layer.len()
        );
        let cd = self.push_blob(repo, config.as_bytes()).await;
        let ld = self.push_blob(repo, layer).await;
        let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None);
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "put manifest: {}",
            r.text().await.unwrap()
        );
        let d = sha256(&m);
        (m, d)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// An OCI image manifest with the given config and layers, and an optional subject.
pub fn image_manifest(
    config: &str,
    config_len: usize,
    layers: &[(&str, usize)],
    subject: Option<(&str, usize)>,
) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, n)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}))
        .collect();
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": layers,
    });
    if let Some((d, n)) = subject {
        m["subject"] = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d, "size": n});
    }
    serde_json::to_vec(&m).unwrap()
}

/// The error code of a spec error body.
pub async fn error_code(r: Response) -> String {
    let v: serde_json::Value = r.json().await.expect("error body is JSON");
    v["errors"][0]["code"]
        .as_str()
        .expect("errors[0].code")
        .to_owned()
}

/// The upload id at the end of an upload's `Location`.
pub fn upload_id(location: &str) -> &str {
    let path = location.split('?').next().unwrap_or(location);
    path.rsplit('/').next().unwrap_or(path)
}

pub fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

/// Push one image with a chunked layer upload; returns (repo, tag, manifest digest) once the
/// registry acknowledged the manifest. Any error (the server died) ends it early.
pub async fn push_one(
    http: reqwest::Client,
    base: String,
    repo: String,
    tag: String,
    seed: u32,
) -> Option<String> {
    let layer: Vec<u8> = (0..(1u32 << 20) + (seed % 64) * 4099)
        .map(|i| (i.wrapping_mul(seed + 31) >> 3) as u8)
        .collect();
    let config = format!("{{\"seed\":{seed}}}");
    let cd = sha256(config.as_bytes());
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={cd}"))
        .body(config.clone())
        .send()
        .await
        .ok()?;
    if r.status() != StatusCode::CREATED {
        return None;
    }
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .ok()?;
    let mut loc = r.headers().get("location")?.to_str().ok()?.to_owned();
    let mut off = 0;
    for chunk in layer.chunks(256 << 10) {
        let r = http
            .patch(format!("{base}{loc}"))
            .header("content-range", format!("{off}-{}", off + chunk.len() - 1))
            .body(chunk.to_vec())
            .send()
            .await
            .ok()?;
        if r.status() != StatusCode::ACCEPTED {
            return None;
        }
        loc = r.headers().get("location")?.to_str().ok()?.to_owned();
        off += chunk.len();
    }
    let ld = sha256(&layer);
    let r = http
        .put(format!("{base}{loc}?digest={ld}"))
        .send()
        .await
        .ok()?;
    if r.status() != StatusCode::CREATED {
        return None;
    }
    let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None);
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .ok()?;
    (r.status() == StatusCode::CREATED).then(|| sha256(&m))
}

/// Every tag in every repository resolves to a complete manifest whose blobs are all there and
/// hash to their digests.
pub async fn check_consistent(s: &Server) -> usize {
    let cat: serde_json::Value = s.get("/v2/_catalog").await.json().await.unwrap();
    let mut images = 0;
    for repo in cat["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags: serde_json::Value = s
            .get(&format!("/v2/{repo}/tags/list"))
            .await
            .json()
            .await
            .unwrap();
        for tag in tags["tags"].as_array().unwrap() {
            let r = s
                .get(&format!("/v2/{repo}/manifests/{}", tag.as_str().unwrap()))
                .await;
            assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag} points at nothing");
            let d = header(&r, "docker-content-digest").to_owned();
            let body = r.bytes().await.unwrap();
            assert_eq!(sha256(&body), d, "{repo}:{tag} manifest is corrupt");
            for b in image_blobs(&body) {
                let r = s.get(&format!("/v2/{repo}/blobs/{b}")).await;
                assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag} blob {b} missing");
                assert_eq!(
                    sha256(&r.bytes().await.unwrap()),
                    b,
                    "{repo}:{tag} blob {b} corrupt"
                );
            }
            images += 1;
        }
    }
    images
}

/// The config and layer digests of an image manifest.
pub fn image_blobs(manifest: &[u8]) -> Vec<String> {
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
    for l in m["layers"].as_array().unwrap() {
        blobs.push(l["digest"].as_str().unwrap().to_owned());
    }
    blobs
}

/// The upload `location` with `digest=` added to its query (for the final `PUT`).
pub fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

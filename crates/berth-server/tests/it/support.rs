//! A server over SQLite and the filesystem in a temporary directory, and request helpers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use axum::Router;
use base64::Engine as _;
use berth_core::{Access, AccessSettings, AuditLog, Limits, Registry};
use berth_meta::postgres::{PgMeta, PgOptions};
use berth_meta::sqlite::{Durability, SqliteMeta};
use berth_meta::testsuite::ScratchDatabase;
use berth_meta::{AccessStore, MetaStore};
use berth_server::{router, AppState, AuthState};
use berth_store::fs::{FsStore, SyncMode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const ADMIN_PW: &str = "Admin12345";

pub struct Env {
    pub app: Router,
    pub access: Arc<Access>,
    _dir: tempfile::TempDir,
    /// Declared last, so dropped after the router (and its connection pool).
    _database: Option<ScratchDatabase>,
}

/// A fresh database on the PostgreSQL server `BERTH_TEST_DATABASE_URL` names.
async fn postgres() -> (Arc<PgMeta>, ScratchDatabase) {
    static N: AtomicU64 = AtomicU64::new(0);
    let admin = std::env::var("BERTH_TEST_DATABASE_URL")
        .expect("BERTH_TEST_BACKEND=fleet needs BERTH_TEST_DATABASE_URL (scripts/pg-start.sh)");
    let name = format!(
        "berth_api_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let database = ScratchDatabase::create(&admin, &name);
    let meta = PgMeta::connect(database.url(), PgOptions::default())
        .await
        .expect("postgres");
    (Arc::new(meta), database)
}

/// A router over SQLite, or over PostgreSQL with `BERTH_TEST_BACKEND=fleet` (as
/// `scripts/test.sh` runs it the second time), and the filesystem store.
pub async fn env() -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    if std::env::var("BERTH_TEST_BACKEND").as_deref() == Ok("fleet") {
        let (meta, database) = postgres().await;
        let mut env = env_on(dir, meta.clone(), meta).await;
        env._database = Some(database);
        return env;
    }
    let meta = Arc::new(
        SqliteMeta::open(&dir.path().join("meta.db"), Durability::Normal).expect("sqlite"),
    );
    env_on(dir, meta.clone(), meta).await
}

async fn env_on(
    dir: tempfile::TempDir,
    meta: Arc<dyn MetaStore>,
    access_store: Arc<dyn AccessStore>,
) -> Env {
    let store = Arc::new(FsStore::open(dir.path().join("blobs"), SyncMode::Relaxed).expect("fs"));
    let audit = AuditLog::new(access_store.clone());
    let access = Arc::new(
        Access::new(access_store, AccessSettings::default(), None, audit)
            .await
            .expect("access"),
    );
    access.bootstrap(Some(ADMIN_PW)).await.expect("bootstrap");
    let registry = Registry::new(store, meta, Limits::default()).with_access(access.clone());
    let app = router(AppState {
        registry,
        metrics: None,
        auth: Some(AuthState {
            access: access.clone(),
            realm: None,
            tls: false,
        }),
    });
    Env {
        app,
        access,
        _dir: dir,
        _database: None,
    }
}

pub fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// Who sends a request.
#[derive(Clone, Copy)]
pub enum As<'a> {
    Nobody,
    Basic(&'a str, &'a str),
    Admin,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

pub async fn reply(resp: Response<Body>) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

impl Env {
    pub async fn send(&self, req: Request<Body>) -> Reply {
        reply(self.app.clone().oneshot(req).await.expect("infallible")).await
    }

    pub async fn call(
        &self,
        who: As<'_>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(path);
        match who {
            As::Nobody => {}
            As::Basic(u, p) => b = b.header("authorization", basic(u, p)),
            As::Admin => b = b.header("authorization", basic("admin", ADMIN_PW)),
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .expect("request");
        self.send(req).await
    }

    pub async fn get(&self, who: As<'_>, path: &str) -> Reply {
        self.call(who, Method::GET, path, None).await
    }

    /// Create user `name` (password `Passw0rd-name`) and return its id.
    pub async fn user(&self, name: &str) -> i64 {
        let r = self
            .call(
                As::Admin,
                Method::POST,
                "/api/v2.0/users",
                Some(serde_json::json!({"username": name, "password": pw(name), "email": format!("{name}@example.com")})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let loc = r.headers["location"].to_str().expect("ascii");
        loc.rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("id")
    }

    /// Create project `name` as admin and return its id.
    pub async fn project(&self, name: &str, public: bool) -> i64 {
        let r = self
            .call(
                As::Admin,
                Method::POST,
                "/api/v2.0/projects",
                Some(serde_json::json!({"project_name": name, "metadata": {"public": public.to_string()}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let loc = r.headers["location"].to_str().expect("ascii");
        loc.rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("id")
    }

    /// Make `user` a member of `project` with role `role_id`.
    pub async fn member(&self, project: &str, user: &str, role_id: i64) {
        let r = self
            .call(
                As::Admin,
                Method::POST,
                &format!("/api/v2.0/projects/{project}/members"),
                Some(serde_json::json!({"role_id": role_id, "member_user": {"username": user}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }

    /// Push an image with one config blob to `repo:tag` over /v2 as admin.
    pub async fn push(&self, repo: &str, tag: &str) -> String {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let digest = berth_oci::Digest::sha256_of(config).to_string();
        let auth = basic("admin", ADMIN_PW);
        let req = Request::post(format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
            .header("authorization", &auth)
            .header("content-type", "application/octet-stream")
            .body(Body::from(&config[..]))
            .expect("request");
        let r = self.send(req).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len()},
            "layers": []
        })
        .to_string();
        let req = Request::put(format!("/v2/{repo}/manifests/{tag}"))
            .header("authorization", &auth)
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(Body::from(manifest.clone()))
            .expect("request");
        let r = self.send(req).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        berth_oci::Digest::sha256_of(manifest.as_bytes()).to_string()
    }

    /// Wait until the audit log has written what was recorded.
    pub async fn flush_audit(&self) {
        self.access.audit().flush().await;
    }
}

pub fn pw(name: &str) -> String {
    format!("Passw0rd-{name}")
}

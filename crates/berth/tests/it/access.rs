//! Access control on `/v2` and the token service, over HTTP against the real binary: the
//! Docker token flow, grants per repository, and tokens that must not work.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::harness::{error_code, header, Server, ADMIN_PASSWORD};

pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// A client that sends `authorization` with every request.
pub fn client_with(authorization: &str) -> Client {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
    Client::builder()
        .no_proxy()
        .default_headers(h)
        .build()
        .unwrap()
}

async fn start_token_mode(extra: &[&str]) -> Server {
    let mut args = vec!["--auth-mode", "token"];
    args.extend_from_slice(extra);
    Server::start_with(&args).await
}

/// Ask the token service for `scopes` with `credentials` (user, password), or anonymously.
pub async fn token(
    s: &Server,
    credentials: Option<(&str, &str)>,
    scopes: &[&str],
) -> reqwest::Response {
    token_from(s, None, credentials, scopes).await
}

/// [`token`] from the local address `from` (any of 127.0.0.0/8 reaches the server), so that
/// a test can stand for callers on several machines.
pub async fn token_from(
    s: &Server,
    from: Option<std::net::IpAddr>,
    credentials: Option<(&str, &str)>,
    scopes: &[&str],
) -> reqwest::Response {
    let mut url = s.url("/service/token?service=berth");
    for sc in scopes {
        url.push_str("&scope=");
        url.push_str(
            &sc.replace(':', "%3A")
                .replace(',', "%2C")
                .replace('/', "%2F"),
        );
    }
    // A client of its own: `s.http` may carry a test's bearer token.
    let client = Client::builder().no_proxy().local_address(from).build();
    let mut req = client.unwrap().get(url);
    if let Some((u, p)) = credentials {
        req = req.header(AUTHORIZATION, basic(u, p));
    }
    req.send().await.unwrap()
}

pub async fn token_value(s: &Server, credentials: Option<(&str, &str)>, scopes: &[&str]) -> String {
    let r = token(s, credentials, scopes).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert!(v["expires_in"].as_u64().unwrap() > 0);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    v["token"].as_str().unwrap().to_owned()
}

/// `s` acting with a bearer token.
pub fn as_bearer(s: &mut Server, token: &str) {
    s.http = client_with(&format!("Bearer {token}"));
}

/// A token-mode server started with `args` too, whose client acts as `admin` with pull,
/// push and delete on `repos`.
pub async fn admin_server(args: &[&str], repos: &[&str]) -> Server {
    admin_server_on(args, repos, None).await
}

/// [`admin_server`], started with the TOML configuration `config` when there is one.
pub async fn admin_server_on(args: &[&str], repos: &[&str], config: Option<&str>) -> Server {
    let mut all = vec!["--auth-mode", "token"];
    all.extend_from_slice(args);
    let mut s = match config {
        Some(c) => Server::start_on_config(&all, c).await,
        None => Server::start_with(&all).await,
    };
    let scopes: Vec<String> = repos
        .iter()
        .map(|r| format!("repository:{r}:pull,push,delete"))
        .collect();
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let token = token_value(&s, Some(("admin", ADMIN_PASSWORD)), &scopes).await;
    as_bearer(&mut s, &token);
    s
}

#[tokio::test]
async fn the_docker_token_flow() {
    let mut s = start_token_mode(&[]).await;
    // Anonymous: the base endpoint challenges, naming the token service.
    let r = s.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = header(&r, "www-authenticate").to_owned();
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"{}/service/token\",service=\"berth\"",
            s.base
        )
    );
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    // An anonymous token signs in (it grants nothing private).
    let anon = token_value(&s, None, &[]).await;
    as_bearer(&mut s, &anon);
    assert_eq!(s.get("/v2/").await.status(), StatusCode::OK);

    // The administrator pushes into a new project: a system administrator's push creates it.
    let admin = token_value(
        &s,
        Some(("admin", ADMIN_PASSWORD)),
        &["repository:team-a/app:pull,push"],
    )
    .await;
    as_bearer(&mut s, &admin);
    let (_, digest) = s.push_image("team-a/app", "v1", b"layer").await;
    assert_eq!(
        s.get("/v2/team-a/app/manifests/v1").await.status(),
        StatusCode::OK
    );

    // The project is private: an anonymous token for it grants nothing, and the registry
    // answers with a challenge for the scope it needs.
    let anon_pull = token_value(&s, None, &["repository:team-a/app:pull"]).await;
    as_bearer(&mut s, &anon_pull);
    let r = s.get("/v2/team-a/app/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let c = header(&r, "www-authenticate");
    assert!(c.contains("scope=\"repository:team-a/app:pull\""), "{c}");
    assert!(c.contains("error=\"insufficient_scope\""), "{c}");

    // A token for one repository does not open another.
    let only_a = token_value(
        &s,
        Some(("admin", ADMIN_PASSWORD)),
        &["repository:team-a/app:pull"],
    )
    .await;
    as_bearer(&mut s, &only_a);
    assert_eq!(
        s.get(&format!("/v2/team-a/app/manifests/{digest}"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        s.get("/v2/team-a/other/tags/list").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Pull was granted, not push or delete.
    assert_eq!(
        s.delete(&format!("/v2/team-a/app/manifests/{digest}"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.post("/v2/team-a/app/blobs/uploads/").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The catalog: the administrator sees the private project, anonymous callers do not.
    let cat = token_value(&s, Some(("admin", ADMIN_PASSWORD)), &["registry:catalog:*"]).await;
    as_bearer(&mut s, &cat);
    let v: Value = s.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["team-a/app"]));
    let anon_cat = token_value(&s, None, &["registry:catalog:*"]).await;
    as_bearer(&mut s, &anon_cat);
    let v: Value = s.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!([]));
}

#[tokio::test]
async fn public_library_pulls_anonymously_and_basic_credentials_work_on_v2() {
    let mut s = start_token_mode(&[]).await;
    // curl-style: basic credentials straight on /v2.
    s.http = client_with(&basic("admin", ADMIN_PASSWORD));
    s.push_image("library/tool", "1.0", b"tool layer").await;
    s.http = client_with(&basic("admin", "wrong"));
    assert_eq!(
        s.get("/v2/library/tool/manifests/1.0").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // `library` is public: an anonymous token pulls, but may not push.
    let anon = token_value(&s, None, &["repository:library/tool:pull,push"]).await;
    as_bearer(&mut s, &anon);
    assert_eq!(
        s.get("/v2/library/tool/manifests/1.0").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        s.post("/v2/library/tool/blobs/uploads/").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The POST form of the token service (OAuth2 password grant, as containerd sends).
    let r = Client::new()
        .post(s.url("/service/token"))
        .form(&[
            ("grant_type", "password"),
            ("service", "berth"),
            ("scope", "repository:library/tool:pull"),
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["scope"], "repository:library/tool:pull");
    as_bearer(&mut s, v["access_token"].as_str().unwrap());
    assert_eq!(
        s.get("/v2/library/tool/tags/list").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_logins_are_refused_then_locked_out() {
    let s = Server::start_on_config(
        &["--auth-mode", "token"],
        "[auth]\nmax_failed_logins = 3\nlockout = \"1h\"\n",
    )
    .await;
    // An unknown user is refused the same way as a wrong password.
    let r = token(&s, Some(("nobody", "Whatever-123")), &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body = r.text().await.unwrap();
    assert!(body.contains("invalid user name or password"), "{body}");
    for _ in 0..2 {
        let r = token(&s, Some(("admin", "Wrong-Password-1")), &[]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(header(&r, "www-authenticate").starts_with("Basic"));
    }
    // Three failures from this address: now even the right password waits.
    let r = token(&s, Some(("admin", ADMIN_PASSWORD)), &[]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    // A token for another service is not issued.
    let r = s
        .http
        .get(s.url("/service/token?service=elsewhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// A P-256 key in PKCS#8 PEM, made with openssl.
pub fn ec_key(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("token.pem");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {}",
            path.display()
        ))
        .status()
        .expect("openssl");
    assert!(out.success());
    path
}

fn forge(key_pem: &[u8], claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_ec_pem(key_pem).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        claims,
        &key,
    )
    .unwrap()
}

#[tokio::test]
async fn tokens_that_must_not_work() {
    let keys = tempfile::tempdir().unwrap();
    let key = ec_key(keys.path());
    let pem = std::fs::read(&key).unwrap();
    let config = format!("[auth]\ntoken_key = \"{}\"\n", key.display());
    let mut s = Server::start_on_config(&["--auth-mode", "token"], &config).await;
    let admin = token_value(
        &s,
        Some(("admin", ADMIN_PASSWORD)),
        &["repository:team-a/app:pull,push"],
    )
    .await;
    as_bearer(&mut s, &admin);
    s.push_image("team-a/app", "v1", b"layer").await;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |exp: u64, aud: &str, iss: &str| {
        serde_json::json!({
            "iss": iss, "sub": "admin", "aud": aud, "exp": exp, "nbf": now - 5, "iat": now - 5,
            "jti": "t", "berth_principal": "user:1",
            "access": [{"type": "repository", "name": "team-a/app", "actions": ["pull"]}],
        })
    };
    let manifest_url = s.url("/v2/team-a/app/manifests/v1");
    let check = |t: String, why: &'static str| {
        let c = client_with(&format!("Bearer {t}"));
        let url = manifest_url.clone();
        async move {
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{why}");
            assert!(
                header(&r, "www-authenticate").contains("invalid_token"),
                "{why}"
            );
        }
    };
    // The same key signs a valid token: the forgeries below fail for their own reason only.
    let good = forge(&pem, &claims(now + 600, "berth", "berth"));
    let r = client_with(&format!("Bearer {good}"))
        .get(&manifest_url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    check(forge(&pem, &claims(now - 120, "berth", "berth")), "expired").await;
    check(
        forge(&pem, &claims(now + 600, "other", "berth")),
        "wrong service",
    )
    .await;
    check(
        forge(&pem, &claims(now + 600, "berth", "evil")),
        "wrong issuer",
    )
    .await;
    let stranger = tempfile::tempdir().unwrap();
    let stranger_pem = std::fs::read(ec_key(stranger.path())).unwrap();
    check(
        forge(&stranger_pem, &claims(now + 600, "berth", "berth")),
        "another key",
    )
    .await;
    // Tampering: widen the grant of a real token to push.
    let parts: Vec<&str> = admin.split('.').collect();
    let mut payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    payload["access"][0]["actions"] = serde_json::json!(["pull", "push", "delete"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    check(tampered, "tampered").await;
    check("garbage".into(), "malformed").await;
    // A token naming an account that does not exist.
    let mut ghost = claims(now + 600, "berth", "berth");
    ghost["berth_principal"] = "user:999".into();
    check(forge(&pem, &ghost), "unknown user").await;
}

//! Keyless CI logins: a throwaway OIDC issuer on loopback (discovery document and JWKS, as
//! GitHub Actions or GitLab publish them) signs identity tokens, and a CI job presents one
//! as the password of the user `oidc` on `/service/token`.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::get;
use axum::Json;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::access::{as_bearer, ec_key, token_from, token_value};
use crate::harness::Server;
use crate::mgmt::{audit_events, create_project};

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The public point (x, y) of the P-256 key in `pem`: the last 64 bytes of its DER
/// SubjectPublicKeyInfo, which ends with the uncompressed point `04 || x || y`.
fn ec_public_point(pem: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(pem)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let der = out.stdout;
    let point = &der[der.len() - 65..];
    assert_eq!(point[0], 4, "an uncompressed point");
    (point[1..33].to_vec(), point[33..].to_vec())
}

/// An OIDC issuer on a loopback port: `/.well-known/openid-configuration` names its JWKS,
/// which publishes one ES256 key, `k1`.
struct Issuer {
    url: String,
    key: Vec<u8>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Issuer {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key_path = ec_key(dir.path());
        let key = std::fs::read(&key_path).unwrap();
        let (x, y) = ec_public_point(&key_path);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/.well-known/jwks"),
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "x": b64url(&x), "y": b64url(&y),
            "kid": "k1", "alg": "ES256", "use": "sig",
        }]});
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || std::future::ready(Json(discovery.clone()))),
            )
            .route(
                "/.well-known/jwks",
                get(move || std::future::ready(Json(jwks.clone()))),
            );
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            key,
            server,
            _dir: dir,
        }
    }

    /// An identity token with `claims`, signed with its published key.
    fn sign(&self, claims: &Value) -> String {
        sign_es256(&self.key, claims)
    }

    /// The claims of a CI job of `repository` at `git_ref`, for `aud`, expiring in
    /// `expires_in` seconds.
    fn job(&self, aud: &str, repository: &str, git_ref: &str, expires_in: i64) -> Value {
        let now = now();
        json!({
            "iss": self.url, "aud": aud, "sub": format!("repo:{repository}:ref:{git_ref}"),
            "repository": repository, "ref": git_ref,
            "iat": now - 5, "nbf": now - 5, "exp": now + expires_in,
        })
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn sign_es256(key_pem: &[u8], claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(key_pem).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// What a Berth token grants: its `access` claim as `name: actions` lines.
fn granted(token: &str) -> Vec<String> {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let actions: Vec<&str> = a["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            format!("{}: {}", a["name"].as_str().unwrap(), actions.join(","))
        })
        .collect()
}

/// A loopback address of its own for the `n`th caller: each stands for a CI runner on
/// another machine, so the per-address login limit counts them apart.
fn runner(n: u8) -> Option<IpAddr> {
    Some(IpAddr::from([127, 0, 0, 10 + n]))
}

#[tokio::test]
async fn keyless_ci_login_with_a_loopback_issuer() {
    let ci = Issuer::start().await;
    let stranger = Issuer::start().await;
    let iss = &ci.url;
    let config = format!(
        r#"
[auth]
max_failed_logins = 3
lockout = "1h"

[auth.oidc]
[[auth.oidc.issuers]]
issuer = "{iss}"
audience = "berth-ci"

[[auth.oidc.rules]]
issuer = "{iss}"
claims = {{ repository = "org/app-*", ref = "refs/heads/main" }}
project = "ci"
actions = ["pull", "push"]

[[auth.oidc.rules]]
issuer = "{iss}"
claims = {{ repository = "org/*" }}
project = "ci"
actions = ["pull"]
"#
    );
    let mut s = Server::start_on_config(&["--auth-mode", "token"], &config).await;
    create_project(&s, "ci", false).await;
    create_project(&s, "other", false).await;

    // Refused identity tokens, each from a runner of its own. None of them is a token this
    // issuer gave for this registry and a job the rules know.
    let job = ci.job("berth-ci", "org/app-web", "refs/heads/main", 300);
    let mut hs256 = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs256.kid = Some("k1".into());
    let other_key = tempfile::tempdir().unwrap();
    let other_key = std::fs::read(ec_key(other_key.path())).unwrap();
    let refused = [
        (
            "claims no rule matches",
            ci.sign(&ci.job("berth-ci", "evil/app-web", "refs/heads/main", 300)),
        ),
        (
            "expired",
            ci.sign(&ci.job("berth-ci", "org/app-web", "refs/heads/main", -120)),
        ),
        (
            "another audience",
            ci.sign(&ci.job("elsewhere", "org/app-web", "refs/heads/main", 300)),
        ),
        (
            "an issuer not trusted, which publishes its key",
            stranger.sign(&stranger.job("berth-ci", "org/app-web", "refs/heads/main", 300)),
        ),
        (
            "signed with a key the issuer does not publish",
            sign_es256(&other_key, &job),
        ),
        (
            "HS256, a shared secret",
            jsonwebtoken::encode(
                &hs256,
                &job,
                &jsonwebtoken::EncodingKey::from_secret(b"anyone can know this"),
            )
            .unwrap(),
        ),
        ("not a JWT", "not-a-token".to_owned()),
    ];
    for (n, (why, id_token)) in refused.iter().enumerate() {
        let r = token_from(
            &s,
            runner(n as u8),
            Some(("oidc", id_token)),
            &["repository:ci/app-web:pull,push"],
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{why}");
    }

    // A job of a matching repository on main gets a token that pushes to the project. More
    // refused tokens than the login limit came before it, from other runners: one bad
    // pipeline does not lock every CI job out.
    let id_token = ci.sign(&job);
    let t = token_value(
        &s,
        Some(("oidc", &id_token)),
        &["repository:ci/app-web:pull,push"],
    )
    .await;
    assert_eq!(granted(&t), ["ci/app-web: pull,push"]);
    as_bearer(&mut s, &t);
    let (_, digest) = s.push_image("ci/app-web", "v1", b"built by CI").await;
    assert_eq!(
        s.get("/v2/ci/app-web/manifests/v1").await.status(),
        StatusCode::OK
    );

    // The same job on another branch only matches the pull rule: no push grant.
    let dev = ci.sign(&ci.job("berth-ci", "org/app-web", "refs/heads/dev", 300));
    let t = token_value(
        &s,
        Some(("oidc", &dev)),
        &["repository:ci/app-web:pull,push"],
    )
    .await;
    assert_eq!(granted(&t), ["ci/app-web: pull"]);
    as_bearer(&mut s, &t);
    assert_eq!(
        s.get(&format!("/v2/ci/app-web/manifests/{digest}"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        s.post("/v2/ci/app-web/blobs/uploads/").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A rule never grants outside its project: not in another private project, nor in one
    // whose name starts with the same letters, nor push in the public `library`.
    let t = token_value(
        &s,
        Some(("oidc", &id_token)),
        &[
            "repository:other/app:pull,push",
            "repository:ci-extra/app:pull,push",
            "repository:library/app:push",
            "repository:ci/app-web:pull",
        ],
    )
    .await;
    assert_eq!(granted(&t), ["ci/app-web: pull"]);
    as_bearer(&mut s, &t);
    for repo in ["other/app", "ci-extra/app", "library/app"] {
        assert_eq!(
            s.post(&format!("/v2/{repo}/blobs/uploads/")).await.status(),
            StatusCode::UNAUTHORIZED,
            "{repo}"
        );
    }

    // The per-address limit still holds for one runner that keeps sending bad tokens.
    let expired = ci.sign(&ci.job("berth-ci", "org/app-web", "refs/heads/main", -120));
    for _ in 0..3 {
        let r = token_from(&s, runner(99), Some(("oidc", &expired)), &[]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = token_from(&s, runner(99), Some(("oidc", &id_token)), &[]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // The audit log names the CI identity that signed in, and shows the refusals.
    let subject = format!("{iss}#repo:org/app-web:ref:refs/heads/main");
    let logins = audit_events(&s, "operation=login").await;
    assert!(
        logins
            .iter()
            .any(|e| e["username"] == subject.as_str() && e["success"] == true),
        "no successful login of {subject} in {logins:#?}"
    );
    assert!(
        logins
            .iter()
            .any(|e| e["resource"] == "oidc" && e["success"] == false),
        "no refused keyless login in {logins:#?}"
    );
    // So does the push it made.
    let pushes = audit_events(&s, "operation=push").await;
    assert!(
        pushes
            .iter()
            .any(|e| e["username"] == subject.as_str() && e["resource"] == "ci/app-web:v1"),
        "{pushes:#?}"
    );
    // The registry's own token is no identity token: it does not sign in as `oidc`.
    let r = token_from(&s, runner(50), Some(("oidc", &t)), &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

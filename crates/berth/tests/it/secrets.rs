//! No secret leaves Berth where it should not: passwords, robot secrets, tokens and session
//! ids never reach the log (JSON, at its most verbose level), and no management API read shows a
//! password hash, a secret or a salt. A robot's secret is shown once, in the response that
//! made it.

use reqwest::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

use crate::access::{basic, token, token_value};
use crate::harness::{Server, ADMIN_PASSWORD};
use crate::mgmt::{add_member, admin, call, create_project, create_user};

/// Every object key anywhere in `v`, lower-cased.
fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.to_lowercase());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// Refuse a management API read that shows a hash, a salt, a secret or any of `secrets`.
fn check_read(what: &str, body: &str, secrets: &[String]) {
    assert!(
        !body.contains("$argon2"),
        "{what} shows a password hash: {body}"
    );
    for s in secrets {
        assert!(
            !body.contains(s.as_str()),
            "{what} shows the secret {s:?}: {body}"
        );
    }
    let v: Value = serde_json::from_str(body).unwrap();
    let mut found = Vec::new();
    keys(&v, &mut found);
    for k in found {
        assert!(
            !["password", "secret", "salt", "hash"]
                .iter()
                .any(|bad| k.contains(bad)),
            "{what} has a field {k:?}: {body}"
        );
    }
}

#[tokio::test]
async fn no_secrets_in_responses_or_logs() {
    let s = Server::start_logged(
        &[
            "--auth-mode",
            "token",
            "--log-format",
            "json",
            "--log-level",
            "trace",
        ],
        "",
    )
    .await;
    let mut secrets: Vec<String> = vec![ADMIN_PASSWORD.into()];
    let admin_auth = basic("admin", ADMIN_PASSWORD);

    // Users with passwords, one of them changed; sign-ins that fail, with near misses.
    create_project(&s, "vault", false).await;
    let alice_pw = "Alice-Secret-Pass-1";
    let alice = create_user(&s, "alice", alice_pw).await;
    add_member(&s, "vault", "alice", 1).await;
    let bob_pw = "Bob-Secret-Pass-2";
    let bob = create_user(&s, "bob", bob_pw).await;
    let bob_new = "Bob-Changed-Pass-3";
    let change = json!({"old_password": bob_pw, "new_password": bob_new});
    let r = call(
        &s,
        &basic("bob", bob_pw),
        Method::PUT,
        &format!("/api/v2.0/users/{bob}/password"),
        Some(&change),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let weak = json!({"username": "carol", "email": "c@example.com", "realname": "c",
        "password": "weakpass"});
    let r = call(
        &s,
        &admin_auth,
        Method::POST,
        "/api/v2.0/users",
        Some(&weak),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let wrong = ["Alice-Secret-Pass-9", "Bob-Secret-Pass-2x", "weakpass"];
    secrets.extend([alice_pw, bob_pw, bob_new].map(String::from));
    secrets.extend(wrong.map(String::from));
    for (user, pw) in [("alice", wrong[0]), ("bob", wrong[1])] {
        let r = token(&s, Some((user, pw)), &["repository:vault/app:pull"]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = call(
        &s,
        &basic("alice", wrong[0]),
        Method::GET,
        "/api/v2.0/users/current",
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A robot: its secret is in the create response, and only there.
    let body = json!({
        "name": "deployer", "level": "project", "duration": -1,
        "permissions": [{"kind": "project", "namespace": "vault", "access": [
            {"resource": "repository", "action": "pull"},
            {"resource": "repository", "action": "push"}]}],
    });
    let created = admin(&s, Method::POST, "/api/v2.0/robots", Some(&body)).await;
    let robot_name = created["name"].as_str().unwrap().to_owned();
    let robot_path = format!("/api/v2.0/robots/{}", created["id"]);
    let first = created["secret"].as_str().unwrap().to_owned();
    assert!(first.len() >= 16, "{created}");
    // Refreshed: the new secret is in the refresh response; a chosen one is not echoed.
    let refreshed = admin(&s, Method::PATCH, &robot_path, Some(&json!({"secret": ""}))).await;
    let second = refreshed["secret"].as_str().unwrap().to_owned();
    let chosen = "Chosen-Robot-Secret-4";
    let v = admin(
        &s,
        Method::PATCH,
        &robot_path,
        Some(&json!({"secret": chosen})),
    )
    .await;
    assert!(v.get("secret").is_none(), "{v}");
    secrets.extend([first, second, chosen.to_owned()]);

    // Tokens, by GET (Docker) and POST (OAuth2 password grant), for users and the robot;
    // a /v2 request with basic credentials and one with a bearer token.
    let mut tokens = vec![
        token_value(&s, Some(("admin", ADMIN_PASSWORD)), &["registry:catalog:*"]).await,
        token_value(
            &s,
            Some(("alice", alice_pw)),
            &["repository:vault/app:pull,push"],
        )
        .await,
        token_value(
            &s,
            Some((&robot_name, chosen)),
            &["repository:vault/app:push"],
        )
        .await,
    ];
    let r = Client::new()
        .post(s.url("/service/token"))
        .form(&[
            ("grant_type", "password"),
            ("service", "berth"),
            ("scope", "repository:vault/app:pull"),
            ("username", "bob"),
            ("password", bob_new),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    tokens.push(v["access_token"].as_str().unwrap().to_owned());
    let r = Client::new()
        .post(s.url("/service/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", bob_pw),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = Client::new()
        .get(s.url("/v2/vault/app/tags/list"))
        .header(AUTHORIZATION, format!("Bearer {}", tokens[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = Client::new()
        .get(s.url("/v2/vault/app/tags/list"))
        .header(AUTHORIZATION, basic("alice", wrong[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for t in &tokens {
        secrets.push(t.clone());
        // Its signature alone is enough to give it away.
        secrets.push(t.rsplit('.').next().unwrap().to_owned());
    }

    // A browser session, and a sign-in that fails.
    let r = Client::new()
        .post(s.url("/c/login"))
        .form(&[("principal", "alice"), ("password", alice_pw)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap();
    let sid = cookie
        .strip_prefix("sid=")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let csrf = r.headers()["x-harbor-csrf-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let r = Client::new()
        .post(s.url("/c/login"))
        .form(&[("principal", "alice"), ("password", wrong[0])])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = Client::new()
        .get(s.url("/api/v2.0/users/current"))
        .header(COOKIE, format!("sid={sid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    check_read(
        "the session's current user",
        &r.text().await.unwrap(),
        &secrets,
    );
    secrets.extend([sid, csrf]);

    // Every read of the management API.
    let reads = [
        (admin_auth.clone(), "/api/v2.0/users".to_owned()),
        (admin_auth.clone(), format!("/api/v2.0/users/{alice}")),
        (admin_auth.clone(), format!("/api/v2.0/users/{bob}")),
        (admin_auth.clone(), "/api/v2.0/users/current".to_owned()),
        (
            basic("alice", alice_pw),
            "/api/v2.0/users/current".to_owned(),
        ),
        (basic("bob", bob_new), format!("/api/v2.0/users/{bob}")),
        (
            basic("alice", alice_pw),
            "/api/v2.0/users/search?username=b".to_owned(),
        ),
        (admin_auth.clone(), "/api/v2.0/robots".to_owned()),
        (admin_auth.clone(), robot_path.clone()),
        (basic("alice", alice_pw), robot_path.clone()),
        (
            admin_auth.clone(),
            "/api/v2.0/audit-logs?page_size=100".to_owned(),
        ),
        (
            admin_auth.clone(),
            "/api/v2.0/projects/vault/logs?page_size=100".to_owned(),
        ),
        (
            admin_auth.clone(),
            "/api/v2.0/projects/vault/members".to_owned(),
        ),
    ];
    for (auth, path) in &reads {
        let r = call(&s, auth, Method::GET, path, None).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        check_read(&format!("GET {path}"), &r.text().await.unwrap(), &secrets);
    }
    // The robot is listed, without its secret (the checks above would have caught it).
    let robots = admin(&s, Method::GET, "/api/v2.0/robots", None).await;
    assert_eq!(robots[0]["name"], robot_name.as_str());

    // The log: JSON lines, with the requests above in them, and not one secret, not even
    // as the base64 of a Basic `Authorization` header.
    for (user, pw) in [
        ("admin", ADMIN_PASSWORD),
        ("alice", alice_pw),
        ("alice", wrong[0]),
        ("bob", bob_pw),
        ("bob", wrong[1]),
        ("bob", bob_new),
        (robot_name.as_str(), chosen),
    ] {
        secrets.push(basic(user, pw)["Basic ".len()..].to_owned());
    }
    let log = s.log();
    let lines: Vec<&str> = log.lines().collect();
    for line in &lines {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "a log line is not JSON: {line}"
        );
        assert!(
            !line.contains("$argon2"),
            "a password hash in the log: {line}"
        );
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "{secret:?} in the log: {line}"
            );
        }
    }
    for path in ["/service/token", "/c/login", "/api/v2.0/robots"] {
        assert!(
            log.contains(&format!("\"path\":\"{path}\"")),
            "the log does not show requests to {path}; nothing was checked:\n{log}"
        );
    }
}

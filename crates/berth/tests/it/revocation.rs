//! Revoking access over HTTP: tokens of a robot that is disabled, deleted or expired, and of
//! a user that is deleted, stop working; a refreshed robot secret replaces the old one. In a
//! fleet, a change made through one instance reaches the others within the principal cache's
//! 5 s.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::access::{basic, client_with, token, token_value};
use crate::harness::{fleet, FleetBackend, Server, ADMIN_PASSWORD};
use crate::mgmt::{add_member, admin, create_project, create_robot, create_user};

const SCOPE: &str = "repository:rev/app:pull,push";

/// The status of `GET path` with the bearer `token`.
async fn status_with(s: &Server, token: &str, path: &str) -> StatusCode {
    client_with(&format!("Bearer {token}"))
        .get(s.url(path))
        .send()
        .await
        .unwrap()
        .status()
}

/// Whether `token` still pulls the image pushed to `rev/app`.
async fn pulls(s: &Server, token: &str) -> bool {
    match status_with(s, token, "/v2/rev/app/manifests/v1").await {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => false,
        other => panic!("pull answered {other}"),
    }
}

/// Poll until `token` no longer pulls through `s`, for at most `limit`; how long it took.
async fn refused_within(s: &Server, token: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while pulls(s, token).await {
        assert!(
            start.elapsed() < limit,
            "the token still works after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// A token-mode server with the private project `rev` holding `rev/app:v1`.
async fn server_with_project(s: Server) -> Server {
    create_project(&s, "rev", false).await;
    let mut pusher = s;
    pusher.http = client_with(&basic("admin", ADMIN_PASSWORD));
    pusher
        .push_image("rev/app", "v1", b"revocation layer")
        .await;
    pusher
}

fn robot_path(robot: &serde_json::Value) -> String {
    format!("/api/v2.0/robots/{}", robot["id"].as_i64().unwrap())
}

#[tokio::test]
async fn robot_tokens_stop_when_the_robot_is_disabled_deleted_or_expired() {
    let s = Server::start_on_config(&["--auth-mode", "token"], "").await;
    let s = server_with_project(s).await;
    let robot = create_robot(&s, "ci", "rev").await;
    let name = robot["name"].as_str().unwrap().to_owned();
    assert_eq!(name, "robot$rev+ci");
    let secret = robot["secret"].as_str().unwrap().to_owned();
    let path = robot_path(&robot);
    let t = token_value(&s, Some((&name, &secret)), &[SCOPE]).await;
    assert!(pulls(&s, &t).await);

    // Disabled: its token and its secret stop working at once.
    admin(&s, Method::PUT, &path, Some(&json!({"disable": true}))).await;
    assert!(!pulls(&s, &t).await, "a disabled robot's token still pulls");
    let r = token(&s, Some((&name, &secret)), &[SCOPE]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Enabled again: both work again.
    admin(&s, Method::PUT, &path, Some(&json!({"disable": false}))).await;
    assert!(pulls(&s, &t).await);
    token_value(&s, Some((&name, &secret)), &[SCOPE]).await;

    // A refreshed secret replaces the old one.
    let v = admin(&s, Method::PATCH, &path, Some(&json!({"secret": ""}))).await;
    let fresh = v["secret"].as_str().unwrap().to_owned();
    assert_ne!(fresh, secret);
    let r = token(&s, Some((&name, &secret)), &[SCOPE]).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the old secret still signs in"
    );
    let t = token_value(&s, Some((&name, &fresh)), &[SCOPE]).await;
    // A secret of one's choosing: set, not echoed, and the generated one is gone.
    let chosen = "Chosen-Robot-Secret-7";
    let v = admin(&s, Method::PATCH, &path, Some(&json!({"secret": chosen}))).await;
    assert!(v.get("secret").is_none(), "{v}");
    assert_eq!(
        token(&s, Some((&name, &fresh)), &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    token_value(&s, Some((&name, chosen)), &[SCOPE]).await;

    // Deleted: its token stops at once, and stays refused when a robot of the same name
    // (a new account, with its own secret) takes its place.
    admin(&s, Method::DELETE, &path, None).await;
    assert!(!pulls(&s, &t).await, "a deleted robot's token still pulls");
    assert_eq!(
        token(&s, Some((&name, chosen)), &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let successor = create_robot(&s, "ci", "rev").await;
    assert_ne!(successor["secret"], chosen);
    assert!(
        !pulls(&s, &t).await,
        "the deleted robot's token works for its successor"
    );
    let st = token_value(
        &s,
        Some((&name, successor["secret"].as_str().unwrap())),
        &[SCOPE],
    )
    .await;
    assert!(pulls(&s, &st).await);

    // Past its expiry: refused at the token endpoint at once, and its tokens within the
    // principal cache's 5 s. (The API takes lifetimes in whole days, so the expiry is moved
    // into the past in the database.)
    let old = create_robot(&s, "nightly", "rev").await;
    let old_name = old["name"].as_str().unwrap();
    let old_secret = old["secret"].as_str().unwrap();
    let t = token_value(&s, Some((old_name, old_secret)), &[SCOPE]).await;
    assert!(pulls(&s, &t).await);
    let past = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 1000;
    s.sql(&format!(
        "UPDATE robots SET expires_ms = {past} WHERE id = {}",
        old["id"]
    ));
    assert_eq!(
        token(&s, Some((old_name, old_secret)), &[SCOPE])
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "an expired robot signs in"
    );
    refused_within(&s, &t, Duration::from_secs(7)).await;
    let v = admin(&s, Method::GET, &robot_path(&old), None).await;
    assert_eq!(v["expires_at"], json!(past.div_euclid(1000)));
}

#[tokio::test]
async fn a_deleted_users_tokens_stop_working() {
    let s = Server::start_on_config(&["--auth-mode", "token"], "").await;
    let s = server_with_project(s).await;
    let password = "Bob-Password-1";
    let id = create_user(&s, "bob", password).await;
    add_member(&s, "rev", "bob", 2).await;
    let t = token_value(&s, Some(("bob", password)), &[SCOPE]).await;
    assert!(pulls(&s, &t).await);

    admin(&s, Method::DELETE, &format!("/api/v2.0/users/{id}"), None).await;
    assert!(!pulls(&s, &t).await, "a deleted user's token still pulls");
    assert_eq!(
        token(&s, Some(("bob", password)), &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A new user of the same name is another account: the old token does not become its.
    let again = create_user(&s, "bob", "Bob-Password-2").await;
    add_member(&s, "rev", "bob", 2).await;
    assert!(
        !pulls(&s, &t).await,
        "the deleted user's token works for the new bob (id {again}, was {id})"
    );
    let t2 = token_value(&s, Some(("bob", "Bob-Password-2")), &[SCOPE]).await;
    assert!(pulls(&s, &t2).await);
}

/// Basic credentials sent with every request are checked with argon2 once and then taken
/// from a cache of verified secrets; a password change, a deleted user or a disabled robot
/// must still be refused on the very next request.
#[tokio::test]
async fn basic_credentials_stop_at_once_after_a_password_change_delete_or_disable() {
    let s = Server::start_on_config(&["--auth-mode", "token"], "").await;
    let s = server_with_project(s).await;
    let (old, new) = ("Carol-Password-1", "Carol-Password-2");
    let id = create_user(&s, "carol", old).await;
    add_member(&s, "rev", "carol", 2).await;
    let status = |auth: String, path: &'static str| {
        let s = &s;
        async move {
            client_with(&auth)
                .get(s.url(path))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let manifest = "/v2/rev/app/manifests/v1";
    for _ in 0..5 {
        assert_eq!(status(basic("carol", old), manifest).await, StatusCode::OK);
    }

    // Carol changes her own password: the old one is refused on the next request, on /v2 and
    // on the API, and the new one works.
    let r = client_with(&basic("carol", old))
        .put(s.url(&format!("/api/v2.0/users/{id}/password")))
        .json(&json!({"old_password": old, "new_password": new}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert_eq!(
        status(basic("carol", old), manifest).await,
        StatusCode::UNAUTHORIZED,
        "the old password still pulls"
    );
    assert_eq!(
        status(basic("carol", old), "/api/v2.0/users/current").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(basic("carol", new), manifest).await, StatusCode::OK);

    // Deleted: refused on the next request.
    admin(&s, Method::DELETE, &format!("/api/v2.0/users/{id}"), None).await;
    assert_eq!(
        status(basic("carol", new), manifest).await,
        StatusCode::UNAUTHORIZED,
        "a deleted user's password still pulls"
    );

    // A robot's secret: works request after request, then not once the robot is disabled.
    let robot = create_robot(&s, "basic", "rev").await;
    let name = robot["name"].as_str().unwrap();
    let secret = robot["secret"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(status(basic(name, secret), manifest).await, StatusCode::OK);
    }
    admin(
        &s,
        Method::PUT,
        &robot_path(&robot),
        Some(&json!({"disable": true})),
    )
    .await;
    assert_eq!(
        status(basic(name, secret), manifest).await,
        StatusCode::UNAUTHORIZED,
        "a disabled robot's secret still pulls"
    );
}

/// Two instances over one PostgreSQL: a robot disabled through one stops working through the
/// other within the principal cache's 5 s (7 s allowed for a busy machine); signing in there
/// is refused at once (the token service reads the robot from the database).
#[tokio::test]
async fn a_disable_through_one_instance_reaches_another() {
    if !fleet() {
        eprintln!("skipped: multi-instance tests need BERTH_TEST_BACKEND=fleet");
        return;
    }
    let backend = FleetBackend::create();
    let a = Server::start_on_with(&backend, &["--auth-mode", "token"], None).await;
    let b = Server::start_on_with(&backend, &["--auth-mode", "token"], None).await;
    let a = server_with_project(a).await;
    let robot = create_robot(&a, "ci", "rev").await;
    let name = robot["name"].as_str().unwrap();
    let secret = robot["secret"].as_str().unwrap();
    // Issued by one instance, accepted by the other: they share the signing key.
    let t = token_value(&a, Some((name, secret)), &[SCOPE]).await;
    assert!(pulls(&b, &t).await);

    admin(
        &a,
        Method::PUT,
        &robot_path(&robot),
        Some(&json!({"disable": true})),
    )
    .await;
    assert!(
        !pulls(&a, &t).await,
        "the instance that disabled it still accepts it"
    );
    assert_eq!(
        token(&b, Some((name, secret)), &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let took = refused_within(&b, &t, Duration::from_secs(7)).await;
    eprintln!("the other instance refused the token after {took:?}");
}

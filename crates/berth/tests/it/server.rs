//! The server process: configuration, TLS, graceful shutdown, one process per data directory.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;

use crate::harness::*;

#[test]
fn config_print_shows_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:6001\"\n[storage]\nfsync = false\n\
         [uploads]\nexpire_after = 86400\nexpire_interval = \"2h\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["config", "print", "--config"])
        .arg(&file)
        .arg("--data-dir=/srv/berth")
        .env("BERTH_LISTEN", "127.0.0.1:6002")
        .env("BERTH_UPLOADS_EXPIRE_INTERVAL", "30m")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // The environment beats the file; flags give the data dir; the file turns fsync off.
    assert!(text.contains("listen = \"127.0.0.1:6002\""), "{text}");
    assert!(text.contains("data_dir = \"/srv/berth\""), "{text}");
    assert!(text.contains("durability = \"relaxed\""), "{text}");
    assert!(
        text.contains("[uploads]\nexpire_after = \"1d\"\nexpire_interval = \"30m\""),
        "{text}"
    );

    std::fs::write(&file, "lisen = \"typo\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["config", "print", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    if fleet() {
        eprintln!("skipped: a fleet shares its backends on purpose and locks no data dir");
        return;
    }
    let s = Server::start().await;
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already serving"));
}

#[tokio::test]
async fn sigterm_lets_an_upload_in_flight_finish() {
    let mut s = Server::start().await;
    let r = s.post("/v2/graceful/blobs/uploads/").await;
    let loc = header(&r, "location").to_owned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream(rx));
    let req = s.http.patch(s.url(&loc)).body(body).send();
    let task = tokio::spawn(req);
    tx.send(Ok(vec![1u8; 1000])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = s.pid();
    signal(pid, "TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.send(Ok(vec![2u8; 1000])).await.unwrap();
    drop(tx);
    let r = task.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-1999");
    let status = s.terminate_wait();
    assert!(status.success(), "{status}");
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

fn openssl(args: &[&str], dir: &std::path::Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn serves_https_when_given_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    // A throwaway CA and a server certificate for 127.0.0.1 signed by it.
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=berth-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
        d,
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
        d,
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
        d,
    );
    let s = Server::start_tls(&d.join("ca.pem"), &d.join("cert.pem"), &d.join("key.pem")).await;
    let r = s.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert!(s.base.starts_with("https://"));
    // Plain HTTP on the TLS port does not work.
    assert!(reqwest::get(format!("http://127.0.0.1:{}/v2/", s.port))
        .await
        .is_err());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "serve",
            "--log-format",
            "json",
            "--log-level",
            "info",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "berth did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("berth listening")),
        "{text}"
    );
}

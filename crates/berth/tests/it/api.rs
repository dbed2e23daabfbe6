//! The /v2 API as the distribution spec describes it.

use reqwest::StatusCode;

use crate::harness::*;

#[tokio::test]
async fn base_endpoint_announces_the_api_version() {
    let s = Server::start().await;
    let r = s.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(s.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(s.get("/readyz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn monolithic_push_then_get_head_and_ranges() {
    let s = Server::start().await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let d = s.push_blob("lib/app", &data).await;

    let r = s.head(&format!("/v2/lib/app/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), data.len().to_string());
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "etag"), format!("\"{d}\""));

    let r = s.get(&format!("/v2/lib/app/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), data);

    let get_range = |range: &'static str| {
        s.http
            .get(s.url(&format!("/v2/lib/app/blobs/{d}")))
            .header("range", range)
            .send()
    };
    let r = get_range("bytes=10-19").await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes 10-19/{}", data.len())
    );
    assert_eq!(r.bytes().await.unwrap(), &data[10..20]);
    let r = get_range("bytes=-5").await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), &data[data.len() - 5..]);
    let r = get_range("bytes=299990-").await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), &data[299_990..]);
    let r = get_range("bytes=300000-").await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range"), "bytes */300000");

    // Another repository cannot read it without a mount.
    let r = s.get(&format!("/v2/lib/other/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

/// Large blobs leave the server by `sendfile` from mapped windows: whole bodies, ranges that
/// start mid-page and cross a window boundary, many at once on reused connections.
#[tokio::test]
async fn large_blobs_and_ranges_arrive_intact() {
    let s = Server::start().await;
    let data: Vec<u8> = (0..(9u32 << 20) + 1234)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let d = s.push_blob("lib/big", &data).await;
    let url = s.url(&format!("/v2/lib/big/blobs/{d}"));
    let pulls = (0..6).map(|_| async {
        let r = s.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.unwrap()
    });
    for body in futures::future::join_all(pulls).await {
        assert!(body == data, "a whole-blob pull differs");
    }
    for (start, end) in [
        (4097usize, (8 << 20) + 5000),
        (1000, data.len() - 1),
        (300_001, 700_000),
    ] {
        let r = s
            .http
            .get(&url)
            .header("range", format!("bytes={start}-{end}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        let body = r.bytes().await.unwrap();
        assert!(body == data[start..=end], "range {start}-{end} differs");
    }
}

#[tokio::test]
async fn post_then_put_and_chunked_uploads_with_status_and_resume() {
    let s = Server::start().await;
    // POST then PUT with the whole body.
    let r = s.post("/v2/a/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location").to_owned();
    assert!(!header(&r, "docker-upload-uuid").is_empty());
    assert_eq!(header(&r, "range"), "0-0");
    assert_eq!(header(&r, "oci-chunk-min-length"), "0");
    let data = b"one shot body".to_vec();
    let d = sha256(&data);
    let r = s
        .http
        .put(s.url(&format!("{loc}?digest={d}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/a/blobs/{d}"));
    assert_eq!(s.get_bytes(&format!("/v2/a/blobs/{d}")).await, data);

    // Chunked, with status checks between chunks.
    let whole: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let d = sha256(&whole);
    let r = s.post("/v2/a/blobs/uploads/").await;
    let mut loc = header(&r, "location").to_owned();
    let mut offset = 0usize;
    for chunk in whole.chunks(30_000) {
        let end = offset + chunk.len() - 1;
        let r = s
            .http
            .patch(s.url(&loc))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{end}"))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&r, "range"), format!("0-{end}"));
        loc = header(&r, "location").to_owned();
        offset += chunk.len();
        let st = s.get(&loc).await;
        assert_eq!(st.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&st, "range"), format!("0-{end}"));
    }
    // An out-of-order chunk is refused with 416 and the current range.
    let r = s.patch_chunk(&loc, "5-9", vec![0u8; 5]).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range"), format!("0-{}", whole.len() - 1));
    let r = s.put(&format!("{loc}?digest={d}")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(s.get_bytes(&format!("/v2/a/blobs/{d}")).await, whole);
    // The finished session is gone.
    assert_eq!(s.get(&loc).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn final_put_may_carry_the_last_chunk_and_sha512_works() {
    let s = Server::start().await;
    let whole = b"first part|last part".to_vec();
    let d512 = format!(
        "sha512:{}",
        hex::encode(<sha2::Sha512 as sha2::Digest>::digest(&whole))
    );
    let r = s.post("/v2/b/blobs/uploads/").await;
    let loc = header(&r, "location").to_owned();
    let r = s
        .http
        .patch(s.url(&loc))
        .body(whole[..11].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location").to_owned();
    let r = s
        .http
        .put(s.url(&format!("{loc}?digest={d512}")))
        .header("content-range", format!("11-{}", whole.len() - 1))
        .body(whole[11..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let r = s.get(&format!("/v2/b/blobs/{d512}")).await;
    assert_eq!(r.bytes().await.unwrap(), whole);
}

#[tokio::test]
async fn cancel_upload_forgets_it() {
    let s = Server::start().await;
    let r = s.post("/v2/c/blobs/uploads/").await;
    let loc = header(&r, "location").to_owned();
    s.http
        .patch(s.url(&loc))
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    let r = s.delete(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(s.storage().upload_ids().await, Vec::<String>::new());
}

#[tokio::test]
async fn cross_repository_mounts() {
    let s = Server::start().await;
    let d = s.push_blob("src/app", b"shared layer").await;
    let r = s
        .post(&format!(
            "/v2/dst/app/blobs/uploads/?mount={d}&from=src/app"
        ))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/dst/app/blobs/{d}"));
    assert_eq!(
        s.get_bytes(&format!("/v2/dst/app/blobs/{d}")).await,
        &b"shared layer"[..]
    );
    // Without from: any repository holding it will do.
    let r = s.post(&format!("/v2/third/blobs/uploads/?mount={d}")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // A blob the source does not have: an ordinary upload session instead.
    let missing = sha256(b"nobody has this");
    let r = s
        .post(&format!(
            "/v2/dst/app/blobs/uploads/?mount={missing}&from=src/app"
        ))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(header(&r, "location").starts_with("/v2/dst/app/blobs/uploads/"));
}

#[tokio::test]
async fn manifests_by_tag_and_digest_with_accept_and_deletes() {
    let s = Server::start().await;
    let (m, d) = s.push_image("team/app/api", "v1", b"layer one").await;
    for reference in ["v1", d.as_str()] {
        let r = s
            .get(&format!("/v2/team/app/api/manifests/{reference}"))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), d);
        assert_eq!(r.bytes().await.unwrap(), m);
        let r = s
            .head(&format!("/v2/team/app/api/manifests/{reference}"))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "docker-content-digest"), d);
        assert_eq!(header(&r, "content-length"), m.len().to_string());
    }
    // A client that accepts only Docker types gets a clear 404, not bytes it cannot parse.
    let r = s
        .http
        .get(s.url("/v2/team/app/api/manifests/v1"))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s
        .http
        .get(s.url("/v2/team/app/api/manifests/v1"))
        .header(
            "accept",
            format!("application/vnd.docker.distribution.manifest.v2+json, {OCI_MANIFEST}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Deleting a tag removes only the tag.
    let r = s.put_manifest("team/app/api", "v2", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.delete("/v2/team/app/api/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        s.get("/v2/team/app/api/manifests/v1").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/v2/team/app/api/manifests/v2").await.status(),
        StatusCode::OK
    );
    // Deleting by digest removes the manifest and every tag on it.
    let r = s.delete(&format!("/v2/team/app/api/manifests/{d}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s.get("/v2/team/app/api/manifests/v2").await;
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = s.delete(&format!("/v2/team/app/api/manifests/{d}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn one_manifest_under_several_tags_at_once() {
    let s = Server::start().await;
    let (m, d) = s.push_image("multi", "base", b"x").await;
    let r = s
        .http
        .put(s.url(&format!("/v2/multi/manifests/{d}?tag=a&tag=b&tag=c")))
        .header("content-type", OCI_MANIFEST)
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let tags: Vec<String> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(',').map(|t| t.trim().to_owned()))
        .collect();
    assert_eq!(tags, ["a", "b", "c"]);
    assert_eq!(r.headers().get_all("oci-tag").iter().count(), 1);
    let list: serde_json::Value = s.get("/v2/multi/tags/list").await.json().await.unwrap();
    assert_eq!(list["tags"], serde_json::json!(["a", "b", "base", "c"]));
}

#[tokio::test]
async fn tag_and_catalog_pagination() {
    let s = Server::start().await;
    let (m, d) = s.push_image("pg/one", "t00", b"p").await;
    let tags: Vec<String> = (1..25).map(|i| format!("tag={:02}", i)).collect();
    let r = s
        .http
        .put(s.url(&format!("/v2/pg/one/manifests/{d}?{}", tags.join("&"))))
        .header("content-type", OCI_MANIFEST)
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut all = Vec::new();
    let mut next = Some("/v2/pg/one/tags/list?n=10".to_owned());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let r = s.get(&path).await;
        assert_eq!(r.status(), StatusCode::OK);
        next = r.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with("; rel=\"next\""));
            l[1..l.find('>').unwrap()].to_owned()
        });
        let v: serde_json::Value = r.json().await.unwrap();
        let page: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap();
        assert!(page.len() <= 10);
        all.extend(page);
        pages += 1;
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<String> = (1..25).map(|i| format!("{:02}", i)).collect();
    expected.push("t00".into());
    expected.sort();
    assert_eq!(all, expected);
    let r = s.get("/v2/pg/one/tags/list?n=2&last=05").await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["06", "07"]));
    let r = s.get("/v2/pg/nothing/tags/list").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");

    for name in ["pg/two", "pg/three", "aa"] {
        s.push_blob(name, b"c").await;
    }
    let v: serde_json::Value = s.get("/v2/_catalog?n=2").await.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["aa", "pg/one"]));
    let r = s.get("/v2/_catalog?n=2&last=pg/one").await;
    assert!(r.headers().get("link").is_none());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["pg/three", "pg/two"]));
}

#[tokio::test]
async fn referrers_with_subject_and_artifact_type_filter() {
    let s = Server::start().await;
    let (m, d) = s.push_image("ref/app", "v1", b"base layer").await;
    let empty = s.push_blob("ref/app", b"{}").await;
    let sig_layer = s.push_blob("ref/app", b"signature").await;
    let mut artifact: serde_json::Value = serde_json::from_slice(&image_manifest(
        &empty,
        2,
        &[(&sig_layer, 9)],
        Some((&d, m.len())),
    ))
    .unwrap();
    artifact["artifactType"] = "application/vnd.example.sig".into();
    artifact["annotations"] = serde_json::json!({"org.example.k": "v"});
    let body = serde_json::to_vec(&artifact).unwrap();
    let ad = sha256(&body);
    // Pushed by digest, before or after its subject: the subject need not exist.
    let r = s.put_manifest("ref/app", &ad, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-subject"), d);

    let r = s.get(&format!("/v2/ref/app/referrers/{d}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], ad);
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
    assert_eq!(v["manifests"][0]["annotations"]["org.example.k"], "v");
    assert_eq!(v["manifests"][0]["size"], body.len());

    let r = s
        .get(&format!(
            "/v2/ref/app/referrers/{d}?artifactType=application/vnd.example.sig"
        ))
        .await;
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    let r = s
        .get(&format!(
            "/v2/ref/app/referrers/{d}?artifactType=application/other"
        ))
        .await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));
    // Unknown subject: an empty index.
    let r = s
        .get(&format!("/v2/ref/app/referrers/{}", sha256(b"none")))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn indexes_and_docker_manifest_lists() {
    let s = Server::start().await;
    let (m1, d1) = s.push_image("idx", "amd64", b"amd64 layer").await;
    let (m2, d2) = s.push_image("idx", "arm64", b"arm64 layer").await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d1, "size": m1.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": d2, "size": m2.len(), "platform": {"os": "linux", "architecture": "arm64"}},
        ]
    }))
    .unwrap();
    let r = s.put_manifest("idx", "multi", OCI_INDEX, &index).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.get("/v2/idx/manifests/multi").await;
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert_eq!(r.bytes().await.unwrap(), index);
    // An index whose child is missing is refused.
    let bad = String::from_utf8(index.clone())
        .unwrap()
        .replace(&d2, &sha256(b"missing"));
    let r = s
        .put_manifest("idx", "broken", OCI_INDEX, bad.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");

    // Docker schema 2 and a Docker manifest list.
    let docker_m = "application/vnd.docker.distribution.manifest.v2+json";
    let cfg = s.push_blob("dock", b"{\"os\":\"linux\"}").await;
    let layer = s.push_blob("dock", b"docker layer").await;
    let dm = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": docker_m,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg, "size": 15},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 12}]
    }))
    .unwrap();
    let r = s.put_manifest("dock", "v1", docker_m, &dm).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let list_t = "application/vnd.docker.distribution.manifest.list.v2+json";
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": list_t,
        "manifests": [{"mediaType": docker_m, "digest": sha256(&dm), "size": dm.len(), "platform": {"os": "linux", "architecture": "amd64"}}]
    }))
    .unwrap();
    let r = s.put_manifest("dock", "list", list_t, &list).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.get("/v2/dock/manifests/list").await;
    assert_eq!(header(&r, "content-type"), list_t);
}

#[tokio::test]
async fn blob_delete_unlinks_from_one_repository_only() {
    let s = Server::start().await;
    let d = s.push_blob("del/a", b"shared").await;
    s.push_blob("del/b", b"shared").await;
    let r = s.delete(&format!("/v2/del/a/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        s.get(&format!("/v2/del/a/blobs/{d}")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get_bytes(&format!("/v2/del/b/blobs/{d}")).await,
        &b"shared"[..]
    );
    let r = s.delete(&format!("/v2/del/a/blobs/{d}")).await;
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn concurrent_pushes_of_one_tag_end_on_one_complete_manifest() {
    let s = Server::start().await;
    let mut candidates = Vec::new();
    for i in 0..8 {
        let (m, d) = s
            .push_image("race", &format!("c{i}"), format!("layer {i}").as_bytes())
            .await;
        candidates.push((m, d));
    }
    let mut tasks = Vec::new();
    for round in 0..5 {
        for (m, _) in &candidates {
            let (http, url, m) = (s.http.clone(), s.url("/v2/race/manifests/hot"), m.clone());
            tasks.push(tokio::spawn(async move {
                let r = http
                    .put(url)
                    .header("content-type", OCI_MANIFEST)
                    .body(m)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED, "round {round}");
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = s.get("/v2/race/manifests/hot").await;
    let d = header(&r, "docker-content-digest").to_owned();
    let body = r.bytes().await.unwrap();
    assert_eq!(sha256(&body), d);
    assert!(candidates
        .iter()
        .any(|(m, cd)| *cd == d && m[..] == body[..]));
}

#[tokio::test]
async fn metrics_count_requests_and_bytes() {
    let s = Server::start().await;
    s.push_blob("m/app", &[7u8; 1000]).await;
    s.get("/v2/m/app/manifests/none").await;
    let text = s.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(
            "berth_http_requests_total{route=\"manifest\",method=\"GET\",status=\"404\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "berth_http_requests_total{route=\"upload\",method=\"POST\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("berth_blob_bytes_received_total 1000"),
        "{text}"
    );
    assert!(
        text.contains("berth_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("berth_uploads_in_progress 0"), "{text}");
}

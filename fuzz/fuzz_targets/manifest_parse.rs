//! Fuzz `berth_oci::manifest::parse`.
//!
//! Input layout: the first byte picks the `Content-Type` from `CONTENT_TYPES` (modulo its
//! length); the remaining bytes are the request body.
//!
//! Invariants, beyond "never panics":
//! - an accepted manifest is stored under one of the four supported manifest media types, and
//!   its kind matches that type;
//! - when the `Content-Type` header names a supported manifest type, an accepted manifest is
//!   stored under exactly that type (the header is never silently overridden);
//! - every descriptor's digest re-parses from its string form to the same digest;
//! - images list their config first and reference no child manifests; indexes reference no blobs.
#![no_main]

use berth_oci::manifest::{self, Descriptor, ManifestKind};
use berth_oci::{media, Digest};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some(media::OCI_MANIFEST),
    Some(media::OCI_INDEX),
    Some(media::DOCKER_MANIFEST),
    Some(media::DOCKER_MANIFEST_LIST),
    Some(media::DOCKER_SCHEMA1),
    Some(media::DOCKER_SCHEMA1_SIGNED),
    Some("application/json"),
    Some(""),
    Some(" application/vnd.oci.image.manifest.v1+json ; charset=utf-8"),
    Some("application/vnd.oci.image.index.v1+json;x=y"),
    Some("application/vnd.oci.artifact.manifest.v1+json"),
    Some("APPLICATION/VND.OCI.IMAGE.MANIFEST.V1+JSON"),
    Some(";"),
];

const SUPPORTED: [&str; 4] = [
    media::OCI_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST,
    media::DOCKER_MANIFEST_LIST,
];

fn essence(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

fn check_descriptor(d: &Descriptor) {
    let s = d.digest.to_string();
    let again: Digest = s
        .parse()
        .unwrap_or_else(|e| panic!("accepted digest {s:?} does not re-parse: {e}"));
    assert_eq!(again, d.digest, "digest {s:?} changed on re-parse");
    assert_eq!(again.to_string(), s);
    assert_eq!(d.digest.hex().len(), d.digest.algorithm().hex_len());
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(sel) % CONTENT_TYPES.len()];
    let Ok(m) = manifest::parse(content_type, body) else {
        return;
    };

    assert!(
        SUPPORTED.contains(&m.media_type.as_str()),
        "accepted manifest with unsupported media type {:?}",
        m.media_type
    );
    assert!(manifest::is_supported_media_type(&m.media_type));
    let want_kind =
        if m.media_type == media::OCI_INDEX || m.media_type == media::DOCKER_MANIFEST_LIST {
            ManifestKind::Index
        } else {
            ManifestKind::Image
        };
    assert_eq!(
        m.kind, want_kind,
        "kind does not match media type {:?}",
        m.media_type
    );

    if let Some(h) = content_type.map(essence) {
        if SUPPORTED.contains(&h) {
            assert_eq!(
                m.media_type, h,
                "Content-Type {h:?} was overridden by the body's mediaType"
            );
        }
    }

    match m.kind {
        ManifestKind::Image => {
            assert!(
                !m.blobs.is_empty(),
                "image manifest without a config descriptor"
            );
            assert!(m.manifests.is_empty());
        }
        ManifestKind::Index => assert!(m.blobs.is_empty()),
    }

    for d in m.blobs.iter().chain(&m.manifests).chain(m.subject.as_ref()) {
        check_descriptor(d);
    }

    // Parsing is a pure function of its input.
    assert_eq!(manifest::parse(content_type, body).as_ref(), Ok(&m));
});

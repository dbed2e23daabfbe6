//! Parsing and validating manifests: OCI image manifests and indexes, Docker schema 2
//! manifests and manifest lists, and artifacts (`artifactType`, `subject`).
//!
//! Parsing yields what the registry must check and remember: the blobs and child manifests a
//! manifest references (all must exist before it is accepted), its `subject` (for the
//! referrers API) and its artifact type and annotations (for referrer descriptors).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;
use crate::media;

/// Why a manifest was refused. Every variant is reported as `MANIFEST_INVALID`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The body is not JSON of the expected shape.
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    /// Docker schema 1 manifests are deprecated and refused.
    #[error("Docker schema 1 manifests are not supported: push with schema 2 or OCI (docker >= 1.10, or convert with skopeo)")]
    Schema1,
    /// `schemaVersion` is missing or not 2.
    #[error("schemaVersion must be 2")]
    SchemaVersion,
    /// The media type is not a manifest type this registry stores.
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    /// The `mediaType` field and the `Content-Type` header disagree.
    #[error("manifest mediaType {field:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch {
        /// The `mediaType` field.
        field: String,
        /// The `Content-Type` header.
        header: String,
    },
    /// A field the manifest type requires is missing.
    #[error("manifest is missing the required field {0:?}")]
    Missing(&'static str),
    /// A descriptor is malformed.
    #[error("invalid descriptor in {field}: {reason}")]
    Descriptor {
        /// Where the descriptor sits.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a manifest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest (or artifact manifest): config plus layers.
    Image,
    /// An index or manifest list: child manifests.
    Index,
}

/// A validated content descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The media type of the referenced content.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Whether the content lives outside the registry (foreign or non-distributable layers, or
    /// descriptors with `urls`), so its blob need not exist here.
    pub external: bool,
}

/// A manifest that passed validation, with what the registry needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    /// The canonical media type to store and serve it with.
    pub media_type: String,
    /// Image or index.
    pub kind: ManifestKind,
    /// The artifact type for referrer listings: `artifactType`, or the config's media type.
    pub artifact_type: Option<String>,
    /// The manifest this one refers to, if any.
    pub subject: Option<Descriptor>,
    /// Config and layers (images) whose blobs must exist.
    pub blobs: Vec<Descriptor>,
    /// Child manifests (indexes) that must exist.
    pub manifests: Vec<Descriptor>,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    #[serde(default)]
    urls: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The part of a `Content-Type` before any parameters, trimmed.
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn is_manifest_type(t: &str) -> Option<ManifestKind> {
    match t {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => Some(ManifestKind::Image),
        media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

/// Whether `t` is a media type this registry stores manifests under.
pub fn is_supported_media_type(t: &str) -> bool {
    is_manifest_type(essence(t)).is_some()
}

fn descriptor(field: &'static str, raw: RawDescriptor) -> Result<Descriptor, ManifestError> {
    let bad = |reason: &str| ManifestError::Descriptor {
        field,
        reason: reason.to_owned(),
    };
    let media_type = raw.media_type.ok_or_else(|| bad("mediaType is missing"))?;
    let digest = raw
        .digest
        .ok_or_else(|| bad("digest is missing"))?
        .parse::<Digest>()
        .map_err(|e| bad(&e.to_string()))?;
    let size = raw.size.ok_or_else(|| bad("size is missing"))?;
    let size = u64::try_from(size).map_err(|_| bad("size is negative"))?;
    let external = !raw.urls.is_empty() || media::is_non_distributable(&media_type);
    Ok(Descriptor {
        media_type,
        digest,
        size,
        external,
    })
}

/// Parse and validate a manifest pushed with the given `Content-Type`.
///
/// # Errors
/// Returns a [`ManifestError`] when the body is not a well-formed manifest of a supported type.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, ManifestError> {
    let header = content_type.map(essence).filter(|h| !h.is_empty());
    if matches!(
        header,
        Some(media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED)
    ) {
        return Err(ManifestError::Schema1);
    }
    let raw: RawManifest =
        serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    if raw.schema_version == Some(1) {
        return Err(ManifestError::Schema1);
    }
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let media_type = match (raw.media_type.as_deref(), header) {
        (Some(field), Some(h)) if field != h && is_manifest_type(h).is_some() => {
            return Err(ManifestError::MediaTypeMismatch {
                field: field.to_owned(),
                header: h.to_owned(),
            })
        }
        (Some(field), _) => field.to_owned(),
        (None, Some(h)) if is_manifest_type(h).is_some() => h.to_owned(),
        // No type anywhere we can trust: OCI allows omitting mediaType, so infer from shape.
        (None, _) if raw.manifests.is_some() => media::OCI_INDEX.to_owned(),
        (None, _) if raw.config.is_some() => media::OCI_MANIFEST.to_owned(),
        (None, h) => {
            return Err(ManifestError::UnsupportedMediaType(
                h.unwrap_or("").to_owned(),
            ))
        }
    };
    if matches!(
        media_type.as_str(),
        media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED
    ) {
        return Err(ManifestError::Schema1);
    }
    let kind = is_manifest_type(&media_type)
        .ok_or_else(|| ManifestError::UnsupportedMediaType(media_type.clone()))?;
    let subject = raw.subject.map(|s| descriptor("subject", s)).transpose()?;
    let (blobs, manifests, artifact_type) = match kind {
        ManifestKind::Image => {
            let config = descriptor(
                "config",
                raw.config.ok_or(ManifestError::Missing("config"))?,
            )?;
            let layers = raw.layers.ok_or(ManifestError::Missing("layers"))?;
            let artifact_type = raw
                .artifact_type
                .clone()
                .or_else(|| Some(config.media_type.clone()));
            let mut blobs = vec![config];
            for l in layers {
                blobs.push(descriptor("layers", l)?);
            }
            (blobs, Vec::new(), artifact_type)
        }
        ManifestKind::Index => {
            let list = raw.manifests.ok_or(ManifestError::Missing("manifests"))?;
            let manifests = list
                .into_iter()
                .map(|m| descriptor("manifests", m))
                .collect::<Result<Vec<_>, _>>()?;
            (Vec::new(), manifests, raw.artifact_type.clone())
        }
    };
    Ok(ParsedManifest {
        media_type,
        kind,
        artifact_type,
        subject,
        blobs,
        manifests,
        annotations: raw.annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":3}}]{extra}}}"#,
            media::OCI_MANIFEST,
            d('a'),
            d('b')
        )
    }

    #[test]
    fn parses_image() {
        let m = parse(Some(media::OCI_MANIFEST), image("").as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert!(m.subject.is_none());
    }

    #[test]
    fn parses_artifact_with_subject() {
        let extra = format!(
            r#","artifactType":"application/x-sbom","subject":{{"mediaType":"{}","digest":"{}","size":10}},"annotations":{{"k":"v"}}"#,
            media::OCI_MANIFEST,
            d('c')
        );
        let m = parse(Some(media::OCI_MANIFEST), image(&extra).as_bytes()).unwrap();
        assert_eq!(m.artifact_type.as_deref(), Some("application/x-sbom"));
        assert_eq!(m.subject.unwrap().digest.to_string(), d('c'));
        assert_eq!(m.annotations["k"], "v");
    }

    #[test]
    fn parses_index_without_media_type_field() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            media::OCI_MANIFEST,
            d('e')
        );
        let m = parse(Some(media::OCI_INDEX), body.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.media_type, media::OCI_INDEX);
        assert_eq!(m.manifests.len(), 1);
    }

    #[test]
    fn refuses_bad_manifests() {
        assert!(matches!(parse(None, b"{"), Err(ManifestError::Json(_))));
        assert_eq!(
            parse(None, br#"{"schemaVersion":1,"fsLayers":[]}"#),
            Err(ManifestError::Schema1)
        );
        assert_eq!(
            parse(Some(media::DOCKER_SCHEMA1_SIGNED), b"{}"),
            Err(ManifestError::Schema1)
        );
        assert!(matches!(
            parse(
                Some("application/x-foo"),
                br#"{"schemaVersion":2,"mediaType":"application/x-foo"}"#
            ),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse(Some(media::DOCKER_MANIFEST), image("").as_bytes()),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let no_layers = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{}","size":1}}}}"#,
            d('a')
        );
        assert_eq!(
            parse(Some(media::OCI_MANIFEST), no_layers.as_bytes()),
            Err(ManifestError::Missing("layers"))
        );
        let bad_digest = image("").replace(&d('b'), "sha256:nothex");
        assert!(matches!(
            parse(Some(media::OCI_MANIFEST), bad_digest.as_bytes()),
            Err(ManifestError::Descriptor { .. })
        ));
        let negative = image("").replace("\"size\":3", "\"size\":-3");
        assert!(matches!(
            parse(Some(media::OCI_MANIFEST), negative.as_bytes()),
            Err(ManifestError::Descriptor { .. })
        ));
    }

    #[test]
    fn foreign_layers_are_external() {
        let body = image("").replace(
            "application/vnd.oci.image.layer.v1.tar",
            media::DOCKER_FOREIGN_LAYER,
        );
        let m = parse(Some(media::OCI_MANIFEST), body.as_bytes()).unwrap();
        assert!(m.blobs[1].external);
        assert!(!m.blobs[0].external);
    }
}

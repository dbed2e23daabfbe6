use berth_meta::MetaError;
use berth_oci::{Digest, ErrorCode};
use berth_store::StoreError;

/// What can go wrong in a registry operation. `berth-server` maps each variant to the spec's
/// error code and an HTTP status in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The repository name is not valid.
    #[error("{0}")]
    NameInvalid(String),
    /// The repository does not exist.
    #[error("repository {0} is not known")]
    NameUnknown(String),
    /// A digest is malformed or uses an unsupported algorithm.
    #[error("{0}")]
    DigestMalformed(String),
    /// The content does not match the digest the client gave.
    #[error("content digest {actual} does not match the given digest {expected}")]
    DigestMismatch {
        /// The client's digest.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The blob is not in the repository.
    #[error("blob {0} is not in the repository")]
    BlobUnknown(Digest),
    /// The upload session does not exist (or was finished or cancelled).
    #[error("upload session is not known")]
    UploadUnknown,
    /// The upload request is malformed.
    #[error("{0}")]
    UploadInvalid(String),
    /// A chunk does not start where the upload ends (answered with 416 and the current range).
    #[error("chunk must start at byte {offset}")]
    ChunkOutOfOrder {
        /// How many bytes the upload holds.
        offset: u64,
    },
    /// A body is longer or shorter than declared, or over a limit.
    #[error("{0}")]
    SizeInvalid(String),
    /// A body is over the size limit for its kind (413).
    #[error("{0}")]
    TooLarge(String),
    /// A read range does not overlap the blob (416).
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size.
        size: u64,
    },
    /// The manifest is malformed or of an unsupported type.
    #[error("{0}")]
    ManifestInvalid(String),
    /// The manifest references a blob or manifest the repository does not have.
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    /// No manifest under that tag or digest.
    #[error("manifest unknown")]
    ManifestUnknown,
    /// The manifest exists but not in any media type the client accepts.
    #[error("manifest is stored as {0}, which the request's Accept header does not allow")]
    ManifestNotAcceptable(String),
    /// A tag is malformed.
    #[error("{0}")]
    TagInvalid(String),
    /// A pagination parameter is malformed.
    #[error("{0}")]
    PaginationInvalid(String),
    /// The operation is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// A backend is down or busy; the request may be retried.
    #[error("{backend} unavailable: {detail}")]
    Unavailable {
        /// Which backend, the part a client is told.
        backend: Backend,
        /// What went wrong, for the log only: it may name internal hosts, buckets and keys.
        detail: String,
    },
    /// Another request holds this upload (in a fleet: its lease), or this request lost it;
    /// the client may check the upload's status and retry. Answered with 503, and the message.
    #[error("{0}")]
    UploadBusy(String),
    /// No credentials, or credentials that are not valid (expired, tampered, unknown user,
    /// wrong password). Answered with 401 and, on `/v2`, a `WWW-Authenticate` challenge.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials that do not allow this (403 `DENIED`).
    #[error("{0}")]
    Denied(String),
    /// Too many failed attempts; the client must wait (429).
    #[error("{0}")]
    TooManyRequests(String),
    /// A management record (user, project, member, robot...) that does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// A record with that name exists already (409).
    #[error("{0}")]
    Conflict(String),
    /// A record cannot be deleted while others depend on it (412).
    #[error("{0}")]
    NotEmpty(String),
    /// A management request that is malformed or breaks a rule (a weak password, a bad
    /// role...) (400).
    #[error("{0}")]
    Invalid(String),
    /// Anything else: logged in full, reported without detail.
    #[error("{0}")]
    Internal(String),
}

/// The backends a request may find unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The metadata store (PostgreSQL, SQLite).
    Metadata,
    /// The blob store (S3, the filesystem).
    BlobStorage,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Metadata => "metadata store",
            Self::BlobStorage => "blob storage",
        })
    }
}

impl Error {
    /// The spec's error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NameInvalid(_) => ErrorCode::NameInvalid,
            Self::NameUnknown(_) => ErrorCode::NameUnknown,
            Self::DigestMalformed(_) | Self::DigestMismatch { .. } => ErrorCode::DigestInvalid,
            Self::BlobUnknown(_) => ErrorCode::BlobUnknown,
            Self::UploadUnknown => ErrorCode::BlobUploadUnknown,
            Self::UploadInvalid(_) | Self::ChunkOutOfOrder { .. } => ErrorCode::BlobUploadInvalid,
            Self::SizeInvalid(_) | Self::TooLarge(_) => ErrorCode::SizeInvalid,
            Self::RangeNotSatisfiable { .. } => ErrorCode::RangeInvalid,
            Self::ManifestInvalid(_) | Self::TagInvalid(_) => ErrorCode::ManifestInvalid,
            Self::ManifestBlobUnknown(_) => ErrorCode::ManifestBlobUnknown,
            Self::ManifestUnknown | Self::ManifestNotAcceptable(_) => ErrorCode::ManifestUnknown,
            Self::PaginationInvalid(_) | Self::Unsupported(_) => ErrorCode::Unsupported,
            Self::Unavailable { .. } | Self::UploadBusy(_) => ErrorCode::Unavailable,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::Denied(_) => ErrorCode::Denied,
            Self::TooManyRequests(_) => ErrorCode::TooManyRequests,
            Self::NotFound(_) => ErrorCode::NameUnknown,
            Self::Conflict(_) | Self::NotEmpty(_) | Self::Invalid(_) => ErrorCode::Unsupported,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<MetaError> for Error {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::MissingBlob(d) | MetaError::MissingManifest(d) => {
                Self::ManifestBlobUnknown(d)
            }
            MetaError::Conflict => Self::UploadInvalid(
                "upload was changed by a concurrent request; check its status".into(),
            ),
            MetaError::Unavailable(detail) => Self::Unavailable {
                backend: Backend::Metadata,
                detail,
            },
            MetaError::AlreadyExists(what) => Self::Conflict(format!("{what} already exists")),
            MetaError::NotFound(what) => Self::NotFound(format!("{what} does not exist")),
            MetaError::NotEmpty(why) => Self::NotEmpty(why),
            MetaError::Invalid(why) => Self::Invalid(why),
            e @ MetaError::TagImmutable(_) => Self::Denied(e.to_string()),
            MetaError::QuotaExceeded(q) => Self::Denied(q.to_string()),
            e @ (MetaError::SchemaTooNew { .. } | MetaError::Backend(_)) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::UploadUnknown,
            StoreError::Body(m) => Self::SizeInvalid(m),
            e @ StoreError::Io(_) if e.is_unavailable() => Self::Unavailable {
                backend: Backend::BlobStorage,
                detail: e.to_string(),
            },
            e @ (StoreError::OffsetMismatch { .. } | StoreError::Io(_)) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

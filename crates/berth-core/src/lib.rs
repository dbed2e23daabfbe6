//! Berth's services. [`Registry`] holds the push and pull rules of the distribution spec over
//! the [`BlobStore`](berth_store::BlobStore) and [`MetaStore`](berth_meta::MetaStore) traits:
//! it hashes blobs as they stream in, verifies digests before anything becomes visible,
//! validates manifests and their references, and keeps upload sessions durable.

mod error;
mod manifests;
mod registry;
mod uploads;

pub use error::{Backend, Error};
pub use manifests::{ManifestPut, TagList};
pub use registry::{BlobRead, Limits, Registry};
pub use uploads::{BodyLength, UploadState};

//! Berth's services. [`Registry`] holds the push and pull rules of the distribution spec over
//! the [`BlobStore`](berth_store::BlobStore) and [`MetaStore`](berth_meta::MetaStore) traits:
//! it hashes blobs as they stream in, verifies digests before anything becomes visible,
//! validates manifests and their references, and keeps upload sessions durable.
//!
//! Background work runs as jobs from the metadata store's queue: [`JobRunner`] drains it on
//! every instance, with a [`Worker`] per kind of job, such as [`ExpireUploads`], garbage
//! collection ([`GcWorker`]) and scrub ([`ScrubWorker`]).

pub mod access;
mod error;
pub mod gc;
pub mod immutable;
pub mod jobs;
mod manifests;
mod quota;
mod registry;
pub mod retention;
pub mod scrub;
pub mod selector;
mod upload_expiry;
mod upload_lease;
mod uploads;

pub use access::manage::Admin;
pub use access::{Access, AccessSettings, Actor, AuditLog, Principal};
pub use error::{Backend, Error};
pub use gc::{GcOptions, GcSchedule, GcScheduler, GcSettings, GcWorker};
pub use jobs::{JobRunner, PruneJobs, RunnerSettings, Schedule, Worker};
pub use manifests::{Fetch, ManifestPut, TagList};
pub use registry::{BlobRead, Limits, Registry};
pub use retention::{RetentionScheduler, RetentionWorker};
pub use scrub::{ScrubOptions, ScrubSettings, ScrubWorker};
pub use upload_expiry::ExpireUploads;
pub use upload_lease::UploadLeases;
pub use uploads::{BodyLength, UploadState};

//! coffer-sink-s3: stores snapshots in an S3 bucket (AWS, MinIO, Ceph,
//! moto …) — or in any other `object_store` [`ObjectStore`](object_store::ObjectStore)
//! (GCS, Azure, a store a program already has) through
//! [`S3Sink::from_store`], with no new sink code.
//!
//! - Named by `s3://BUCKET/PREFIX` (credentials, region and endpoint from
//!   the standard AWS environment: `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//!   `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP=true` for a plain-http endpoint),
//!   where URL query options override the environment
//!   (`?endpoint=http://127.0.0.1:9000&region=us-east-1&path-style=true`),
//!   or by a `[sink.NAME] kind = "s3"` table (see [`S3SinkConfig`]).
//!   The secret key never appears in `Debug` output, logs or errors.
//! - **put streams.** A body smaller than one part (8 MiB by default) is
//!   sent with one request; a larger one is a multipart upload with at
//!   most `concurrency` parts (4 by default) in flight. Memory of one put
//!   is bounded by `part-size-mib × (concurrency + 1)` — 40 MiB by
//!   default — whatever the object's size.
//! - **All-or-nothing.** S3 shows an object only once its upload
//!   completes. A body that fails, a part that fails, or a put that is
//!   dropped aborts the multipart upload (a guard spawns the abort on
//!   drop). Abort is best effort: when the server is gone it cannot be
//!   told, so give the bucket a lifecycle rule
//!   `AbortIncompleteMultipartUpload` (e.g. after 1 day) to reclaim the
//!   space of such parts; they are never visible as objects.
//! - **Create-only.** A single-request put uses `If-None-Match: *`
//!   (`PutMode::Create`), atomic on the server. object_store 0.14 has no
//!   conditional multipart completion, so a multipart create-only put
//!   checks with HEAD before starting and again just before completing;
//!   a writer completing the same key in between would be replaced.
//!   coffer's snapshot keys carry a random suffix, so only a copy of the
//!   very same snapshot could race there; indexes and locks are small and
//!   use the atomic path.
//! - **Bounded failures.** Connect timeout 5 s, request timeout 120 s, at
//!   most 3 retries within 10 s: an unreachable endpoint fails in seconds
//!   with [`ErrorKind::Unreachable`](coffer_core::ErrorKind). A missing
//!   bucket is `NotFound` ("create the bucket"), refused credentials are
//!   `PermissionDenied` ("check the credentials").
//! - Optional `storage-class` and `server-side-encryption` (`AES256`,
//!   `aws:kms` with `sse-kms-key-id`) apply to every object.
//! - Optional **Object Lock** (`object-lock = { mode = "governance", days
//!   = 30 }`, or derived from the sink's retention policy; see
//!   [`ObjectLockConfig`]): each snapshot's object, index and signature
//!   are stored with `x-amz-object-lock-mode` and
//!   `x-amz-object-lock-retain-until-date` (plus a SHA-256 checksum, which
//!   S3 requires with them). object_store 0.14 has no per-request header
//!   option, so these puts go through a client built with them as default
//!   headers (signed like any other). On a versioned, lock-enabled bucket
//!   coffer's deletes (prune) only add delete markers; the locked versions
//!   stay until their date, and deleting them is refused.
//!
//! Tested here against moto_server (S3 API, plain HTTP) and object_store's
//! in-memory store; the same code serves every object_store backend.
//!
//! ```
//! use std::sync::Arc;
//! use coffer_core::{PutOptions, SinkExt};
//!
//! # #[tokio::main] async fn main() -> coffer_core::Result<()> {
//! let store = Arc::new(object_store::memory::InMemory::new());
//! let sink = coffer_sink_s3::S3Sink::from_store(store, "memory").with_prefix("backups");
//! sink.put_bytes("hello.txt", "hi".into(), PutOptions::create()).await?;
//! assert_eq!(sink.get_bytes("hello.txt").await?, "hi");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod config;
mod error;
mod lock;
mod sink;

pub use config::{DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE_MIB, S3SinkConfig};
pub use lock::{LockMode, ObjectLockConfig};
pub use object_store;
pub use sink::S3Sink;

/// The URL scheme of this sink: `s3`.
pub const SCHEME: &str = "s3";

/// The TOML `kind` of this sink: `s3`.
pub const KIND: &str = "s3";

/// Registers the `s3` sink kind and the `s3://` scheme.
pub fn register(reg: &mut coffer_core::Registry) {
    reg.register_sink(coffer_core::settings_factory::<S3SinkConfig>());
}

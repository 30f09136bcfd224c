//! coffer-sink-opendal: stores snapshots in any [Apache OpenDAL] service —
//! WebDAV, GCS, Azure Blob, a local directory, memory … — named by its
//! scheme and its options, with no new sink code per service.
//!
//! ```toml
//! [sink.dav]
//! kind = "opendal"
//! scheme = "webdav"                      # an OpenDAL scheme compiled in
//! options = { endpoint = "https://dav.example.org", root = "/backups", username = "coffer" }
//! options-env = { password = "DAV_PASSWORD" }   # option values read from the environment
//! part-size-mib = 8                      # chunk size of multipart writes
//! concurrency = 4                        # chunks in flight
//! ```
//!
//! or one-off `--sink 'opendal:fs?root=/srv/backups'` (query = options).
//!
//! - Option values are passed to OpenDAL as they are (its own names, e.g.
//!   `root`, `endpoint`, `bucket`, `container`, `credential`). They never
//!   appear in `Debug` output, logs or errors — only their keys; put
//!   secrets in `options-env`.
//! - **All-or-nothing**: where the service can rename (fs, webdav), a put
//!   writes `.coffer-tmp/<random>` under the root and renames it into
//!   place when complete; a failed or dropped put deletes the temporary
//!   object (a killed process leaves it under `.coffer-tmp/`, which is
//!   never listed). Elsewhere (object stores, memory) the service's own
//!   writer shows the object only when closed, and a failed write is
//!   aborted.
//! - **Create-only** uses the service's conditional write
//!   (`if_not_exists`) when it has one and writes directly; otherwise it
//!   checks before writing and again before the rename, which is not
//!   atomic: [`SinkInfo::atomic_create`](coffer_core::SinkInfo) says which.
//! - Compiled-in services are cargo features of this crate
//!   (`services-fs`, `services-memory`, `services-webdav` by default).
//!
//! [Apache OpenDAL]: https://opendal.apache.org
#![deny(missing_docs)]

mod config;
mod error;
mod sink;

pub use config::OpendalSinkConfig;
pub use sink::OpendalSink;

/// The URL scheme and TOML `kind` of this sink: `opendal`.
pub const KIND: &str = "opendal";

/// Registers the `opendal` sink kind and the `opendal:` scheme.
pub fn register(reg: &mut coffer_core::Registry) {
    reg.register_sink(coffer_core::settings_factory::<OpendalSinkConfig>());
}

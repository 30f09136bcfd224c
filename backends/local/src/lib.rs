//! coffer-sink-local: stores snapshots in a directory of the local
//! filesystem (a disk, a mounted NAS share, a USB drive).
//!
//! - Each object is a file under the root directory; `/` in keys becomes a
//!   subdirectory (created with mode 0700); objects are written with mode
//!   0600.
//! - A sink built from a URL, a path or a config table (what the `coffer`
//!   command line uses) is [`LocalSink::checked`]: its root must hold the
//!   marker `coffer-sink.json` that [`coffer_core::Sink::init`] (`coffer
//!   sink init`) writes, or snapshots of an older version; else every
//!   operation fails with `ErrorKind::SinkMissing` (exit 10), so the path
//!   of an unmounted disk never fills the root filesystem nor lists as
//!   empty. `create = true` (or `--create-sink`) makes it on first use,
//!   creating only the last path component.
//! - A put streams into a `.coffer-tmp-*` file next to its destination,
//!   fsyncs it, renames it into place and fsyncs the directory, so an
//!   object is either complete or absent, also after a crash. Create-only
//!   puts use `renameat2(RENAME_NOREPLACE)` (or a hard link where the
//!   filesystem lacks it), so two writers never replace each other.
//! - Temporary files are never listed and are removed when a put fails or
//!   is dropped; [`LocalSink::cleanup_stale_temp`] removes those a crash
//!   left behind.
//!
//! A sink is named by `file:///abs/path`, `file:relative/or/abs/path`, a
//! plain path (`./backups`, `/srv/backups`), or in the config file:
//!
//! ```toml
//! [sink.disk]
//! kind = "local"
//! path = "./backups"          # relative to the config file's directory
//! create = true               # make it on the first run (else `coffer sink init`)
//! ```
//!
//! ```
//! use coffer_core::{PutOptions, SinkExt};
//!
//! # #[tokio::main] async fn main() -> coffer_core::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("file://{}", dir.path().join("backups").display());
//! let mut registry = coffer_core::Registry::new();
//! coffer_sink_local::register(&mut registry);
//! let sink = registry.sink_from_url(&url)?; // or "./backups"
//! sink.init().await?; // once: the directory and its marker (`coffer sink init`)
//! sink.put_bytes("hello.txt", "hi".into(), PutOptions::create()).await?;
//! assert_eq!(sink.get_bytes("hello.txt").await?, "hi");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod config;
mod error;
mod sink;
mod write;

pub use config::LocalSinkConfig;
pub use sink::LocalSink;

/// The URL scheme of this sink: `file`.
pub const SCHEME: &str = "file";

/// The TOML `kind` of this sink: `local`.
pub const KIND: &str = "local";

/// Registers the `local` sink kind, the `file:` scheme, and makes plain
/// paths given as sinks resolve to this sink.
pub fn register(reg: &mut coffer_core::Registry) {
    let factory = coffer_core::settings_factory::<LocalSinkConfig>();
    reg.register_sink(factory.clone());
    reg.set_path_sink(factory);
}

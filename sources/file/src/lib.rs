//! coffer-source-file: backs up one file or a directory tree into
//! `files/<source>/…` and restores it, all or nothing.
//!
//! - A single file becomes one entry named after its basename.
//! - A directory becomes one entry per file, directory and symlink under it
//!   (paths relative to it, sorted), keeping permission bits and mtimes;
//!   symlinks are stored as links, never followed; sockets, FIFOs and
//!   devices are skipped with a warning; names with a line break are
//!   stored like any other (`SHA256SUMS` escapes them as `sha256sum`
//!   does); `exclude` globs leave paths out.
//! - A restore stages every file as a `.coffer-tmp-*` temp file next to its
//!   destination and renames it into place only on commit; it never writes
//!   outside the destination and never writes through a symlink (one
//!   already there, or one of the bundle); symlinks are recreated as links
//!   whatever they point to, as `tar x` does. Every destination is claimed
//!   in the restore's `PathClaims` (files and symlinks as leaves,
//!   directories as directories), so two sources that collide fail while
//!   staging, before any of them commits.
//!
//! ```toml
//! [source.config]
//! kind = "file"
//! path = "etc/app"            # relative to the config file's directory
//! exclude = ["*.log", "tmp/**"]
//! ```
//!
//! or, one-off: `coffer backup --source file:/etc/app.yaml`.
//!
//! ```
//! let mut registry = coffer_core::Registry::new();
//! coffer_source_file::register(&mut registry);
//! let (factory, spec) = registry.source_spec("file:/etc/app.yaml").unwrap();
//! assert_eq!(factory.spec_name(spec), "app.yaml");
//! let source = factory.from_spec("app.yaml", spec).unwrap();
//! assert_eq!(source.info().kind, coffer_source_file::KIND);
//! ```
#![deny(missing_docs)]

mod config;
mod error;
mod restore;
mod source;

use std::sync::Arc;

pub use config::FileSourceConfig;
pub use source::FileSource;

/// The TOML `kind` and one-off prefix of this source: `file`.
pub const KIND: &str = "file";

/// Registers the `file` source kind.
pub fn register(reg: &mut coffer_core::Registry) {
    reg.register_source(Arc::new(source::FileSourceFactory));
}

//! coffer-core: the [`Source`] and [`Sink`] traits, the streaming bundle
//! pipeline (tar → compression → age → SHA-256 → sinks), the bundle and
//! index formats, crypto helpers, and the plugin conformance kit (feature
//! `testkit`).
//!
//! This crate has no network dependency; plugins live in their own crates
//! and register themselves in a [`Registry`].
//!
//! The root holds what a plugin implements and returns: [`Source`],
//! [`Sink`], their factories and settings, restore options and errors
//! ([`plugin`] is the same as a prelude). The rest lives in modules:
//! [`ops`] (what a front end runs: backup, restore, verify, prune, copy …
//! with their requests and outcomes), [`keys`] (recipients, identities,
//! signing and trust), [`format`](mod@format) (the index, manifest and bundle names),
//! [`checks`] (post-restore checks and drill scratch places), [`slices`]
//! (the oplog archive), [`chunked`] and [`pipeline`] (the pipeline's own
//! parts).
#![deny(missing_docs)]

mod backup;
mod bundle;
mod catalog;
pub mod checks;
pub mod chunked;
mod copy;
mod crypto;
mod error;
pub mod format;
pub mod fsutil;
pub mod keys;
mod layers;
mod lock;
pub mod ops;
pub mod pipeline;
pub mod plugin;
pub mod process;
mod rebundle;
mod registry;
mod restore;
mod retention;
mod signing;
mod sink;
pub mod slices;
mod source;
pub mod spill;
mod stream;
#[cfg(feature = "testkit")]
pub mod testkit;
mod units;

pub use backup::Progress;
pub(crate) use backup::run_backup;
pub(crate) use backup::{BackupOutcome, BackupRequest, SinkOutcome};
pub(crate) use bundle::{
    Index, IndexObject, IndexSource, Manifest, ManifestSource, SnapshotId, SourceRecord, SourcesFile,
    hostname,
};

pub(crate) use catalog::{Catalog, CatalogEntry, SnapshotState};
pub(crate) use copy::CopyOutcome;

pub(crate) use crypto::Identities;
pub use error::{Error, ErrorKind, Result, config_error, error_chain};
pub(crate) use layers::{RetryPolicy, RetrySink, TimeoutPolicy, TimeoutSink};
pub(crate) use lock::LockOptions;
pub(crate) use lock::{
    LockGuard, LockInfo, LockStatus, UnlockReport, acquire_exclusive, acquire_shared_with, is_lock_conflict,
    list_locks,
};
pub use registry::{
    Registry, SinkFactory, SinkSettings, SourceFactory, SourceSettings, TableContext, malformed_origin,
    parse_origin, parse_table, settings_factory, source_settings_factory,
};

pub(crate) use restore::BundleSummary;
pub use restore::RestoreOutcome;
pub(crate) use restore::{
    BundleVisitor, ProgressRead, RestoreInput, SourceResolver, fetch_verified, read_bundle, read_chunked,
    restore_bundle, verify_stored,
};
pub(crate) use retention::{Decision, PinMarker, SnapshotMeta, pin_key};
pub(crate) use retention::{RetentionPolicy, apply};
pub(crate) use signing::{AdmittedIndex, TrustState, TrustedSigners};

pub use sink::{
    ByteStream, ObjectMeta, PutMode, PutOptions, Sink, SinkExt, SinkInfo, validate_key, validate_prefix,
};
pub use source::{
    Area, CancelFlag, CaptureContext, Entry, EntryBody, EntryCheck, EntrySender, FileStat, KindOptions,
    OptionKind, PathClaims, RestoreAction, RestoreEntry, RestoreEntryKind, RestoreOptionSpec, RestoreOptions,
    RestoreReport, Restorer, Source, SourceInfo, SourceReport, check_relative_path, forged_entry,
    read_entry_body,
};
pub use units::{human_size, percent_decode, printable};

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use toml;

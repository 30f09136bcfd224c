//! coffer-core: the [`Source`] and [`Sink`] traits, the streaming bundle
//! pipeline (tar → compression → age → SHA-256 → sinks), the bundle and
//! index formats, crypto helpers, and the plugin conformance kit (feature
//! `testkit`).
//!
//! This crate has no network dependency; plugins live in their own crates
//! and register themselves in a [`Registry`].
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
mod layers;
mod lock;
pub mod ops;
pub mod pipeline;
pub mod plugin;
pub mod process;
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

pub(crate) use backup::run_backup;
pub use backup::{BackupOutcome, BackupRequest, Progress, SinkOutcome, SinkTarget};
pub use bundle::{
    Compression, INDEX_FORMAT, INDEX_SUFFIX, Index, IndexEncryption, IndexObject, IndexSource, Manifest,
    ManifestSource, OBJECT_SUFFIX, SnapshotId, SourceRecord, SourcesFile, check_source_name, hostname,
    unique_source_name,
};

pub use catalog::{Catalog, CatalogEntry, SnapshotState};
pub use copy::{CopyOptions, CopyOutcome, CopyStatus, copy_snapshots};

pub use crypto::{
    DEFAULT_SCRYPT_LOG_N, Encryption, GeneratedKey, Identities, Passphrase, RecipientKey, looks_like_key,
    public_half_hint, secret_key_kind, shown,
};
pub use error::{Error, ErrorKind, Result, config_error, error_chain};
pub(crate) use layers::{RetryPolicy, RetrySink, TimeoutPolicy, TimeoutSink};
pub use lock::{DEFAULT_STALE, LOCK_PREFIX, LockOptions, break_locks};
pub(crate) use lock::{
    LockGuard, LockInfo, LockStatus, UnlockReport, acquire_exclusive, acquire_shared_with, is_lock_conflict,
    list_locks,
};
pub use registry::{
    Registry, SinkFactory, SinkSettings, SourceFactory, SourceSettings, TableContext, malformed_origin,
    parse_origin, parse_table, settings_factory, source_settings_factory,
};

pub use restore::{BundleSummary, RestoreOutcome};
pub(crate) use restore::{
    BundleVisitor, ProgressRead, RestoreInput, SourceResolver, fetch_verified, read_bundle, read_chunked,
    restore_bundle, verify_stored,
};
pub(crate) use retention::{Decision, PinMarker, SnapshotMeta, pin_key};
pub use retention::{PolicyTimeZone, RetentionPolicy, apply};
pub use signing::{AdmittedIndex, SignatureState, SignerKey, SigningKey, TrustState, TrustedSigners};

pub use sink::{
    ByteStream, ObjectMeta, PutMode, PutOptions, Sink, SinkExt, SinkInfo, validate_key, validate_prefix,
};
pub use source::{
    Area, CancelFlag, CaptureContext, Entry, EntryBody, EntryCheck, EntrySender, FileStat, KindOptions,
    OptionKind, PathClaims, RestoreAction, RestoreEntry, RestoreEntryKind, RestoreOptionSpec, RestoreOptions,
    RestoreReport, Restorer, Source, SourceInfo, SourceReport, check_relative_path, forged_entry,
};
pub use units::{human_size, percent_decode, printable};

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use toml;

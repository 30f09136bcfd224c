//! The operations layer: what each `coffer` command does, as functions
//! over typed requests that return typed outcomes.
//!
//! The CLI parses flags and `coffer.toml`, resolves the sinks, keys and
//! policies, calls an operation here and renders its outcome as text or,
//! with `--json`, serializes it: the outcome types below *are* the JSON
//! output, and `docs/json-schema/` holds the schema generated from them
//! (the CLI's `schema` module lists which type each command prints). A
//! program embedding coffer calls the same functions.
//!
//! | command | here |
//! |---|---|
//! | `backup` | [`backup()`] (the pipeline, [`crate::run_backup`], under shared locks) → [`BackupReport`] |
//! | `restore` | [`restore()`] ([`RestoreRequest`]) → [`RestoreReport`] |
//! | `verify` | [`verify_sink`] ([`deep_check`] with a key) → [`VerifyResult`] |
//! | `list` | [`list_sink`] → [`SinkListing`] |
//! | `show` | [`show()`] ([`find_snapshot`], [`deep_check`] with a key) → [`ShowOutcome`] |
//! | `prune` | [`prune_sink`] → [`PruneReport`] |
//! | `pin`, `unpin` | [`pin()`], [`unpin`] → [`PinOutcome`] |
//! | `copy`, `export`, `import` | [`copy_snapshots`] → [`TransferReport`] |
//! | `unlock` | [`break_locks`] → [`SinkUnlock`] |

mod list;
mod pin;
mod prune;
mod report;
mod run;
pub mod sample;
mod show;
mod verify;

pub use crate::backup::{BackupOutcome, BackupRequest, SinkOutcome, SinkTarget};
pub use crate::catalog::{Catalog, CatalogEntry, SnapshotState};
pub use crate::copy::{CopyOptions, CopyOutcome, CopyStatus, copy_snapshots};
pub use crate::lock::{DEFAULT_STALE, LOCK_PREFIX, LockOptions, break_locks};
pub use crate::rebundle::Rebundle;
pub use crate::restore::BundleSummary;
pub use crate::retention::{PolicyTimeZone, RetentionPolicy, apply as apply_retention};
pub use list::{SinkListing, SnapshotRow, list_sink};
pub use pin::{PinOutcome, pin, sinks_holding, unpin, write_pin};
pub use prune::{
    Floor, JobPolicy, PolicySource, PruneReport, PruneRequest, PruneRow, delete_snapshot, prune_sink,
};
pub use report::*;
pub use run::{RestoreRequest, backup, lock_shared, release_all, restore};
pub use show::{find_job_snapshot, find_snapshot, show};
pub use verify::{Pick, SinkVerification, VerifyRequest, deep_check, verify_sink};

use schemars::JsonSchema;
use serde::Serialize;

use crate::Error;

/// An index that could not be read.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Unreadable {
    /// Its key on the sink.
    pub key: String,
    /// Why.
    pub error: String,
}

impl Unreadable {
    /// The unreadable indexes of a catalog.
    pub fn list(cat: &Catalog) -> Vec<Unreadable> {
        cat.unreadable
            .iter()
            .map(|(key, error)| Unreadable {
                key: key.clone(),
                error: error.clone(),
            })
            .collect()
    }
}

/// An error as JSON output shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorInfo {
    /// Its kind (`ErrorKind::as_str`), one of those listed; the exit code
    /// follows from it.
    #[schemars(extend("enum" = [
        "not_found", "already_exists", "permission_denied", "config_invalid", "unsupported", "integrity",
        "decryption", "unreachable", "cancelled", "storage_full", "sink_missing", "unexpected"
    ]))]
    pub kind: String,
    /// What failed.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl From<&Error> for ErrorInfo {
    fn from(e: &Error) -> ErrorInfo {
        ErrorInfo {
            kind: e.kind().as_str().to_string(),
            message: e.to_string(),
            hint: e.hint().map(str::to_string),
        }
    }
}

/// What every command prints on stderr with `--json` when it fails.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorOutput {
    /// The error.
    pub error: ErrorInfo,
}

#[cfg(test)]
mod error_schema_tests {
    /// The JSON Schema of an error lists exactly the kinds the code emits.
    #[test]
    fn the_error_schema_lists_every_kind_the_code_emits() {
        let schema = serde_json::to_value(schemars::schema_for!(super::ErrorOutput)).unwrap();
        let listed = schema["$defs"]["ErrorInfo"]["properties"]["kind"]["enum"].clone();
        let emitted: Vec<&str> = crate::ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(listed, serde_json::json!(emitted), "{schema}");
    }
}

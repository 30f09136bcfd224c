//! [`MongoRestorer`]: restores collections through staging collections,
//! so a failed or interrupted restore never leaves a half-restored one.
//!
//! Runs on the restore's blocking thread and drives the async driver with
//! `Handle::block_on`. Each collection is created as
//! `<name>.coffer-staging-<random>` with its options, filled with unordered
//! bulk inserts of the raw documents (never decoded), given its indexes
//! from the metadata and checked against the bundle (every document
//! acknowledged by the server). `finish(true)` swaps
//! each one in with `renameCollection` (`dropTarget` with `--drop`);
//! without `--drop` an existing collection only gains the documents whose
//! `_id` it lacks, the others counted as conflicts, never overwritten.
//! `finish(false)` drops every staging collection.
//!
//! Inserts are unordered bulk inserts, the next batch read from the bundle
//! while one is in flight ([`IN_FLIGHT`]).
//!
//! Staging collections a killed restore left behind (`<name>.coffer-staging-*`
//! of the same target) are dropped before that collection is staged again.
//!
//! A server that cannot rename collections (`renameCollection` missing or
//! refused as unsupported, or — tried on an empty probe collection first —
//! a rename that loses the collection's options) fails a `--drop` restore of an existing
//! collection, leaving that collection untouched, unless `--unsafe-in-place`
//! (param `unsafe-in-place`) is given: then the target is dropped,
//! recreated with its options and filled from the verified staging
//! collection: not atomic, a failure half-way leaves it partial. The
//! test-only param `test-pretend-no-rename` (or the environment variable
//! `COFFER_TEST_MONGO_NO_RENAME=1`) makes the restorer behave as if the
//! server could not rename, to exercise that path against a server that can.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};

use coffer_core::{
    Area, CancelFlag, Error, ErrorKind, RestoreAction, RestoreEntry, RestoreEntryKind, RestoreOptions,
    RestoreReport, Restorer, Result,
};
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::error::ErrorKind as DriverKind;
use mongodb::{Client, Collection};
use tokio::runtime::Handle;

use crate::error::{DUPLICATE_KEY, code, driver};
use crate::metadata::{self, CollectionType, Metadata};
use crate::ns::NsRules;
use crate::oplog::{self, OPLOG_FILE, Write};
use crate::uri::redact;
use coffer_core::spill::{Spill, SpillBody};

mod replay;
mod staging;
mod swap;

pub(crate) use self::replay::check_archive;
pub(crate) use self::staging::is_staging;
use self::staging::{duplicate_positions, staging_name};

/// Largest BSON document a server accepts, plus room for its envelope.
const MAX_DOCUMENT: usize = 16 * 1024 * 1024 + 16 * 1024;
/// Documents per insert batch.
const BATCH_DOCS: usize = 1000;
/// Bytes per insert batch.
const BATCH_BYTES: usize = 8 << 20;
/// Longest database name MongoDB accepts, in bytes.
const MAX_DB_NAME: usize = 63;
/// Largest metadata file read.
const MAX_METADATA: u64 = 16 << 20;
/// Insert batches under way at once. One keeps the documents in the
/// bundle's (natural) order, so a dump of the restored collection is
/// byte-identical; the next batch is still read while one is inserted.
const IN_FLIGHT: usize = 1;
/// The error of a `--drop` that would have to replace `ns` by rename where
/// the server cannot (`why`), without `--unsafe-in-place`.
fn swap_refused(ns: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("cannot swap in `{ns}`: the server cannot rename collections ({why})"),
    )
    .with_hint(
        "nothing was replaced. --drop --unsafe-in-place drops each existing collection and inserts the \
         bundle's documents into it instead: not atomic, a failure or kill half-way leaves that collection \
         partial until the restore is run again",
    )
}

/// How the count check after a swap or merge counts a collection.
#[derive(Debug, Clone, Copy)]
enum Count {
    /// `countDocuments`: reads the collection. For collections other
    /// clients may write to meanwhile (a merge) or that were filled in
    /// place.
    Read,
    /// `estimatedDocumentCount`, from the collection's metadata: for a
    /// collection renamed whole from its verified staging collection. mongod
    /// answers in a millisecond where reading 100M documents takes minutes.
    Metadata,
    /// Not counted again: a collection this restore created and loaded in
    /// place, every document of which the server acknowledged (checked
    /// while loading). secantusd-py scans a collection even for
    /// `estimatedDocumentCount` (0.66 s per 100k documents, a tenth of the
    /// restore); a drill's `mongo-counts` check still counts it.
    Acknowledged,
}

/// Marks staging collections: `<name>.coffer-staging-<8 hex>`.
const STAGING_TAG: &str = "coffer-staging-";
/// Marks a collection loaded in place and not finished yet:
/// `<name>.coffer-restoring-<8 hex>` beside `<name>`.
const MARKER_TAG: &str = "coffer-restoring-";
/// Server error code of `create` for a namespace that exists.
const NAMESPACE_EXISTS: i32 = 48;
/// The server's code for a collection or database that does not exist.
const NAMESPACE_NOT_FOUND: i32 = 26;
/// Server error codes meaning `renameCollection` is not available:
/// IllegalOperation, CommandNotFound, CommandNotSupported.
const RENAME_UNSUPPORTED: [i32; 3] = [20, 59, 115];
/// Test-only (cargo feature `test-hooks`): behave as if the server could
/// not rename collections.
pub(crate) const PRETEND_NO_RENAME_ENV: &str = "COFFER_TEST_MONGO_NO_RENAME";
/// Test-only switch (cargo feature `test-hooks`): replay the oplog with
/// one command kind per batch, as on a server older than 8.0.
pub(crate) const NO_BULK_WRITE_ENV: &str = "COFFER_TEST_MONGO_NO_BULK_WRITE";
/// The wire version of MongoDB 8.0, the first with the `bulkWrite` command.
const BULK_WRITE_WIRE_VERSION: i64 = 25;

/// One collection staged (or, in a dry run, counted).
struct Staged {
    /// `db.collection` in the bundle (before any `--ns-from` renaming).
    source: String,
    /// Target database and collection.
    db: String,
    name: String,
    /// The staging collection; `None` in a dry run or before the data.
    staging: Option<String>,
    /// Its UUID when created (`None`: the server lists none), checked
    /// before the swap: a staging collection dropped meanwhile (by a
    /// second restore of the same collection sweeping it as stale) and
    /// re-created by a later insert holds only part of the bundle.
    staging_uuid: Option<Bson>,
    /// A direct load (the target did not exist, so `staging` is the target
    /// itself): the marker collection that says it is unfinished.
    marker: Option<String>,
    metadata: Metadata,
    documents: u64,
    indexes: usize,
    /// Whether its `.bson` was seen.
    loaded: bool,
}

/// Restores the entries of one `mongo` source.
pub(crate) struct MongoRestorer {
    handle: Handle,
    client: Client,
    uri: String,
    drop: bool,
    /// `--unsafe-in-place`: drop-then-insert where the server cannot rename.
    unsafe_in_place: bool,
    /// Test-only: act as if `renameCollection` were unsupported.
    pretend_no_rename: bool,
    /// The server has the `bulkWrite` command (MongoDB 8.0+): an oplog
    /// replay sends a run of mixed inserts, updates and deletes to one
    /// collection as one ordered command.
    bulk_write: bool,
    /// Param `test-no-regroup` (tests): replay every batch in oplog order.
    no_regroup: bool,
    /// Stage every collection, new ones too (param `always-stage`): the
    /// data then becomes visible only whole, at the swap.
    stage_always: bool,
    dry_run: bool,
    cancel: CancelFlag,
    suffix: String,
    /// What a rename loses, by the option names of the collections probed
    /// (see [`MongoRestorer::rename_loses_options`]).
    rename_probes: BTreeMap<Vec<String>, Option<String>>,
    /// Keyed by `(db, escaped file stem)`.
    staged: BTreeMap<(String, String), Staged>,
    views: Vec<(String, String, Metadata)>,
    /// `--ns-include`, `--ns-exclude`, `--ns-from` / `--ns-to`.
    rules: NsRules,
    /// Bundle collections (`(db, file stem)`) the rules leave out.
    skipped: BTreeMap<(String, String), String>,
    /// Target namespace → bundle namespace, to refuse two onto one.
    targets: BTreeMap<String, String>,
    /// Final count checks that failed.
    mismatches: Vec<String>,
    /// The bundle's `oplog.bson` (point-in-time dumps), replayed after
    /// the collections are in place.
    oplog: Option<SpillBody>,
    /// Archived oplog slices replayed after it (`restore --to-time`).
    pub(crate) tail: Option<coffer_core::slices::pitr::LogReplay>,
    /// Target namespaces this restore created or replaced whole: the
    /// oplog is replayed on them (merged ones keep their documents).
    replayable: BTreeSet<String>,
    /// Staging collections of earlier, interrupted restores dropped.
    stale: Vec<String>,
    /// Param `new-databases-only` (a drill's scratch copies): a target
    /// database that exists already is refused before anything is written
    /// into it, so a restore never replaces a database it did not create.
    new_databases_only: bool,
    /// Target databases checked for `new_databases_only`.
    checked_dbs: BTreeSet<String>,
}

impl MongoRestorer {
    /// Prepares a restore into the server of `client`, failing now if it
    /// cannot be reached.
    pub(crate) async fn new(
        client: Client,
        uri: String,
        drop: bool,
        rules: NsRules,
        opts: &RestoreOptions,
    ) -> Result<Self> {
        if opts.flag("unsafe-in-place") && !drop {
            let kind = opts.kind().unwrap_or(crate::KIND);
            return Err(coffer_core::config_error(format!(
                "--unsafe-in-place ({kind}.unsafe-in-place) only changes how --drop replaces a collection"
            ))
            .with_hint("add --drop, or leave --unsafe-in-place out"));
        }
        client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| {
                driver(
                    "cannot connect to the MongoDB server to restore into",
                    &e,
                    &uri,
                    &redact(&uri),
                )
            })?;
        // Test-only (cargo feature `test-hooks`, never in a shipped build).
        let test_switch =
            |var: &str| cfg!(feature = "test-hooks") && std::env::var(var).is_ok_and(|v| v == "1");
        let pretend_no_rename = opts.flag("test-pretend-no-rename") || test_switch(PRETEND_NO_RENAME_ENV);
        let wire = client
            .database("admin")
            .run_command(doc! { "hello": 1 })
            .await
            .ok()
            .and_then(|h| match h.get("maxWireVersion") {
                Some(Bson::Int32(v)) => Some(i64::from(*v)),
                Some(Bson::Int64(v)) => Some(*v),
                _ => None,
            })
            .unwrap_or(0);
        let bulk_write = wire >= BULK_WRITE_WIRE_VERSION
            && !opts.flag("test-no-bulk-write")
            && !test_switch(NO_BULK_WRITE_ENV);
        Ok(MongoRestorer {
            handle: Handle::current(),
            client,
            uri,
            drop,
            unsafe_in_place: opts.flag("unsafe-in-place"),
            pretend_no_rename,
            bulk_write,
            no_regroup: opts.flag("test-no-regroup"),
            stage_always: opts.flag("always-stage"),
            dry_run: opts.dry_run,
            cancel: opts.cancel.clone(),
            suffix: format!("{STAGING_TAG}{:08x}", rand::random::<u32>()),
            rename_probes: BTreeMap::new(),
            staged: BTreeMap::new(),
            views: Vec::new(),
            rules,
            skipped: BTreeMap::new(),
            targets: BTreeMap::new(),
            mismatches: Vec::new(),
            oplog: None,
            tail: None,
            replayable: BTreeSet::new(),
            stale: Vec::new(),
            new_databases_only: opts.flag("new-databases-only"),
            checked_dbs: BTreeSet::new(),
        })
    }

    /// Runs a driver action to completion on this blocking thread.
    fn run<F: std::future::IntoFuture>(&self, action: F) -> F::Output {
        self.handle.block_on(action.into_future())
    }

    fn err(&self, what: impl std::fmt::Display, e: &mongodb::error::Error) -> Error {
        driver(what, e, &self.uri, &redact(&self.uri))
    }
}

impl Restorer for MongoRestorer {
    fn entry(&mut self, entry: RestoreEntry<'_>) -> Result<()> {
        let RestoreEntryKind::File { size } = entry.kind else {
            return Ok(());
        };
        if entry.area != Area::Mongo {
            return Ok(());
        }
        if entry.path == OPLOG_FILE {
            return self.oplog_entry(entry.reader, size);
        }
        let Some((db, file)) = entry.path.split_once('/') else {
            tracing::warn!(path = entry.path, "ignoring a file outside any database folder");
            return Ok(());
        };
        if file.contains('/') {
            return Err(malformed("unexpected nested path", entry.path));
        }
        let (db, file) = (db.to_string(), file.to_string());
        if let Some(stem) = file.strip_suffix(".metadata.json") {
            self.metadata_entry(&db, stem, entry, size)
        } else if let Some(stem) = file.strip_suffix(".bson") {
            self.bson_entry(&db, stem, entry, size)
        } else {
            tracing::warn!(path = entry.path, "ignoring an unknown file in a mongo source");
            Ok(())
        }
    }

    fn finish(mut self: Box<Self>, commit: bool) -> Result<RestoreReport> {
        let mut tally = Tally::default();
        if commit && !self.dry_run {
            self.commit(&mut tally)?;
            let (body, tail) = (self.oplog.take(), self.tail.take());
            if body.is_some() || tail.is_some() {
                self.replay(body, tail, &mut tally)?;
            }
            if let Some(e) = self.mismatch_error() {
                return Err(e);
            }
        } else {
            if let Some(mut body) = self.oplog.take() {
                let n = read_documents(&mut *body.reader, body.size, OPLOG_FILE, |_| Ok(()))?;
                tally.actions.push(RestoreAction {
                    action: "replay-oplog".into(),
                    target: format!("{n} oplog entries written during the dump (would be replayed)"),
                });
            }
            if let Some(t) = self.tail.take() {
                tally.actions.push(RestoreAction {
                    action: "replay-oplog".into(),
                    target: format!(
                        "archived oplog entries from {} slice{} up to {} ({}) (would be replayed)",
                        t.slices,
                        if t.slices == 1 { "" } else { "s" },
                        t.until,
                        t.until.time()
                    ),
                });
            }
            let planned = self.plan(&mut tally);
            let staged: Vec<Staged> = std::mem::take(&mut self.staged).into_values().collect();
            self.drop_staging(staged.into_iter());
            planned?;
        }
        for ns in std::mem::take(&mut self.stale) {
            tally.actions.push(RestoreAction {
                action: "drop-stale-staging".into(),
                target: format!("{ns} (left by an interrupted restore)"),
            });
        }
        for ns in std::mem::take(&mut self.skipped).into_values() {
            tally.skipped += 1;
            tally.actions.push(RestoreAction {
                action: "skip".into(),
                target: format!("{ns} (left out by --ns-include/--ns-exclude)"),
            });
        }
        Ok(tally.report())
    }
}

/// Counts for the report.
#[derive(Default)]
struct Tally {
    actions: Vec<RestoreAction>,
    collections: u64,
    views: u64,
    documents: u64,
    conflicts: u64,
    skipped: u64,
    /// Oplog writes replayed.
    replayed: Option<u64>,
    /// Documents gained or lost by the replay, per bundle namespace.
    count_changes: BTreeMap<String, i64>,
}

impl Tally {
    fn add(&mut self, action: &str, target: String, documents: u64, conflicts: u64) {
        self.actions.push(RestoreAction {
            action: action.to_string(),
            target,
        });
        if action.ends_with("-view") {
            self.views += 1;
        } else {
            self.collections += 1;
        }
        self.documents += documents;
        self.conflicts += conflicts;
    }

    fn report(self) -> RestoreReport {
        let mut summary = format!(
            "{} collection{}, {} document{}",
            self.collections,
            if self.collections == 1 { "" } else { "s" },
            self.documents,
            if self.documents == 1 { "" } else { "s" }
        );
        if self.views > 0 {
            summary.push_str(&format!(
                ", {} view{}",
                self.views,
                if self.views == 1 { "" } else { "s" }
            ));
        }
        if self.conflicts > 0 {
            summary.push_str(&format!(", {} conflicts (existing kept)", self.conflicts));
        }
        if self.skipped > 0 {
            summary.push_str(&format!(", {} left out", self.skipped));
        }
        if let Some(n) = self.replayed {
            summary.push_str(&format!(", {n} oplog writes replayed"));
        }
        RestoreReport {
            summary,
            actions: self.actions,
            count_changes: self.count_changes,
        }
    }
}

/// Reads concatenated BSON documents of exactly `size` bytes, checking
/// each one's framing, and hands them to `each`; returns how many.
fn read_documents(
    reader: &mut dyn Read,
    size: u64,
    path: &str,
    mut each: impl FnMut(RawDocumentBuf) -> Result<()>,
) -> Result<u64> {
    let mut left = size;
    let mut count = 0;
    while left > 0 {
        if left < 5 {
            return Err(malformed("truncated BSON document", path));
        }
        let mut len = [0u8; 4];
        read_exact(reader, &mut len)?;
        let len = i32::from_le_bytes(len);
        if len < 5 || len as usize > MAX_DOCUMENT || len as u64 > left {
            return Err(malformed("bad BSON document length", path));
        }
        let mut buf = vec![0u8; len as usize];
        buf[..4].copy_from_slice(&len.to_le_bytes());
        read_exact(reader, &mut buf[4..])?;
        let doc = RawDocumentBuf::from_bytes(buf)
            .map_err(|e| malformed(&format!("bad BSON document: {e}"), path))?;
        each(doc)?;
        left -= len as u64;
        count += 1;
    }
    Ok(count)
}

fn read_exact(reader: &mut dyn Read, buf: &mut [u8]) -> Result<()> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::new(
                ErrorKind::Integrity,
                "a collection in the bundle is shorter than its header says",
            )
        } else {
            Error::io("cannot read the bundle", e)
        }
    })
}

fn malformed(what: &str, path: &str) -> Error {
    Error::new(ErrorKind::Integrity, what.to_string())
        .with_context("path", path)
        .with_hint("the bundle or dump is damaged; restore another snapshot")
}

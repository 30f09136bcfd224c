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

/// Largest BSON document a server accepts, plus room for its envelope.
const MAX_DOCUMENT: usize = 16 * 1024 * 1024 + 16 * 1024;
/// Documents per insert batch.
const BATCH_DOCS: usize = 1000;
/// Bytes per insert batch.
const BATCH_BYTES: usize = 8 << 20;
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
}

/// Marks staging collections: `<name>.coffer-staging-<8 hex>`.
const STAGING_TAG: &str = "coffer-staging-";
/// Server error codes meaning `renameCollection` is not available:
/// IllegalOperation, CommandNotFound, CommandNotSupported.
const RENAME_UNSUPPORTED: [i32; 3] = [20, 59, 115];
/// Test-only (cargo feature `test-hooks`): behave as if the server could
/// not rename collections.
pub(crate) const PRETEND_NO_RENAME_ENV: &str = "COFFER_TEST_MONGO_NO_RENAME";

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
    /// Target namespaces this restore created or replaced whole: the
    /// oplog is replayed on them (merged ones keep their documents).
    replayable: BTreeSet<String>,
    /// Staging collections of earlier, interrupted restores dropped.
    stale: Vec<String>,
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
        let flag = |k: &str| opts.flag(k);
        // Test-only (cargo feature `test-hooks`, never in a shipped build).
        let pretend_no_rename = flag("test-pretend-no-rename")
            || (cfg!(feature = "test-hooks") && std::env::var(PRETEND_NO_RENAME_ENV).is_ok_and(|v| v == "1"));
        Ok(MongoRestorer {
            handle: Handle::current(),
            client,
            uri,
            drop,
            unsafe_in_place: flag("unsafe-in-place"),
            pretend_no_rename,
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
            replayable: BTreeSet::new(),
            stale: Vec::new(),
        })
    }

    /// Runs a driver action to completion on this blocking thread.
    fn run<F: std::future::IntoFuture>(&self, action: F) -> F::Output {
        self.handle.block_on(action.into_future())
    }

    fn err(&self, what: impl std::fmt::Display, e: &mongodb::error::Error) -> Error {
        driver(what, e, &self.uri, &redact(&self.uri))
    }

    fn metadata_entry(&mut self, db: &str, stem: &str, entry: RestoreEntry<'_>, size: u64) -> Result<()> {
        if size > MAX_METADATA {
            return Err(malformed("collection metadata over 16 MiB", entry.path));
        }
        let mut text = Vec::with_capacity(size as usize);
        entry
            .reader
            .take(size)
            .read_to_end(&mut text)
            .map_err(|e| Error::io("cannot read the bundle", e))?;
        let meta = metadata::parse(&text, entry.path)?;
        let name = match &meta.collection_name {
            Some(n) => n.clone(),
            None => metadata::unescape_name(stem)
                .ok_or_else(|| malformed("bad collection file name", entry.path))?,
        };
        let key = (db.to_string(), stem.to_string());
        let Some((tdb, tname)) = self.target(db, &name, entry.path)? else {
            self.skipped.insert(key, format!("{db}.{name}"));
            return Ok(());
        };
        if meta.kind == CollectionType::View {
            self.views.push((tdb, tname, meta));
            return Ok(());
        }
        if self.staged.contains_key(&key) {
            return Err(malformed("the bundle holds a collection twice", entry.path));
        }
        self.staged.insert(
            key,
            Staged {
                source: format!("{db}.{name}"),
                db: tdb,
                name: tname,
                staging: None,
                staging_uuid: None,
                metadata: meta,
                documents: 0,
                indexes: 0,
                loaded: false,
            },
        );
        Ok(())
    }

    fn bson_entry(&mut self, db: &str, stem: &str, entry: RestoreEntry<'_>, size: u64) -> Result<()> {
        let key = (db.to_string(), stem.to_string());
        if self.skipped.contains_key(&key) {
            return Ok(());
        }
        if !self.staged.contains_key(&key) {
            // A dump without metadata: a plain collection without options
            // or secondary indexes (mongorestore does the same).
            let name = metadata::unescape_name(stem)
                .ok_or_else(|| malformed("bad collection file name", entry.path))?;
            let Some((tdb, tname)) = self.target(db, &name, entry.path)? else {
                self.skipped.insert(key, format!("{db}.{name}"));
                return Ok(());
            };
            self.staged.insert(
                key.clone(),
                Staged {
                    source: format!("{db}.{name}"),
                    db: tdb,
                    name: tname,
                    staging: None,
                    staging_uuid: None,
                    metadata: Metadata {
                        options: Document::new(),
                        indexes: Vec::new(),
                        collection_name: None,
                        kind: CollectionType::Collection,
                    },
                    documents: 0,
                    indexes: 0,
                    loaded: false,
                },
            );
        }
        let path = entry.path.to_string();
        let mut staged = self.staged.remove(&key).expect("inserted above");
        let result = if !staged.loaded && !self.dry_run {
            self.drop_stale_staging(&staged.db, &staged.name)
        } else {
            Ok(())
        };
        let result = result.and_then(|()| self.load(&mut staged, entry.reader, size, &path));
        self.staged.insert(key, staged);
        result
    }

    /// Where the bundle's `db.name` goes (`None`: left out by the rules),
    /// refusing two bundle collections onto one target.
    fn target(&mut self, db: &str, name: &str, path: &str) -> Result<Option<(String, String)>> {
        let Some((tdb, tname)) = self.rules.map(db, name)? else {
            return Ok(None);
        };
        let source = format!("{db}.{name}");
        let target = format!("{tdb}.{tname}");
        if let Some(other) = self.targets.get(&target)
            && other != &source
        {
            return Err(coffer_core::config_error(format!(
                "`{other}` and `{source}` would both be restored into `{target}`"
            ))
            .with_context("path", path)
            .with_hint("change --ns-from/--ns-to, or leave one out with --ns-exclude"));
        }
        self.targets.insert(target, source);
        Ok(Some((tdb, tname)))
    }

    /// Creates the staging collection, fills it, builds its indexes and
    /// checks its count.
    fn load(&self, staged: &mut Staged, reader: &mut dyn Read, size: u64, path: &str) -> Result<()> {
        if staged.loaded {
            return Err(malformed("the bundle holds a collection twice", path));
        }
        staged.loaded = true;
        let ns = format!("{}.{}", staged.db, staged.name);
        if self.dry_run {
            staged.documents = read_documents(reader, size, path, |_| Ok(()))?;
            return Ok(());
        }
        let staging = staging_name(&staged.db, &staged.name, &self.suffix);
        let db = self.client.database(&staged.db);
        let mut create = doc! { "create": &staging };
        for (k, v) in &staged.metadata.options {
            create.insert(k.clone(), v.clone());
        }
        self.run(db.run_command(create))
            .map_err(|e| self.err(format!("cannot create a staging collection for `{ns}`"), &e))?;
        staged.staging = Some(staging.clone());
        staged.staging_uuid = self.uuid_of(&staged.db, &staging)?;
        let coll: Collection<RawDocumentBuf> = db.collection(&staging);
        let insert_error = |e: &InsertFailure| match e {
            InsertFailure::Driver(e) if duplicate_only(e) => {
                malformed("the bundle holds two documents with the same _id", path)
            }
            InsertFailure::Driver(e) => {
                self.err(format!("cannot insert into the staging collection of `{ns}`"), e)
            }
            InsertFailure::Stopped => Error::new(ErrorKind::Cancelled, "the restore stopped"),
        };
        let mut inserts = Inserts::new(self.handle.clone(), coll.clone());
        let mut batch: Vec<RawDocumentBuf> = Vec::with_capacity(BATCH_DOCS);
        let mut batch_bytes = 0;
        let read = read_documents(reader, size, path, |doc| {
            batch_bytes += doc.as_bytes().len();
            batch.push(doc);
            if batch.len() >= BATCH_DOCS || batch_bytes >= BATCH_BYTES {
                self.cancel.check()?;
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_DOCS));
                inserts.send(full).map_err(|e| insert_error(&e))?;
                batch_bytes = 0;
            }
            Ok(())
        });
        // Every batch sent is waited for, also on an error, so none lands
        // after the staging collection was dropped.
        let documents = match read {
            Ok(n) if !batch.is_empty() => self
                .cancel
                .check()
                .and_then(|()| inserts.send(batch).map_err(|e| insert_error(&e)))
                .map(|()| n),
            other => other,
        };
        let waited = inserts.wait_all().map_err(|e| insert_error(&e));
        let documents = documents?;
        let inserted = waited?;
        staged.documents = documents;
        staged.indexes = self.create_indexes(&staged.db, &staging, &staged.metadata.indexes, &ns)?;
        // The staging collection is new and private to this restore, so the
        // documents the server acknowledged are the documents it holds: an
        // unordered insert_many returns Ok only when the server acknowledged
        // every document of the batch without a write error (this driver
        // refuses unacknowledged `w: 0` writes outright). A `count` here would
        // scan the whole collection again (secantusd-py: 1.4 s per 100k
        // documents); the count after the swap checks it once more.
        if inserted != documents {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "`{ns}`: the server acknowledged {inserted} documents in the staging collection, the \
                     bundle holds {documents}"
                ),
            )
            .with_hint("nothing was swapped in; check the server's logs and run the restore again"));
        }
        Ok(())
    }

    /// Builds the indexes of `indexes` (except `_id_`) on `coll`, keeping
    /// each spec verbatim but for the obsolete `ns` field; returns how many.
    fn create_indexes(&self, db: &str, coll: &str, indexes: &[Document], ns: &str) -> Result<usize> {
        let specs: Vec<Bson> = indexes
            .iter()
            .filter(|spec| spec.get_str("name").ok() != Some("_id_"))
            .map(|spec| Bson::Document(metadata::index_for_create(spec, ns)))
            .collect();
        if specs.is_empty() {
            return Ok(0);
        }
        let n = specs.len();
        self.run(
            self.client
                .database(db)
                .run_command(doc! { "createIndexes": coll, "indexes": specs }),
        )
        .map_err(|e| self.err(format!("cannot build the indexes of `{ns}`"), &e))?;
        Ok(n)
    }

    /// Drops the staging collections of `db.name` that an interrupted
    /// restore (killed, or its server gone) left behind.
    fn drop_stale_staging(&mut self, db: &str, name: &str) -> Result<()> {
        let database = self.client.database(db);
        let names = self
            .run(database.list_collection_names())
            .map_err(|e| self.err(format!("cannot list the collections of `{db}`"), &e))?;
        for stale in names.iter().filter(|n| is_staging_of(n, name)) {
            tracing::warn!("{db}.{name}: dropping {db}.{stale}, left by an interrupted restore");
            self.run(database.collection::<Document>(stale).drop())
                .map_err(|e| {
                    self.err(
                        format!(
                            "cannot drop `{db}.{stale}`, a staging collection left by an interrupted restore"
                        ),
                        &e,
                    )
                })?;
            self.stale.push(format!("{db}.{stale}"));
        }
        Ok(())
    }

    /// Renames `db.staging` to `ns` (collection `name`, created with
    /// `options`), replacing it with `--drop`.
    fn rename(
        &mut self,
        db: &str,
        name: &str,
        options: &Document,
        staging: &str,
        ns: &str,
    ) -> std::result::Result<(), RenameFailure> {
        if self.pretend_no_rename {
            return Err(RenameFailure::Unsupported(format!(
                "renameCollection disabled by the test-only switch {PRETEND_NO_RENAME_ENV}"
            )));
        }
        if !options.is_empty()
            && let Some(lost) = self
                .probe_rename(db, name, options)
                .map_err(RenameFailure::Other)?
        {
            return Err(RenameFailure::Unsupported(lost));
        }
        let cmd = doc! {
            "renameCollection": format!("{db}.{staging}"),
            "to": ns,
            "dropTarget": self.drop,
        };
        match self.run(self.client.database("admin").run_command(cmd)) {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some(48) => Err(RenameFailure::Exists),
            Err(e) => match self.rename_unsupported(&e) {
                Some(why) => Err(RenameFailure::Unsupported(why)),
                None => Err(RenameFailure::Other(
                    self.err(format!("cannot swap in `{ns}`"), &e),
                )),
            },
        }
    }

    /// Why `renameCollection` failed, password-free, if the failure means
    /// the server cannot rename collections at all.
    fn rename_unsupported(&self, e: &mongodb::error::Error) -> Option<String> {
        if !code(e).is_some_and(|c| RENAME_UNSUPPORTED.contains(&c)) {
            return None;
        }
        let why = match e.kind.as_ref() {
            DriverKind::Command(c) => {
                format!("renameCollection: {} ({} {})", c.message, c.code_name, c.code)
            }
            _ => "renameCollection failed".to_string(),
        };
        Some(crate::uri::scrub(&why, &self.uri))
    }

    /// Why staged collection `s` cannot be swapped in by rename, if so.
    fn swap_blocked(&mut self, s: &Staged) -> Result<Option<String>> {
        if self.pretend_no_rename {
            return Ok(Some(format!(
                "renameCollection disabled by the test-only switch {PRETEND_NO_RENAME_ENV}"
            )));
        }
        self.probe_rename(&s.db, &s.name, &s.metadata.options)
    }

    /// [`Self::rename_loses_options`], once per set of option names.
    fn probe_rename(&mut self, db: &str, name: &str, options: &Document) -> Result<Option<String>> {
        let key: Vec<String> = options.keys().cloned().collect();
        if let Some(lost) = self.rename_probes.get(&key) {
            return Ok(lost.clone());
        }
        let lost = self.rename_loses_options(db, name, options)?;
        self.rename_probes.insert(key, lost.clone());
        Ok(lost)
    }

    /// Whether renaming a collection created with `options` keeps them, tried
    /// on an empty collection first: mongod keeps them, secantusd-py drops
    /// them all (a capped collection comes back uncapped, a validator is
    /// gone), which a swap must not do silently. Returns what is lost, or
    /// why the server cannot rename collections at all.
    /// The probes are named like staging collections of `name`, so a
    /// restore killed meanwhile leaves nothing the next one does not drop.
    fn rename_loses_options(&self, db: &str, name: &str, options: &Document) -> Result<Option<String>> {
        let database = self.client.database(db);
        let probe = |other: &str| loop {
            let suffix = format!("{STAGING_TAG}{:08x}", rand::random::<u32>());
            if suffix != self.suffix && suffix != other {
                return staging_name(db, name, &suffix);
            }
        };
        let first = probe("");
        let second = probe(&first);
        let listed = |coll: &str| -> Result<Document> {
            Ok(self
                .listed(db, coll)?
                .and_then(|s| s.get_document("options").ok().cloned())
                .unwrap_or_default())
        };
        let mut create = doc! { "create": &first };
        for (k, v) in options {
            create.insert(k.clone(), v.clone());
        }
        let outcome = (|| {
            self.run(database.run_command(create))
                .map_err(|e| self.err(format!("cannot create a probe collection in `{db}`"), &e))?;
            let before = listed(&first)?;
            let renamed = self.run(self.client.database("admin").run_command(doc! {
                "renameCollection": format!("{db}.{first}"),
                "to": format!("{db}.{second}"),
            }));
            if let Err(e) = renamed {
                return match self.rename_unsupported(&e) {
                    Some(why) => Ok(Some(why)),
                    None => Err(self.err(format!("cannot rename a probe collection in `{db}`"), &e)),
                };
            }
            let after = listed(&second)?;
            let lost: Vec<&str> = before
                .keys()
                .filter(|k| before.get(k.as_str()) != after.get(k.as_str()))
                .map(String::as_str)
                .collect();
            Ok((!lost.is_empty()).then(|| {
                format!(
                    "renameCollection on this server does not keep a collection's options ({} lost)",
                    lost.join(", ")
                )
            }))
        })();
        for coll in [&first, &second] {
            let _ = self.run(database.collection::<Document>(coll).drop());
        }
        outcome
    }

    /// `--unsafe-in-place`: drops `ns` (when it exists), recreates it with
    /// its options and fills it from the verified staging collection.
    fn in_place(
        &mut self,
        s: &Staged,
        staging: &str,
        exists: bool,
        why: &str,
        report: &mut Tally,
    ) -> Result<()> {
        let ns = format!("{}.{}", s.db, s.name);
        let db = self.client.database(&s.db);
        tracing::warn!(
            "{ns}: the server cannot rename collections ({why}); replacing it in place, not atomically"
        );
        if exists {
            self.run(db.collection::<Document>(&s.name).drop())
                .map_err(|e| self.err(format!("cannot drop `{ns}`"), &e))?;
        }
        let mut create = doc! { "create": &s.name };
        for (k, v) in &s.metadata.options {
            create.insert(k.clone(), v.clone());
        }
        let partial =
            "the collection may be partial now: run the restore again (with --drop --unsafe-in-place)";
        self.run(db.run_command(create))
            .map_err(|e| self.err(format!("cannot create `{ns}`"), &e).with_hint(partial))?;
        let Copied {
            inserted, conflicts, ..
        } = self
            .copy(&s.db, staging, &s.name, &ns)
            .map_err(|e| e.with_hint(partial))?;
        let indexes = self
            .create_indexes(&s.db, &s.name, &s.metadata.indexes, &ns)
            .map_err(|e| e.with_hint(partial))?;
        self.run(db.collection::<Document>(staging).drop())
            .map_err(|e| self.err(format!("cannot drop the staging collection of `{ns}`"), &e))?;
        self.replayable.insert(ns);
        let line = self.line(s, inserted, conflicts, indexes, s.documents, Count::Read)?;
        let action = if exists {
            "replace-in-place"
        } else {
            "create-in-place"
        };
        let how = if exists {
            "dropped, recreated and filled"
        } else {
            "created and filled"
        };
        report.add(
            action,
            format!("{line} ({how} in place, not atomically: the server cannot rename collections: {why})"),
            inserted,
            conflicts,
        );
        Ok(())
    }

    /// The `listCollections` entry of `db.name`, if it exists.
    fn listed(&self, db: &str, name: &str) -> Result<Option<Document>> {
        let database = self.client.database(db);
        let specs: Vec<Document> = self
            .run(async {
                database
                    .run_cursor_command(doc! { "listCollections": 1, "filter": { "name": name } })
                    .await?
                    .try_collect()
                    .await
            })
            .map_err(|e| self.err(format!("cannot list the collections of `{db}`"), &e))?;
        Ok(specs.into_iter().next())
    }

    /// The UUID `listCollections` gives `db.name`, if any.
    fn uuid_of(&self, db: &str, name: &str) -> Result<Option<Bson>> {
        Ok(self
            .listed(db, name)?
            .and_then(|spec| spec.get_document("info").ok()?.get("uuid").cloned()))
    }

    /// Fails unless `s`'s staging collection is still the one this restore
    /// created and filled.
    fn check_staging(&self, s: &Staged) -> Result<()> {
        let Some(staging) = &s.staging else { return Ok(()) };
        let ns = format!("{}.{}", s.db, s.name);
        let intact = match &s.staging_uuid {
            Some(was) => self.uuid_of(&s.db, staging)?.as_ref() == Some(was),
            // No UUID to compare: it must at least still be there.
            None => self.exists(&s.db, staging)?,
        };
        if intact {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "the staging collection `{}.{staging}` of `{ns}` was dropped or replaced by another client while \
                 this restore ran; `{ns}` was not replaced",
                s.db
            ),
        )
        .with_hint(
            "another restore of the same collection may have swept it as stale: run one restore at a time, \
             then run this one again",
        ))
    }

    fn exists(&self, db: &str, name: &str) -> Result<bool> {
        let names = self
            .run(
                self.client
                    .database(db)
                    .list_collection_names()
                    .filter(doc! { "name": name }),
            )
            .map_err(|e| self.err(format!("cannot list the collections of `{db}`"), &e))?;
        Ok(names.iter().any(|n| n == name))
    }

    /// Swaps in (or merges) every staged collection and creates the views.
    fn commit(&mut self, report: &mut Tally) -> Result<()> {
        let staged: Vec<Staged> = std::mem::take(&mut self.staged).into_values().collect();
        // Every staging collection must still be the one this restore
        // filled before anything is swapped in or merged.
        if let Some(e) = staged.iter().find_map(|s| self.check_staging(s).err()) {
            self.drop_staging(staged.into_iter());
            return Err(e);
        }
        // A view never takes the place of a collection's data.
        if self.drop
            && let Some(e) = self
                .views
                .iter()
                .find_map(|(db, name, _)| self.view_blocked(db, name).err())
        {
            self.drop_staging(staged.into_iter());
            return Err(e);
        }
        // Every swap over an existing collection is tried on a probe first,
        // so a server that cannot do one refuses before anything is
        // replaced, not half-way through the commit.
        if self.drop && !self.unsafe_in_place {
            for s in staged.iter().filter(|s| s.staging.is_some()) {
                let blocked = self
                    .exists(&s.db, &s.name)
                    .and_then(|exists| if exists { self.swap_blocked(s) } else { Ok(None) });
                let refused = match blocked {
                    Ok(None) => continue,
                    Ok(Some(why)) => swap_refused(&format!("{}.{}", s.db, s.name), &why),
                    Err(e) => e,
                };
                self.drop_staging(staged.into_iter());
                return Err(refused);
            }
        }
        // A failure part-way says which collections are already restored.
        let mut done: Vec<String> = Vec::new();
        let mut rest = staged.into_iter();
        while let Some(s) = rest.next() {
            if let Err(e) = self.commit_one(&s, report) {
                let left: Vec<String> = std::iter::once(&s)
                    .chain(rest.as_slice())
                    .map(|s| format!("{}.{}", s.db, s.name))
                    .collect();
                self.drop_staging(std::iter::once(s).chain(rest));
                return Err(part_way(e, &done, &left));
            }
            done.push(format!("{}.{}", s.db, s.name));
        }
        let views = std::mem::take(&mut self.views);
        for (i, (db, name, meta)) in views.iter().enumerate() {
            if let Err(e) = self.commit_view(db, name, meta, report) {
                let left: Vec<String> = views[i..]
                    .iter()
                    .map(|(db, name, _)| format!("{db}.{name}"))
                    .collect();
                return Err(part_way(e, &done, &left));
            }
            done.push(format!("{db}.{name}"));
        }
        Ok(())
    }

    /// The error of the count checks that failed during the commit, raised
    /// once the oplog is replayed (a re-run cannot replay into collections
    /// this one created: they exist then).
    fn mismatch_error(&self) -> Option<Error> {
        if self.mismatches.is_empty() {
            return None;
        }
        Some(
            Error::new(
                ErrorKind::Integrity,
                format!("final count check failed: {}", self.mismatches.join("; ")),
            )
            .with_hint(
                "another client may be writing to these collections, or a unique index refused documents: check \
                 them and run the restore again (with --drop to replace them whole)",
            ),
        )
    }

    /// Counts the documents of `db.name`: by reading it, or from the
    /// collection's metadata (`estimatedDocumentCount`).
    fn count(&self, db: &str, name: &str, how: Count) -> Result<u64> {
        let coll = self.client.database(db).collection::<Document>(name);
        match how {
            Count::Read => self.run(coll.count_documents(doc! {})),
            Count::Metadata => self.run(coll.estimated_document_count()),
        }
        .map_err(|e| self.err(format!("cannot count `{db}.{name}`"), &e))
    }

    /// The report line of one collection, recording a failed count check.
    fn line(
        &mut self,
        s: &Staged,
        restored: u64,
        conflicts: u64,
        indexes: usize,
        expected: u64,
        how: Count,
    ) -> Result<String> {
        let ns = format!("{}.{}", s.db, s.name);
        let counted = self.count(&s.db, &s.name, how)?;
        let check = if counted == expected {
            format!("count {counted} ok")
        } else {
            self.mismatches
                .push(format!("`{ns}` holds {counted} documents, expected {expected}"));
            format!("count {counted} MISMATCH (expected {expected})")
        };
        Ok(format!(
            "{}: {restored} documents restored, {conflicts} conflicts, {indexes} indexes built, {check}",
            self.shown(s)
        ))
    }

    /// `db.coll`, or `from -> to` when renamed.
    fn shown(&self, s: &Staged) -> String {
        let ns = format!("{}.{}", s.db, s.name);
        if s.source == ns {
            ns
        } else {
            format!("{} -> {ns}", s.source)
        }
    }

    fn commit_one(&mut self, s: &Staged, report: &mut Tally) -> Result<()> {
        let ns = format!("{}.{}", s.db, s.name);
        let Some(staging) = &s.staging else {
            // Metadata without data (a dump of only metadata): nothing to swap.
            return Ok(());
        };
        // Again just before its swap: the pre-flight check was a moment ago.
        self.check_staging(s)?;
        let exists = self.exists(&s.db, &s.name)?;
        if self.drop || !exists {
            match self.rename(&s.db, &s.name, &s.metadata.options, staging, &ns) {
                Ok(()) => {
                    self.replayable.insert(ns.clone());
                    let line = self.line(s, s.documents, 0, s.indexes, s.documents, Count::Metadata)?;
                    report.add(if exists { "replace" } else { "create" }, line, s.documents, 0);
                    return Ok(());
                }
                // Created meanwhile: merge into it below.
                Err(RenameFailure::Exists) if !self.drop => {}
                Err(RenameFailure::Exists) => {
                    return Err(Error::new(
                        ErrorKind::Unexpected,
                        format!("cannot swap in `{ns}`: the server refused to replace it"),
                    ));
                }
                Err(RenameFailure::Unsupported(why)) if exists && !self.unsafe_in_place => {
                    return Err(swap_refused(&ns, &why));
                }
                // Nothing to lose (a new collection), or allowed by --unsafe-in-place.
                Err(RenameFailure::Unsupported(why)) => {
                    return self.in_place(s, staging, exists, &why, report);
                }
                Err(RenameFailure::Other(e)) => return Err(e),
            }
        }
        let before = self.count(&s.db, &s.name, Count::Read)?;
        let (copied, indexes, ttl) = self.merge(s, staging, &ns)?;
        let Copied {
            inserted,
            conflicts,
            refused,
        } = copied;
        if inserted + conflicts + refused != s.documents {
            self.mismatches.push(format!(
                "`{ns}`: {inserted} inserted + {conflicts} conflicts + {refused} refused != {} documents in the \
                 bundle",
                s.documents
            ));
        }
        if refused > 0 {
            self.mismatches.push(format!(
                "`{ns}`: {refused} documents of the snapshot were refused by a unique index other than `_id` (an \
                 existing document holds the same value) and are not in it"
            ));
        }
        let mut line = self.line(s, inserted, conflicts, indexes, before + inserted, Count::Read)?;
        line.push_str(" (conflicting _ids kept as they were)");
        if refused > 0 {
            line.push_str(&format!(", {refused} REFUSED by another unique index"));
        }
        if !ttl.is_empty() {
            line.push_str(&format!(
                ", TTL index {} not built on an existing collection (it would expire the documents kept; build \
                 it yourself)",
                ttl.join(", ")
            ));
        }
        report.add("insert", line, inserted, conflicts);
        Ok(())
    }

    /// Copies the staging collection into the existing one, insert-only.
    fn merge(&self, s: &Staged, staging: &str, ns: &str) -> Result<(Copied, usize, Vec<String>)> {
        let db = self.client.database(&s.db);
        // A TTL index would expire the existing documents an insert-only
        // merge promises to keep: those are left to the user.
        let (ttl, specs): (Vec<Document>, Vec<Document>) = s
            .metadata
            .indexes
            .iter()
            .cloned()
            .partition(|spec| spec.contains_key("expireAfterSeconds"));
        let ttl: Vec<String> = ttl
            .iter()
            .map(|spec| spec.get_str("name").unwrap_or("?").to_string())
            .collect();
        let indexes = match self.create_indexes(&s.db, &s.name, &specs, ns) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("{ns}: keeping the existing indexes: {e}");
                0
            }
        };
        let copied = self.copy(&s.db, staging, &s.name, ns)?;
        self.run(db.collection::<Document>(staging).drop())
            .map_err(|e| self.err(format!("cannot drop the staging collection of `{ns}`"), &e))?;
        Ok((copied, indexes, ttl))
    }

    /// Inserts the documents of `db.staging` into `db.name` (`ns`),
    /// unordered. A duplicate key is a conflict when a document with that
    /// `_id` exists; otherwise another unique index refused the document.
    fn copy(&self, db: &str, staging: &str, name: &str, ns: &str) -> Result<Copied> {
        let db = self.client.database(db);
        let target: Collection<RawDocumentBuf> = db.collection(name);
        let from: Collection<RawDocumentBuf> = db.collection(staging);
        let mut cursor = self
            .run(from.find(doc! {}).batch_size(BATCH_DOCS as u32))
            .map_err(|e| self.err(format!("cannot read the staging collection of `{ns}`"), &e))?;
        let mut copied = Copied::default();
        let mut batch = Vec::with_capacity(BATCH_DOCS);
        loop {
            let next = self
                .handle
                .block_on(cursor.try_next())
                .map_err(|e| self.err(format!("cannot read the staging collection of `{ns}`"), &e))?;
            let done = next.is_none();
            if let Some(doc) = next {
                batch.push(doc);
            }
            if batch.len() >= BATCH_DOCS || (done && !batch.is_empty()) {
                let n = batch.len() as u64;
                match self.run(target.insert_many(batch.iter()).ordered(false)) {
                    Ok(_) => copied.inserted += n,
                    Err(e) => match duplicate_positions(&e) {
                        Some(positions) => {
                            let d = positions.len() as u64;
                            let ids: Vec<Bson> = positions
                                .iter()
                                .filter_map(|&i| batch.get(i)?.get("_id").ok().flatten())
                                .filter_map(|id| Bson::try_from(id.to_raw_bson()).ok())
                                .collect();
                            let filter = doc! { "_id": { "$in": ids } };
                            let existing = self
                                .run(target.count_documents(filter))
                                .map_err(|e| self.err(format!("cannot count the conflicts in `{ns}`"), &e))?;
                            copied.inserted += n - d;
                            copied.conflicts += existing.min(d);
                            copied.refused += d - existing.min(d);
                        }
                        None => return Err(self.err(format!("cannot insert into `{ns}`"), &e)),
                    },
                }
                batch.clear();
            }
            if done {
                break;
            }
        }
        Ok(copied)
    }

    /// The type `listCollections` gives `db.name` (`collection`, `view`,
    /// …), or `None` when it does not exist.
    fn kind_of(&self, db: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .listed(db, name)?
            .map(|spec| spec.get_str("type").unwrap_or("collection").to_string()))
    }

    /// Fails when the view `db.name` would replace something that is not
    /// a view (a collection's documents would be lost).
    fn view_blocked(&self, db: &str, name: &str) -> Result<()> {
        match self.kind_of(db, name)?.as_deref() {
            None | Some("view") => Ok(()),
            Some(kind) => Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "`{db}.{name}` is a view in the snapshot but a {kind} on the server; --drop does not replace \
                     a {kind}'s documents with a view, so nothing was restored"
                ),
            )
            .with_hint(format!(
                "rename or drop `{db}.{name}` on the server yourself, or leave it out with --ns-exclude '{db}.{name}'"
            ))),
        }
    }

    fn commit_view(&mut self, db: &str, name: &str, meta: &Metadata, report: &mut Tally) -> Result<()> {
        if self.drop {
            // Probe views a killed restore left.
            self.drop_stale_staging(db, name)?;
        }
        let ns = format!("{db}.{name}");
        let database = self.client.database(db);
        let create = |as_name: &str| {
            let mut create = doc! { "create": as_name };
            for (k, v) in &meta.options {
                create.insert(k.clone(), v.clone());
            }
            self.run(database.run_command(create))
                .map_err(|e| self.err(format!("cannot create view `{ns}`"), &e))
        };
        if self.exists(db, name)? {
            if !self.drop {
                report.add("keep-view", format!("{ns} (exists; --drop replaces it)"), 0, 1);
                return Ok(());
            }
            self.view_blocked(db, name)?;
            // The new definition is tried under a probe name first, so a
            // server that refuses it leaves the old view in place.
            let probe = staging_name(db, name, &self.suffix);
            create(&probe)?;
            self.run(database.collection::<Document>(&probe).drop())
                .map_err(|e| self.err(format!("cannot drop the probe view `{db}.{probe}`"), &e))?;
            self.run(database.collection::<Document>(name).drop())
                .map_err(|e| self.err(format!("cannot drop view `{ns}`"), &e))?;
        }
        create(name)?;
        report.add("create-view", ns, 0, 0);
        Ok(())
    }

    /// What a commit would do (dry run or abort).
    fn plan(&self, report: &mut Tally) -> Result<()> {
        for s in self.staged.values() {
            let exists = self.exists(&s.db, &s.name)?;
            let action = match (exists, self.drop) {
                (false, _) => "create",
                (true, true) => "replace",
                (true, false) => "insert",
            };
            report.add(
                action,
                format!("{} ({} documents)", self.shown(s), s.documents),
                s.documents,
                0,
            );
        }
        for (db, name, _) in &self.views {
            let exists = self.exists(db, name)?;
            if exists && self.drop && self.dry_run {
                // The commit would refuse it: so does the dry run.
                self.view_blocked(db, name)?;
            }
            let action = if exists && !self.drop {
                "keep-view"
            } else {
                "create-view"
            };
            report.add(action, format!("{db}.{name}"), 0, 0);
        }
        Ok(())
    }

    fn drop_staging(&self, staged: impl Iterator<Item = Staged>) {
        for s in staged {
            if let Some(staging) = &s.staging {
                let coll = self.client.database(&s.db).collection::<Document>(staging);
                if let Err(e) = self.run(coll.drop()) {
                    tracing::warn!(
                        "cannot drop the staging collection {}.{staging}: {}; drop it by hand",
                        s.db,
                        crate::uri::scrub(&e.to_string(), &self.uri)
                    );
                }
            }
        }
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
            if let Some(body) = self.oplog.take() {
                self.replay(body, &mut tally)?;
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

impl MongoRestorer {
    /// Keeps the bundle's oplog (memory, or an encrypted temp file) until
    /// the collections are in place.
    fn oplog_entry(&mut self, reader: &mut dyn Read, size: u64) -> Result<()> {
        if self.oplog.is_some() {
            return Err(malformed("the bundle holds the oplog twice", OPLOG_FILE));
        }
        let mut spill = Spill::new(8 << 20);
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(left as usize);
            read_exact(reader, &mut buf[..want])?;
            spill
                .write(&buf[..want])
                .map_err(|e| Error::io("cannot buffer the oplog in an encrypted temp file", e))?;
            left -= want as u64;
        }
        self.oplog = Some(
            spill
                .finish()
                .map_err(|e| Error::io("cannot buffer the oplog", e))?,
        );
        Ok(())
    }

    /// Replays the oplog entries as ordinary writes, after the collections
    /// are in place, honouring the namespace rules.
    fn replay(&self, body: SpillBody, tally: &mut Tally) -> Result<()> {
        let SpillBody { size, mut reader, .. } = body;
        let (mut applied, mut left_out, mut kept) = (0u64, 0u64, 0u64);
        let mut notes: BTreeMap<String, u64> = BTreeMap::new();
        let mut state: BTreeMap<String, bool> = BTreeMap::new();
        let mut last = None;
        read_documents(&mut *reader, size, OPLOG_FILE, |entry| {
            self.cancel.check()?;
            if let Ok(ts) = entry.get_timestamp("ts") {
                last = Some(ts);
            }
            for (db, coll, w) in oplog::writes(&entry)? {
                if let Write::Skip(why) = w {
                    *notes.entry(why).or_default() += 1;
                    continue;
                }
                let Some((tdb, tcoll)) = self.rules.map(&db, &coll)? else {
                    left_out += 1;
                    continue;
                };
                let ns = format!("{tdb}.{tcoll}");
                if is_staging(&tcoll) {
                    // A restore that ran on the source during the dump.
                    *notes
                        .entry("writes of a restore's staging collection are not replayed".into())
                        .or_default() += 1;
                    continue;
                }
                let ok = match state.get(&ns) {
                    Some(ok) => *ok,
                    None => {
                        // Created or replaced by this restore, or new to
                        // the server; never an existing collection this
                        // restore did not replace: one merged into
                        // (insert-only keeps its documents), or, with
                        // --drop, one the snapshot holds no data of (made
                        // during the dump, or metadata only), which was
                        // not swapped and so has no staging copy behind it.
                        let ok = self.replayable.contains(&ns)
                            || (!self.targets.contains_key(&ns) && !self.exists(&tdb, &tcoll)?);
                        state.insert(ns.clone(), ok);
                        ok
                    }
                };
                if !ok {
                    kept += 1;
                    continue;
                }
                self.apply(&tdb, &tcoll, w).map_err(|e| {
                    e.with_hint(
                        "the collections are restored as of the dump's start; the oplog replay stopped \
                         part-way: run the restore again with --drop",
                    )
                })?;
                applied += 1;
            }
            Ok(())
        })?;
        if last.is_none() {
            // No write during the dump: the collections are the point in time.
            return Ok(());
        }
        let mut target = format!("{applied} oplog writes replayed");
        if let Some(ts) = last {
            target.push_str(&format!(
                " (point in time {{t: {}, i: {}}})",
                ts.time, ts.increment
            ));
        }
        if left_out > 0 {
            target.push_str(&format!(", {left_out} left out by --ns-include/--ns-exclude"));
        }
        if kept > 0 && self.drop {
            target.push_str(&format!(
                ", {kept} not replayed on existing collections the snapshot holds no data of (their documents \
                 kept; drop them first to restore them as of the point in time)"
            ));
        } else if kept > 0 {
            target.push_str(&format!(
                ", {kept} not replayed on collections merged into (existing documents kept; --drop restores \
                 the point in time)"
            ));
        }
        for (why, n) in notes {
            target.push_str(&format!(", {n}× {why}"));
        }
        tally.actions.push(RestoreAction {
            action: "replay-oplog".into(),
            target,
        });
        tally.replayed = Some(applied);
        Ok(())
    }

    /// One replayed write.
    fn apply(&self, db: &str, coll: &str, w: Write) -> Result<()> {
        let ns = format!("{db}.{coll}");
        let c: Collection<RawDocumentBuf> = self.client.database(db).collection(coll);
        let fail = |e: mongodb::error::Error| self.err(format!("cannot replay the oplog on `{ns}`"), &e);
        match w {
            Write::Upsert { filter, doc } => {
                self.run(c.replace_one(filter, doc).upsert(true)).map_err(fail)?;
            }
            Write::Update { filter, updates } => {
                for u in updates {
                    self.run(c.update_one(filter.clone(), u)).map_err(fail)?;
                }
            }
            Write::Delete { filter } => {
                self.run(c.delete_one(filter)).map_err(fail)?;
            }
            Write::Create { options } => {
                if !self.exists(db, coll)? {
                    let mut create = doc! { "create": coll };
                    create.extend(options);
                    self.run(self.client.database(db).run_command(create))
                        .map_err(fail)?;
                }
            }
            Write::Drop => {
                self.run(c.drop()).map_err(fail)?;
            }
            Write::Skip(_) => {}
        }
        Ok(())
    }
}

/// Why a `renameCollection` failed.
enum RenameFailure {
    /// The target exists (and `dropTarget` was off).
    Exists,
    /// The server cannot rename collections; why, password-free.
    Unsupported(String),
    Other(Error),
}

/// Why a batch insert failed.
enum InsertFailure {
    Driver(mongodb::error::Error),
    /// The insert task was cancelled (the runtime is shutting down).
    Stopped,
}

/// Unordered bulk inserts into one collection, up to [`IN_FLIGHT`] batches
/// at once, driven from the restore's blocking thread. Dropping it waits
/// for the batches still in flight.
struct Inserts {
    handle: Handle,
    coll: Collection<RawDocumentBuf>,
    pending: std::collections::VecDeque<tokio::task::JoinHandle<mongodb::error::Result<u64>>>,
    inserted: u64,
}

impl Inserts {
    fn new(handle: Handle, coll: Collection<RawDocumentBuf>) -> Self {
        Inserts {
            handle,
            coll,
            pending: Default::default(),
            inserted: 0,
        }
    }

    /// Sends `batch`, first waiting for the oldest batch when
    /// [`IN_FLIGHT`] are under way.
    fn send(&mut self, batch: Vec<RawDocumentBuf>) -> std::result::Result<(), InsertFailure> {
        if self.pending.len() >= IN_FLIGHT {
            self.wait_one()?;
        }
        let coll = self.coll.clone();
        self.pending.push_back(self.handle.spawn(async move {
            let n = batch.len() as u64;
            coll.insert_many(batch).ordered(false).await.map(|_| n)
        }));
        Ok(())
    }

    fn wait_one(&mut self) -> std::result::Result<(), InsertFailure> {
        let Some(task) = self.pending.pop_front() else {
            return Ok(());
        };
        match self.handle.block_on(task) {
            Ok(Ok(n)) => {
                self.inserted += n;
                Ok(())
            }
            Ok(Err(e)) => Err(InsertFailure::Driver(e)),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(InsertFailure::Stopped),
        }
    }

    /// Waits for every batch in flight and returns the documents inserted;
    /// the first failure wins.
    fn wait_all(&mut self) -> std::result::Result<u64, InsertFailure> {
        let mut first = None;
        while !self.pending.is_empty() {
            if let Err(e) = self.wait_one() {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(self.inserted),
        }
    }
}

impl Drop for Inserts {
    fn drop(&mut self) {
        let _ = self.wait_all();
    }
}

/// Whether `candidate` is a staging collection of `name` (of any restore):
/// `<name>.coffer-staging-<8 hex>`, or for long names
/// `coffer-staging-<8 hex>-<hash of name>` (see [`staging_name`]).
fn is_staging_of(candidate: &str, name: &str) -> bool {
    let hex8 = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(rest) = candidate
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_prefix(STAGING_TAG))
        && hex8(rest)
    {
        return true;
    }
    let Some((random, hash)) = candidate
        .strip_prefix(STAGING_TAG)
        .and_then(|r| r.split_once('-'))
    else {
        return false;
    };
    hex8(random) && hash == name_hash(name)
}

/// Whether `name` is a staging collection of any restore (see
/// [`staging_name`]): such collections are never dumped.
pub(crate) fn is_staging(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some((_, random)) = name.rsplit_once(&format!(".{STAGING_TAG}"))
        && hex(random, 8)
    {
        return true;
    }
    name.strip_prefix(STAGING_TAG)
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(random, hash)| hex(random, 8) && hex(hash, 16))
}

fn name_hash(name: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(name.as_bytes());
    hex::encode(&hash[..8])
}

/// The staging collection of `db.name`: `<name>.<suffix>`, or, when that
/// namespace would pass the server's 255-byte limit (collection names of
/// 200+ characters), `<suffix>-<hash of the name>`.
fn staging_name(db: &str, name: &str, suffix: &str) -> String {
    let full = format!("{name}.{suffix}");
    if db.len() + 1 + full.len() <= 255 {
        return full;
    }
    format!("{suffix}-{}", name_hash(name))
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

/// How many write errors of an unordered insert are duplicate keys, if all
/// of them are.
/// The positions in the batch of the documents an unordered insert
/// refused, when every refusal was a duplicate key.
fn duplicate_positions(e: &mongodb::error::Error) -> Option<Vec<usize>> {
    match e.kind.as_ref() {
        DriverKind::InsertMany(m) if m.write_concern_error.is_none() => {
            let errors = m.write_errors.as_ref()?;
            errors
                .iter()
                .all(|w| w.code == DUPLICATE_KEY)
                .then(|| errors.iter().map(|w| w.index).collect())
        }
        _ => None,
    }
}

fn duplicate_only(e: &mongodb::error::Error) -> bool {
    duplicate_positions(e).is_some()
}

/// `e`, naming what a commit that failed part-way had already restored
/// and what it had not.
fn part_way(e: Error, done: &[String], left: &[String]) -> Error {
    if done.is_empty() {
        return e;
    }
    e.with_context("already restored", done.join(", "))
        .with_context("not restored", left.join(", "))
}

/// What an insert-only merge did with the snapshot's documents.
#[derive(Default)]
struct Copied {
    inserted: u64,
    /// Kept: a document with the same `_id` exists.
    conflicts: u64,
    /// Refused by another unique index.
    refused: u64,
}

fn malformed(what: &str, path: &str) -> Error {
    Error::new(ErrorKind::Integrity, what.to_string())
        .with_context("path", path)
        .with_hint("the bundle or dump is damaged; restore another snapshot")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_recognised_and_look_alikes_are_not() {
        let short = staging_name("app", "users", "coffer-staging-0badf00d");
        assert_eq!(short, "users.coffer-staging-0badf00d");
        let long_name = "x".repeat(250);
        let long = staging_name("app", &long_name, "coffer-staging-0badf00d");
        assert!(
            long.starts_with("coffer-staging-0badf00d-") && long.len() < 60,
            "{long}"
        );
        for name in [&short, &long] {
            assert!(is_staging(name), "{name}");
        }
        assert!(is_staging_of(&short, "users") && is_staging_of(&long, &long_name));
        assert!(!is_staging_of(&short, "users2") && !is_staging_of(&long, "users"));
        for name in [
            "users",
            "users.coffer-staging-notes",
            "users.coffer-staging-0badf00",
            "users.coffer-staging-0badf00dd",
            "coffer-staging-0badf00d",
            "coffer-staging-0badf00d-notahash",
        ] {
            assert!(!is_staging(name), "{name}");
        }
    }
}

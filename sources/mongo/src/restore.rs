//! [`MongoRestorer`]: restores collections through staging collections,
//! so a failed or interrupted restore never leaves a half-restored one.
//!
//! Runs on the restore's blocking thread and drives the async driver with
//! `Handle::block_on`. Each collection is created as
//! `<name>.coffer-staging-<random>` with its options, filled with unordered
//! bulk inserts of the raw documents (never decoded), given its indexes
//! from the metadata and counted against the bundle. `finish(true)` swaps
//! each one in with `renameCollection` (`dropTarget` with `--drop`);
//! without `--drop` an existing collection only gains the documents whose
//! `_id` it lacks, the others counted as conflicts, never overwritten.
//! `finish(false)` drops every staging collection.

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
use crate::spill::{Spill, SpillBody};
use crate::uri::redact;

/// Largest BSON document a server accepts, plus room for its envelope.
const MAX_DOCUMENT: usize = 16 * 1024 * 1024 + 16 * 1024;
/// Documents per insert batch.
const BATCH_DOCS: usize = 1000;
/// Bytes per insert batch.
const BATCH_BYTES: usize = 8 << 20;
/// Largest metadata file read.
const MAX_METADATA: u64 = 16 << 20;

/// One collection staged (or, in a dry run, counted).
struct Staged {
    /// `db.collection` in the bundle (before any `--ns-from` renaming).
    source: String,
    /// Target database and collection.
    db: String,
    name: String,
    /// The staging collection; `None` in a dry run or before the data.
    staging: Option<String>,
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
    dry_run: bool,
    cancel: CancelFlag,
    suffix: String,
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
                    "cannot reach the MongoDB server to restore into",
                    &e,
                    &uri,
                    &redact(&uri),
                )
            })?;
        Ok(MongoRestorer {
            handle: Handle::current(),
            client,
            uri,
            drop,
            dry_run: opts.dry_run,
            cancel: opts.cancel.clone(),
            suffix: format!("coffer-staging-{:08x}", rand::random::<u32>()),
            staged: BTreeMap::new(),
            views: Vec::new(),
            rules,
            skipped: BTreeMap::new(),
            targets: BTreeMap::new(),
            mismatches: Vec::new(),
            oplog: None,
            replayable: BTreeSet::new(),
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
        let result = self.load(&mut staged, entry.reader, size, &path);
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
        let coll: Collection<RawDocumentBuf> = db.collection(&staging);
        let mut batch: Vec<RawDocumentBuf> = Vec::with_capacity(BATCH_DOCS);
        let mut batch_bytes = 0;
        let mut inserted = 0u64;
        let flush = |batch: &mut Vec<RawDocumentBuf>, inserted: &mut u64| -> Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            self.cancel.check()?;
            self.run(coll.insert_many(batch.iter()).ordered(false))
                .map_err(|e| {
                    if duplicate_only(&e) {
                        malformed("the bundle holds two documents with the same _id", path)
                    } else {
                        self.err(format!("cannot insert into the staging collection of `{ns}`"), &e)
                    }
                })?;
            *inserted += batch.len() as u64;
            batch.clear();
            Ok(())
        };
        let documents = read_documents(reader, size, path, |doc| {
            batch_bytes += doc.as_bytes().len();
            batch.push(doc);
            if batch.len() >= BATCH_DOCS || batch_bytes >= BATCH_BYTES {
                flush(&mut batch, &mut inserted)?;
                batch_bytes = 0;
            }
            Ok(())
        })?;
        flush(&mut batch, &mut inserted)?;
        staged.documents = documents;
        staged.indexes = self.create_indexes(&staged.db, &staging, &staged.metadata.indexes, &ns)?;
        let counted = self
            .run(coll.count_documents(doc! {}))
            .map_err(|e| self.err(format!("cannot count the staging collection of `{ns}`"), &e))?;
        if counted != documents || inserted != documents {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!("`{ns}`: the staging collection holds {counted} documents, the bundle {documents}"),
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
        let mut rest = staged.into_iter();
        while let Some(s) = rest.next() {
            if let Err(e) = self.commit_one(&s, report) {
                self.drop_staging(std::iter::once(s).chain(rest));
                return Err(e);
            }
        }
        for (db, name, meta) in std::mem::take(&mut self.views) {
            self.commit_view(&db, &name, &meta, report)?;
        }
        if !self.mismatches.is_empty() {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!("final count check failed: {}", self.mismatches.join("; ")),
            )
            .with_hint(
                "another client may be writing to these collections; check them and run the restore again \
                 (with --drop to replace them whole)",
            ));
        }
        Ok(())
    }

    /// Counts the documents of `db.name`.
    fn count(&self, db: &str, name: &str) -> Result<u64> {
        self.run(
            self.client
                .database(db)
                .collection::<Document>(name)
                .count_documents(doc! {}),
        )
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
    ) -> Result<String> {
        let ns = format!("{}.{}", s.db, s.name);
        let counted = self.count(&s.db, &s.name)?;
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
        let exists = self.exists(&s.db, &s.name)?;
        if self.drop || !exists {
            let cmd = doc! {
                "renameCollection": format!("{}.{staging}", s.db),
                "to": &ns,
                "dropTarget": self.drop,
            };
            match self.run(self.client.database("admin").run_command(cmd)) {
                Ok(_) => {
                    self.replayable.insert(ns.clone());
                    let line = self.line(s, s.documents, 0, s.indexes, s.documents)?;
                    report.add(if exists { "replace" } else { "create" }, line, s.documents, 0);
                    return Ok(());
                }
                // Created meanwhile: merge into it below.
                Err(e) if code(&e) == Some(48) && !self.drop => {}
                Err(e) => return Err(self.err(format!("cannot swap in `{ns}`"), &e)),
            }
        }
        let before = self.count(&s.db, &s.name)?;
        let (inserted, conflicts, indexes) = self.merge(s, staging, &ns)?;
        if inserted + conflicts != s.documents {
            self.mismatches.push(format!(
                "`{ns}`: {inserted} inserted + {conflicts} conflicts != {} documents in the bundle",
                s.documents
            ));
        }
        let line = self.line(s, inserted, conflicts, indexes, before + inserted)?;
        report.add(
            "insert",
            format!("{line} (conflicting _ids kept as they were)"),
            inserted,
            conflicts,
        );
        Ok(())
    }

    /// Copies the staging collection into the existing one, insert-only.
    fn merge(&self, s: &Staged, staging: &str, ns: &str) -> Result<(u64, u64, usize)> {
        let db = self.client.database(&s.db);
        let target: Collection<RawDocumentBuf> = db.collection(&s.name);
        let indexes = match self.create_indexes(&s.db, &s.name, &s.metadata.indexes, ns) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("{ns}: keeping the existing indexes: {e}");
                0
            }
        };
        let from: Collection<RawDocumentBuf> = db.collection(staging);
        let mut cursor = self
            .run(from.find(doc! {}).batch_size(BATCH_DOCS as u32))
            .map_err(|e| self.err(format!("cannot read the staging collection of `{ns}`"), &e))?;
        let (mut inserted, mut conflicts) = (0u64, 0u64);
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
                    Ok(_) => inserted += n,
                    Err(e) => match duplicates(&e) {
                        Some(d) => {
                            conflicts += d;
                            inserted += n - d;
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
        self.run(from.drop())
            .map_err(|e| self.err(format!("cannot drop the staging collection of `{ns}`"), &e))?;
        Ok((inserted, conflicts, indexes))
    }

    fn commit_view(&self, db: &str, name: &str, meta: &Metadata, report: &mut Tally) -> Result<()> {
        let ns = format!("{db}.{name}");
        let database = self.client.database(db);
        if self.exists(db, name)? {
            if !self.drop {
                report.add("keep-view", format!("{ns} (exists; --drop replaces it)"), 0, 1);
                return Ok(());
            }
            self.run(database.collection::<Document>(name).drop())
                .map_err(|e| self.err(format!("cannot drop view `{ns}`"), &e))?;
        }
        let mut create = doc! { "create": name };
        for (k, v) in &meta.options {
            create.insert(k.clone(), v.clone());
        }
        self.run(database.run_command(create))
            .map_err(|e| self.err(format!("cannot create view `{ns}`"), &e))?;
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
                let ok = match state.get(&ns) {
                    Some(ok) => *ok,
                    None => {
                        // Created or replaced by this restore, or new to
                        // the server; never an existing collection that
                        // was merged into (insert-only keeps its documents).
                        let ok = self.drop
                            || self.replayable.contains(&ns)
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
        if kept > 0 {
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

/// The staging collection of `db.name`: `<name>.<suffix>`, or, when that
/// namespace would pass the server's 255-byte limit (collection names of
/// 200+ characters), `<suffix>-<hash of the name>`.
fn staging_name(db: &str, name: &str, suffix: &str) -> String {
    let full = format!("{name}.{suffix}");
    if db.len() + 1 + full.len() <= 255 {
        return full;
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(name.as_bytes());
    format!("{suffix}-{}", hex::encode(&hash[..8]))
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
fn duplicates(e: &mongodb::error::Error) -> Option<u64> {
    match e.kind.as_ref() {
        DriverKind::InsertMany(m) if m.write_concern_error.is_none() => {
            let errors = m.write_errors.as_ref()?;
            errors
                .iter()
                .all(|w| w.code == DUPLICATE_KEY)
                .then_some(errors.len() as u64)
        }
        _ => None,
    }
}

fn duplicate_only(e: &mongodb::error::Error) -> bool {
    duplicates(e).is_some()
}

fn malformed(what: &str, path: &str) -> Error {
    Error::new(ErrorKind::Integrity, what.to_string())
        .with_context("path", path)
        .with_hint("the bundle or dump is damaged; restore another snapshot")
}

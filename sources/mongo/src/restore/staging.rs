//! Staging: each collection of the bundle into a staging collection
//! (`<name>.coffer-staging-<random>`) with its options, documents and
//! indexes, counted; stale staging collections of killed restores dropped;
//! the dry-run plan.

use super::*;

impl MongoRestorer {
    pub(super) fn metadata_entry(
        &mut self,
        db: &str,
        stem: &str,
        entry: RestoreEntry<'_>,
        size: u64,
    ) -> Result<()> {
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
                marker: None,
                metadata: meta,
                documents: 0,
                indexes: 0,
                loaded: false,
            },
        );
        Ok(())
    }

    pub(super) fn bson_entry(
        &mut self,
        db: &str,
        stem: &str,
        entry: RestoreEntry<'_>,
        size: u64,
    ) -> Result<()> {
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
                    marker: None,
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
    pub(super) fn target(&mut self, db: &str, name: &str, path: &str) -> Result<Option<(String, String)>> {
        let Some((tdb, tname)) = self.rules.map(db, name)? else {
            return Ok(None);
        };
        let source = format!("{db}.{name}");
        let target = format!("{tdb}.{tname}");
        if tdb.len() > MAX_DB_NAME {
            return Err(coffer_core::config_error(format!(
                "`{db}` would be restored as database `{tdb}`, {} bytes long: MongoDB allows at most {MAX_DB_NAME}",
                tdb.len()
            ))
            .with_context("path", path)
            .with_hint("give a shorter --ns-to (or --scratch-suffix for a drill)"));
        }
        if self.new_databases_only && !self.dry_run && self.checked_dbs.insert(tdb.clone()) {
            let existing = self
                .run(self.client.list_database_names())
                .map_err(|e| self.err("cannot list the server's databases", &e))?;
            if existing.iter().any(|d| d == &tdb) {
                return Err(coffer_core::config_error(format!(
                    "database `{tdb}` exists already on the server; this restore only writes databases it creates, \
                     so nothing was written into it"
                ))
                .with_hint(
                    "a drill never drops or replaces a database it did not create: pick another --scratch-suffix, \
                     or drop `{tdb}` by hand if it is a scratch copy a `drill --keep` left",
                )
                .with_context("database", tdb));
            }
        }
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
    pub(super) fn load(
        &self,
        staged: &mut Staged,
        reader: &mut dyn Read,
        size: u64,
        path: &str,
    ) -> Result<()> {
        if staged.loaded {
            return Err(malformed("the bundle holds a collection twice", path));
        }
        staged.loaded = true;
        let ns = format!("{}.{}", staged.db, staged.name);
        if self.dry_run {
            staged.documents = read_documents(reader, size, path, |_| Ok(()))?;
            return Ok(());
        }
        let staging = self.create_staging(staged, &ns)?;
        staged.staging = Some(staging.clone());
        staged.staging_uuid = self.uuid_of(&staged.db, &staging)?;
        let coll: Collection<RawDocumentBuf> = self.client.database(&staged.db).collection(&staging);
        let (documents, inserted) = self.insert_all(coll, reader, size, path, &ns)?;
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

    /// Creates the collection `staged` loads into (the target itself, marked, or a staging one); its name.
    fn create_staging(&self, staged: &mut Staged, ns: &str) -> Result<String> {
        let staging = match self.create_direct(staged, ns)? {
            Some(marker) => {
                staged.marker = Some(marker);
                staged.name.clone()
            }
            None => {
                let db = self.client.database(&staged.db);
                let staging = staging_name(&staged.db, &staged.name, &self.suffix);
                let mut create = doc! { "create": &staging };
                for (k, v) in &staged.metadata.options {
                    create.insert(k.clone(), v.clone());
                }
                self.run(db.run_command(create))
                    .map_err(|e| self.err(format!("cannot create a staging collection for `{ns}`"), &e))?;
                staging
            }
        };
        Ok(staging)
    }

    /// Inserts the documents of `reader` into `coll` in batches; returns those read and those acknowledged.
    fn insert_all(
        &self,
        coll: Collection<RawDocumentBuf>,
        reader: &mut dyn Read,
        size: u64,
        path: &str,
        ns: &str,
    ) -> Result<(u64, u64)> {
        let insert_error = |e: &InsertFailure| match e {
            InsertFailure::Driver(e) if duplicate_only(e) => {
                malformed("the bundle holds two documents with the same _id", path)
            }
            InsertFailure::Driver(e) => {
                self.err(format!("cannot insert into the staging collection of `{ns}`"), e)
            }
            InsertFailure::Stopped => Error::new(ErrorKind::Cancelled, "the restore stopped"),
        };
        let mut inserts = Inserts::new(self.handle.clone(), coll);
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
        Ok((documents, inserted))
    }

    /// A collection that does not exist on the server yet is loaded in
    /// place: staging and a rename would only copy the data again (on
    /// secantusd-py a rename copies every document), and a fresh server is
    /// the disaster-recovery case where time counts most. The target is
    /// created under its own name; a marker collection
    /// `<name>.coffer-restoring-<random>` then says the load is unfinished
    /// until the commit drops it: an abort drops the target with it, and a
    /// later restore that finds a marker drops both
    /// ([`Self::drop_stale_staging`]), so a half-loaded collection is never
    /// taken for restored data. Returns the marker, or `None` when the
    /// collection exists (then it is staged and swapped as before).
    fn create_direct(&self, staged: &Staged, ns: &str) -> Result<Option<String>> {
        // `create` is idempotent on servers where creating an existing
        // collection with the same options succeeds (mongod 7+,
        // secantusd-py), so the name is checked first: only a collection
        // that did not exist is ever loaded in place, marked, and dropped
        // on an abort. (A client creating the same collection in the
        // moment between the two calls is not told from this restore.)
        if self.stage_always || self.exists(&staged.db, &staged.name)? {
            return Ok(None);
        }
        let db = self.client.database(&staged.db);
        let mut create = doc! { "create": &staged.name };
        for (k, v) in &staged.metadata.options {
            create.insert(k.clone(), v.clone());
        }
        match self.run(db.run_command(create)) {
            Ok(_) => {}
            Err(e) if code(&e) == Some(NAMESPACE_EXISTS) => return Ok(None),
            Err(e) => return Err(self.err(format!("cannot create `{ns}`"), &e)),
        }
        let marker = staging_name(
            &staged.db,
            &staged.name,
            &format!("{MARKER_TAG}{:08x}", rand::random::<u32>()),
        );
        if let Err(e) = self.run(db.run_command(doc! { "create": &marker })) {
            let _ = self.run(db.collection::<Document>(&staged.name).drop());
            return Err(self.err(format!("cannot create the restore marker of `{ns}`"), &e));
        }
        Ok(Some(marker))
    }

    /// Builds the indexes of `indexes` (except `_id_`) on `coll`, keeping
    /// each spec verbatim but for the obsolete `ns` field; returns how many.
    pub(super) fn create_indexes(
        &self,
        db: &str,
        coll: &str,
        indexes: &[Document],
        ns: &str,
    ) -> Result<usize> {
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
    pub(super) fn drop_stale_staging(&mut self, db: &str, name: &str) -> Result<()> {
        let database = self.client.database(db);
        let names = self
            .run(database.list_collection_names())
            .map_err(|e| self.err(format!("cannot list the collections of `{db}`"), &e))?;
        // A marker: `name` itself is what an unfinished direct load left.
        if let Some(marker) = names.iter().find(|n| is_marker_of(n, name)) {
            tracing::warn!(
                "{db}.{name}: dropping it, the unfinished load of an interrupted restore ({marker})"
            );
            self.run(database.collection::<Document>(name).drop())
                .map_err(|e| {
                    self.err(
                        format!("cannot drop `{db}.{name}`, left half-loaded by an interrupted restore"),
                        &e,
                    )
                })?;
            self.stale.push(format!("{db}.{name}"));
        }
        for stale in names
            .iter()
            .filter(|n| is_staging_of(n, name) || is_marker_of(n, name))
        {
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

    /// Fails unless `s`'s staging collection is still the one this restore
    /// created and filled.
    pub(super) fn check_staging(&self, s: &Staged) -> Result<()> {
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

    /// What a commit would do (dry run or abort).
    pub(super) fn plan(&self, report: &mut Tally) -> Result<()> {
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

    pub(super) fn drop_staging(&self, staged: impl Iterator<Item = Staged>) {
        for s in staged {
            // A direct load: its staging collection is the target this
            // restore created, dropped with its marker.
            if let Some(marker) = &s.marker {
                let _ = self.run(self.client.database(&s.db).collection::<Document>(marker).drop());
            }
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

/// Why a batch insert failed.
pub(super) enum InsertFailure {
    Driver(mongodb::error::Error),
    /// The insert task was cancelled (the runtime is shutting down).
    Stopped,
}

/// Unordered bulk inserts into one collection, up to [`IN_FLIGHT`] batches
/// at once, driven from the restore's blocking thread. Dropping it waits
/// for the batches still in flight.
pub(super) struct Inserts {
    pub(super) handle: Handle,
    pub(super) coll: Collection<RawDocumentBuf>,
    pub(super) pending: std::collections::VecDeque<tokio::task::JoinHandle<mongodb::error::Result<u64>>>,
    pub(super) inserted: u64,
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
pub(super) fn is_staging_of(candidate: &str, name: &str) -> bool {
    is_tagged_of(candidate, name, STAGING_TAG)
}

/// Whether `candidate` is the marker of an unfinished direct load of
/// `name` (see [`MARKER_TAG`]).
pub(super) fn is_marker_of(candidate: &str, name: &str) -> bool {
    is_tagged_of(candidate, name, MARKER_TAG)
}

fn is_tagged_of(candidate: &str, name: &str, tag: &str) -> bool {
    let hex8 = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(rest) = candidate
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_prefix(tag))
        && hex8(rest)
    {
        return true;
    }
    let Some((random, hash)) = candidate.strip_prefix(tag).and_then(|r| r.split_once('-')) else {
        return false;
    };
    hex8(random) && hash == name_hash(name)
}

/// Whether `name` is a staging collection of any restore (see
/// [`staging_name`]): such collections are never dumped.
pub(crate) fn is_staging(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    [STAGING_TAG, MARKER_TAG].iter().any(|tag| {
        if let Some((_, random)) = name.rsplit_once(&format!(".{tag}"))
            && hex(random, 8)
        {
            return true;
        }
        name.strip_prefix(tag)
            .and_then(|r| r.split_once('-'))
            .is_some_and(|(random, hash)| hex(random, 8) && hex(hash, 16))
    })
}

pub(super) fn name_hash(name: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(name.as_bytes());
    hex::encode(&hash[..8])
}

/// The staging collection of `db.name`: `<name>.<suffix>`, or, when that
/// namespace would pass the server's 255-byte limit (collection names of
/// 200+ characters), `<suffix>-<hash of the name>`.
pub(super) fn staging_name(db: &str, name: &str, suffix: &str) -> String {
    let full = format!("{name}.{suffix}");
    if db.len() + 1 + full.len() <= 255 {
        return full;
    }
    format!("{suffix}-{}", name_hash(name))
}

/// How many write errors of an unordered insert are duplicate keys, if all
/// of them are.
/// The positions in the batch of the documents an unordered insert
/// refused, when every refusal was a duplicate key.
pub(super) fn duplicate_positions(e: &mongodb::error::Error) -> Option<Vec<usize>> {
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

pub(super) fn duplicate_only(e: &mongodb::error::Error) -> bool {
    duplicate_positions(e).is_some()
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

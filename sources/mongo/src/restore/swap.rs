//! The swap on `finish(true)`: each staged collection renamed over its
//! target (`--drop`), merged insert-only into an existing one, or filled
//! in place where the server cannot rename (`--unsafe-in-place`); views;
//! the count check after each.

use super::*;

impl MongoRestorer {
    /// Renames `db.staging` to `ns` (collection `name`, created with
    /// `options`), replacing it with `--drop`.
    pub(super) fn rename(
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
    pub(super) fn rename_unsupported(&self, e: &mongodb::error::Error) -> Option<String> {
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
    pub(super) fn swap_blocked(&mut self, s: &Staged) -> Result<Option<String>> {
        if self.pretend_no_rename {
            return Ok(Some(format!(
                "renameCollection disabled by the test-only switch {PRETEND_NO_RENAME_ENV}"
            )));
        }
        self.probe_rename(&s.db, &s.name, &s.metadata.options)
    }

    /// [`Self::rename_loses_options`], once per set of option names.
    pub(super) fn probe_rename(
        &mut self,
        db: &str,
        name: &str,
        options: &Document,
    ) -> Result<Option<String>> {
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
    pub(super) fn rename_loses_options(
        &self,
        db: &str,
        name: &str,
        options: &Document,
    ) -> Result<Option<String>> {
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
    pub(super) fn in_place(
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
    pub(super) fn listed(&self, db: &str, name: &str) -> Result<Option<Document>> {
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
    pub(super) fn uuid_of(&self, db: &str, name: &str) -> Result<Option<Bson>> {
        Ok(self
            .listed(db, name)?
            .and_then(|spec| spec.get_document("info").ok()?.get("uuid").cloned()))
    }

    pub(super) fn exists(&self, db: &str, name: &str) -> Result<bool> {
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
    pub(super) fn commit(&mut self, report: &mut Tally) -> Result<()> {
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
            for s in staged
                .iter()
                .filter(|s| s.staging.is_some() && s.marker.is_none())
            {
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
    pub(super) fn mismatch_error(&self) -> Option<Error> {
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
    pub(super) fn count(&self, db: &str, name: &str, how: Count) -> Result<u64> {
        let coll = self.client.database(db).collection::<Document>(name);
        match how {
            Count::Read => self.run(coll.count_documents(doc! {})),
            Count::Metadata => self.run(coll.estimated_document_count()),
            Count::Acknowledged => unreachable!("an acknowledged load is not counted"),
        }
        .map_err(|e| self.err(format!("cannot count `{db}.{name}`"), &e))
    }

    /// The report line of one collection, recording a failed count check.
    pub(super) fn line(
        &mut self,
        s: &Staged,
        restored: u64,
        conflicts: u64,
        indexes: usize,
        expected: u64,
        how: Count,
    ) -> Result<String> {
        let ns = format!("{}.{}", s.db, s.name);
        if let Count::Acknowledged = how {
            return Ok(format!(
                "{}: {restored} documents restored, {conflicts} conflicts, {indexes} indexes built, all \
                 {expected} acknowledged into a new collection",
                self.shown(s)
            ));
        }
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
    pub(super) fn shown(&self, s: &Staged) -> String {
        let ns = format!("{}.{}", s.db, s.name);
        if s.source == ns {
            ns
        } else {
            format!("{} -> {ns}", s.source)
        }
    }

    pub(super) fn commit_one(&mut self, s: &Staged, report: &mut Tally) -> Result<()> {
        let ns = format!("{}.{}", s.db, s.name);
        let Some(staging) = &s.staging else {
            // Metadata without data (a dump of only metadata): nothing to swap.
            return Ok(());
        };
        // Again just before its swap: the pre-flight check was a moment ago.
        self.check_staging(s)?;
        if let Some(marker) = &s.marker {
            // Loaded in place, complete: dropping the marker finishes it.
            self.run(self.client.database(&s.db).collection::<Document>(marker).drop())
                .map_err(|e| self.err(format!("cannot drop the restore marker of `{ns}`"), &e))?;
            self.replayable.insert(ns.clone());
            let line = self.line(s, s.documents, 0, s.indexes, s.documents, Count::Acknowledged)?;
            report.add("create", line, s.documents, 0);
            return Ok(());
        }
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
    pub(super) fn merge(&self, s: &Staged, staging: &str, ns: &str) -> Result<(Copied, usize, Vec<String>)> {
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
    pub(super) fn copy(&self, db: &str, staging: &str, name: &str, ns: &str) -> Result<Copied> {
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
    pub(super) fn kind_of(&self, db: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .listed(db, name)?
            .map(|spec| spec.get_str("type").unwrap_or("collection").to_string()))
    }

    /// Fails when the view `db.name` would replace something that is not
    /// a view (a collection's documents would be lost).
    pub(super) fn view_blocked(&self, db: &str, name: &str) -> Result<()> {
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

    pub(super) fn commit_view(
        &mut self,
        db: &str,
        name: &str,
        meta: &Metadata,
        report: &mut Tally,
    ) -> Result<()> {
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
}

/// Why a `renameCollection` failed.
pub(super) enum RenameFailure {
    /// The target exists (and `dropTarget` was off).
    Exists,
    /// The server cannot rename collections; why, password-free.
    Unsupported(String),
    Other(Error),
}

/// `e`, naming what a commit that failed part-way had already restored
/// and what it had not.
pub(super) fn part_way(e: Error, done: &[String], left: &[String]) -> Error {
    if done.is_empty() {
        return e;
    }
    e.with_context("already restored", done.join(", "))
        .with_context("not restored", left.join(", "))
}

/// What an insert-only merge did with the snapshot's documents.
#[derive(Default)]
pub(super) struct Copied {
    pub(super) inserted: u64,
    /// Kept: a document with the same `_id` exists.
    pub(super) conflicts: u64,
    /// Refused by another unique index.
    pub(super) refused: u64,
}

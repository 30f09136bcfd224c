//! Point in time: the bundle's `oplog.bson` kept until the collections
//! are in place, then replayed on the ones this restore created or
//! replaced whole.

use std::collections::HashMap;

use coffer_core::slices::pitr::LogReplay;
use mongodb::bson::RawDocument;

use super::*;

impl MongoRestorer {
    /// Keeps the bundle's oplog (memory, or an encrypted temp file) until
    /// the collections are in place.
    pub(super) fn oplog_entry(&mut self, reader: &mut dyn Read, size: u64) -> Result<()> {
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

    /// Replays the bundle's oplog entries, then those of the archived
    /// slices (a point-in-time restore: only those after the base's
    /// position, up to and including the target), as ordinary writes
    /// after the collections are in place, honouring the namespace rules.
    pub(super) fn replay(
        &self,
        body: Option<SpillBody>,
        tail: Option<LogReplay>,
        tally: &mut Tally,
    ) -> Result<()> {
        let mut run = Replay::default();
        if let Some(SpillBody { size, mut reader, .. }) = body {
            read_documents(&mut *reader, size, OPLOG_FILE, |entry| {
                run.entry(self, &entry, tally)
            })?;
            run.flush(self, tally)?;
        }
        if let Some(tail) = &tail {
            let Some(SpillBody { size, mut reader, .. }) = tail.take() else {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    "the archived oplog was already replayed",
                ));
            };
            read_documents(&mut *reader, size, "oplog slices", |entry| {
                let Some(m) = crate::follow::mark(&entry) else {
                    return Err(malformed("an oplog entry without `ts`", "oplog slices"));
                };
                if m.ts <= tail.after {
                    run.before += 1;
                    return Ok(());
                }
                if m.ts > tail.until {
                    run.after += 1;
                    return Ok(());
                }
                run.archived += 1;
                run.in_archive = true;
                run.entry(self, &entry, tally)
            })?;
            run.flush(self, tally)?;
        }
        run.build_indexes(self)?;
        if run.last.is_none() && tail.is_none() {
            // No write during the dump: the collections are the point in time.
            return Ok(());
        }
        tally.actions.push(RestoreAction {
            action: "replay-oplog".into(),
            target: run.describe(self.drop, tail.as_ref()),
        });
        tally.replayed = Some(run.applied);
        Ok(())
    }

    /// One replayed write; returns the documents it added (+) or removed
    /// (−).
    pub(super) fn apply(&self, db: &str, coll: &str, w: Write) -> Result<i64> {
        let ns = format!("{db}.{coll}");
        let c: Collection<RawDocumentBuf> = self.client.database(db).collection(coll);
        let fail = |e: mongodb::error::Error| self.err(format!("cannot replay the oplog on `{ns}`"), &e);
        match w {
            Write::Upsert { filter, doc } => {
                let r = self.run(c.replace_one(filter, doc).upsert(true)).map_err(fail)?;
                return Ok(i64::from(r.upserted_id.is_some()));
            }
            Write::Update { filter, updates } => {
                for u in updates {
                    self.run(c.update_one(filter.clone(), u)).map_err(fail)?;
                }
            }
            Write::Delete { filter } => {
                let r = self.run(c.delete_one(filter)).map_err(fail)?;
                return Ok(-(r.deleted_count as i64));
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
                let had = self.run(c.count_documents(doc! {})).map_err(fail)?;
                self.run(c.drop()).map_err(fail)?;
                return Ok(-(had as i64));
            }
            Write::DropIndex(index) => {
                let r = self.run(
                    self.client
                        .database(db)
                        .run_command(doc! { "dropIndexes": coll, "index": index }),
                );
                // Idempotent: an index (or collection) already gone is fine.
                if let Err(e) = r
                    && !matches!(crate::error::code(&e), Some(26 | 27))
                {
                    return Err(fail(e));
                }
            }
            Write::Rename {
                db: to_db,
                coll: to_coll,
                drop_target,
            } => {
                if self.exists(db, coll)? {
                    self.run(self.client.database("admin").run_command(doc! {
                        "renameCollection": format!("{db}.{coll}"),
                        "to": format!("{to_db}.{to_coll}"),
                        "dropTarget": drop_target,
                    }))
                    .map_err(fail)?;
                }
            }
            Write::CollMod(options) => {
                let mut cmd = doc! { "collMod": coll };
                cmd.extend(options);
                let r = self.run(self.client.database(db).run_command(cmd));
                if let Err(e) = r
                    && crate::error::code(&e) != Some(26)
                {
                    return Err(fail(e));
                }
            }
            Write::CreateIndexes(_) | Write::DropDatabase | Write::Skip(_) | Write::Unknown(_) => {}
        }
        Ok(0)
    }
}

/// Checks the archived entries a point-in-time restore will replay before
/// anything is restored: an entry this replay cannot apply (a command it
/// does not know) refuses the restore now, naming it, instead of after the
/// collections were swapped in. The entries go back into an encrypted
/// spill for the replay.
pub(crate) fn check_archive(tail: &LogReplay) -> Result<()> {
    let Some(SpillBody { size, mut reader, .. }) = tail.take() else {
        return Ok(());
    };
    let mut spill = Spill::new(8 << 20);
    let mut refused = None;
    read_documents(&mut *reader, size, "oplog slices", |entry| {
        spill
            .write(entry.as_bytes())
            .map_err(|e| Error::io("cannot buffer the archived oplog", e))?;
        let Some(m) = crate::follow::mark(&entry) else {
            return Err(malformed("an oplog entry without `ts`", "oplog slices"));
        };
        if refused.is_none() && m.ts > tail.after && m.ts <= tail.until {
            for (db, _, w) in oplog::writes(&entry)? {
                if let Write::Unknown(why) = w {
                    refused = Some((m.ts, db, why));
                }
            }
        }
        Ok(())
    })?;
    if let Some((ts, db, why)) = refused {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("the archived oplog holds an entry this restore cannot replay at {ts} ({}) on `{db}`: {why}; nothing was changed", ts.time()),
        )
        .with_hint(format!(
            "restore to a time before it (--to-ts {}:{}), or export the directory (`coffer oplog export`) and replay it with mongorestore --oplogReplay",
            ts.t,
            ts.i.saturating_sub(1)
        )));
    }
    tail.put(
        spill
            .finish()
            .map_err(|e| Error::io("cannot buffer the archived oplog", e))?,
    );
    Ok(())
}

fn replay_hint(e: Error) -> Error {
    e.with_hint(
        "the collections are restored as of the dump's start; the oplog replay stopped part-way: run the restore \
         again with --drop",
    )
}

/// The statements of an `insert`, `update` or `delete` command a write
/// becomes (`insert`: an `i` entry after the base's point in time, a new
/// document there); `None` for the writes that are not batched.
fn statements(w: &Write, insert: bool) -> Result<Option<(Kind, Vec<RawDocumentBuf>)>> {
    let raw = |d: &Document| {
        RawDocumentBuf::from_document(d).map_err(|e| malformed(&format!("bad oplog entry: {e}"), "oplog"))
    };
    let update = |filter: &Document, u: mongodb::bson::RawBson, upsert: bool| -> Result<RawDocumentBuf> {
        let mut st = RawDocumentBuf::new();
        st.append("q", raw(filter)?);
        st.append("u", u);
        st.append("upsert", upsert);
        Ok(st)
    };
    Ok(Some(match w {
        Write::Upsert { doc, .. } if insert => (Kind::Insert, vec![doc.clone()]),
        Write::Upsert { filter, doc } => (
            Kind::Update,
            vec![update(
                filter,
                mongodb::bson::RawBson::Document(doc.clone()),
                true,
            )?],
        ),
        Write::Update { filter, updates } => (
            Kind::Update,
            updates
                .iter()
                .map(|u| update(filter, mongodb::bson::RawBson::Document(raw(u)?), false))
                .collect::<Result<_>>()?,
        ),
        Write::Delete { filter } => {
            let mut st = RawDocumentBuf::new();
            st.append("q", raw(filter)?);
            st.append("limit", 1i32);
            (Kind::Delete, vec![st])
        }
        _ => return Ok(None),
    }))
}

impl MongoRestorer {
    /// Sends a batch as ordered commands; returns the documents it added
    /// (+) or removed (−). A batch of one kind goes as that kind's command
    /// (`insert`, `update`, `delete`), a mixed one (made only where the
    /// server has it) as one `bulkWrite`. An insert the server refuses as
    /// a duplicate (the document is there already) becomes a replacement,
    /// and the rest of the batch goes on.
    fn apply_batch(&self, b: &Batch) -> Result<i64> {
        if !b.regroup {
            return self.apply_run(b, &b.statements);
        }
        let regrouped = regrouped(&b.statements);
        let mut change = 0;
        for run in regrouped.chunk_by(|x, y| x.0 == y.0) {
            change += self.apply_run(b, run)?;
        }
        Ok(change)
    }

    /// Sends `statements` of batch `b` in order: as one command of their
    /// kind, or mixed as one `bulkWrite`.
    fn apply_run(&self, b: &Batch, statements: &[(Kind, RawDocumentBuf)]) -> Result<i64> {
        let ns = format!("{}.{}", b.db, b.coll);
        let mut change = 0;
        let mut from = 0;
        while from < statements.len() {
            let rest = &statements[from..];
            let sent = if rest.iter().all(|(k, _)| *k == rest[0].0) {
                self.send_one_kind(b, rest)
            } else {
                self.send_bulk(&ns, rest)
            }
            .map_err(|e| self.err(format!("cannot replay the oplog on `{ns}`"), &e))?;
            change += sent.change;
            let Some(failed) = sent.failed else {
                break;
            };
            let (kind, doc) = &rest[failed.index];
            if *kind != Kind::Insert || failed.code != crate::error::DUPLICATE_KEY {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    format!("cannot replay the oplog on `{ns}`: {}", failed.message),
                ));
            }
            let id = doc
                .get("_id")
                .ok()
                .flatten()
                .and_then(|v| Bson::try_from(v.to_raw_bson()).ok())
                .ok_or_else(|| malformed("an oplog insert without _id", "oplog"))?;
            change += self.apply(
                &b.db,
                &b.coll,
                Write::Upsert {
                    filter: doc! { "_id": id },
                    doc: doc.clone(),
                },
            )?;
            from += failed.index + 1;
        }
        Ok(change)
    }

    /// Sends `statements`, all of one kind, as that kind's ordered command.
    fn send_one_kind(
        &self,
        b: &Batch,
        statements: &[(Kind, RawDocumentBuf)],
    ) -> mongodb::error::Result<Sent> {
        let mut array = mongodb::bson::RawArrayBuf::new();
        for (_, st) in statements {
            array.push(st.clone());
        }
        let kind = statements[0].0;
        let (name, field) = match kind {
            Kind::Insert => ("insert", "documents"),
            Kind::Update => ("update", "updates"),
            Kind::Delete => ("delete", "deletes"),
        };
        let mut cmd = RawDocumentBuf::new();
        cmd.append(name, b.coll.clone());
        cmd.append(field, array);
        cmd.append("ordered", true);
        let reply = self.run(self.client.database(&b.db).run_raw_command(cmd))?;
        let n = int(&reply, "n");
        let change = match kind {
            Kind::Insert => n,
            Kind::Update => reply.get_array("upserted").map_or(0, |u| u.len() as i64),
            Kind::Delete => -n,
        };
        let failed = reply
            .get_array("writeErrors")
            .ok()
            .and_then(|e| e.first())
            .and_then(|e| e.as_document())
            .map(|e| Failed::of(e, "index"));
        Ok(Sent { change, failed })
    }

    /// Sends mixed `statements` to one namespace as one ordered
    /// `bulkWrite` (MongoDB 8.0+), which reports only its error.
    fn send_bulk(&self, ns: &str, statements: &[(Kind, RawDocumentBuf)]) -> mongodb::error::Result<Sent> {
        let mut ops = mongodb::bson::RawArrayBuf::new();
        for (kind, st) in statements {
            let mut op = RawDocumentBuf::new();
            // Statements made by `statements` above: `q` and `u` are there.
            let field = |name: &str| {
                st.get(name).ok().flatten().map_or_else(
                    || mongodb::bson::RawBson::Document(RawDocumentBuf::new()),
                    |v| v.to_raw_bson(),
                )
            };
            match kind {
                Kind::Insert => {
                    op.append("insert", 0i32);
                    op.append("document", st.clone());
                }
                Kind::Update => {
                    op.append("update", 0i32);
                    op.append("filter", field("q"));
                    op.append("updateMods", field("u"));
                    op.append("upsert", st.get_bool("upsert").unwrap_or(false));
                    op.append("multi", false);
                }
                Kind::Delete => {
                    op.append("delete", 0i32);
                    op.append("filter", field("q"));
                    op.append("multi", false);
                }
            }
            ops.push(op);
        }
        let mut info = RawDocumentBuf::new();
        info.append("ns", ns);
        let mut ns_info = mongodb::bson::RawArrayBuf::new();
        ns_info.push(info);
        let mut cmd = RawDocumentBuf::new();
        cmd.append("bulkWrite", 1i32);
        cmd.append("ops", ops);
        cmd.append("nsInfo", ns_info);
        cmd.append("ordered", true);
        cmd.append("errorsOnly", true);
        let reply = self.run(self.client.database("admin").run_raw_command(cmd))?;
        let change = int(&reply, "nInserted") + int(&reply, "nUpserted") - int(&reply, "nDeleted");
        let failed = (int(&reply, "nErrors") > 0)
            .then(|| {
                reply
                    .get_document("cursor")
                    .ok()?
                    .get_array("firstBatch")
                    .ok()?
                    .iter()
                    .filter_map(|r| r.as_document())
                    .find(|r| int(r, "ok") == 0)
                    .map(|e| Failed::of(e, "idx"))
            })
            .flatten()
            .or_else(|| {
                (int(&reply, "nErrors") > 0).then(|| Failed {
                    index: 0,
                    code: 0,
                    message: "bulkWrite reported an error it did not describe".into(),
                })
            });
        Ok(Sent { change, failed })
    }
}

/// What one command of a batch did.
struct Sent {
    /// Documents added (+) or removed (−) by the statements that applied.
    change: i64,
    /// The statement it stopped at (ordered: none after it applied).
    failed: Option<Failed>,
}

struct Failed {
    /// Into the statements sent.
    index: usize,
    code: i32,
    message: String,
}

impl Failed {
    /// From a write error (`writeErrors[0]`, or a `bulkWrite` result),
    /// whose statement index is under `index_field`.
    fn of(e: &Document, index_field: &str) -> Failed {
        Failed {
            index: int(e, index_field).max(0) as usize,
            code: int(e, "code") as i32,
            message: e.get_str("errmsg").unwrap_or("a write failed").to_string(),
        }
    }
}

/// An integer field of a reply, whichever BSON number type the server
/// chose; 0 when absent.
fn int(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

/// A batch's statements regrouped by kind where that changes nothing:
/// writes to different documents commute (in a collection whose only
/// unique index is `_id`'s), so each group of consecutive statements goes
/// as its inserts, then its updates, then its deletes, in their order
/// within each kind. A group ends where a document's next write would
/// have to move before one of its earlier writes (an insert or update
/// after its delete, an insert after its update), and at a statement
/// whose `_id` is not known, which goes alone in its place.
fn regrouped(statements: &[(Kind, RawDocumentBuf)]) -> Vec<(Kind, RawDocumentBuf)> {
    fn close(
        group: &mut [Vec<(Kind, RawDocumentBuf)>; 3],
        touched: &mut HashMap<Vec<u8>, usize>,
        out: &mut Vec<(Kind, RawDocumentBuf)>,
    ) {
        for g in group.iter_mut() {
            out.append(g);
        }
        touched.clear();
    }
    let mut out = Vec::with_capacity(statements.len());
    let mut group: [Vec<(Kind, RawDocumentBuf)>; 3] = Default::default();
    let mut touched: HashMap<Vec<u8>, usize> = HashMap::new();
    for (kind, st) in statements {
        let phase = match kind {
            Kind::Insert => 0,
            Kind::Update => 1,
            Kind::Delete => 2,
        };
        let Some(id) = id_key(*kind, st) else {
            close(&mut group, &mut touched, &mut out);
            out.push((*kind, st.clone()));
            continue;
        };
        if touched.get(&id).is_some_and(|&earlier| earlier > phase) {
            close(&mut group, &mut touched, &mut out);
        }
        touched.insert(id, phase);
        group[phase].push((*kind, st.clone()));
    }
    close(&mut group, &mut touched, &mut out);
    out
}

/// The `_id` a statement writes, as comparable bytes: an insert's
/// document's, an update's or delete's filter's.
fn id_key(kind: Kind, st: &RawDocumentBuf) -> Option<Vec<u8>> {
    let id = match kind {
        Kind::Insert => st.get("_id").ok()??,
        Kind::Update | Kind::Delete => st.get_document("q").ok()?.get("_id").ok()??,
    };
    let mut key = RawDocumentBuf::new();
    key.append("", id.to_raw_bson());
    Some(key.into_bytes())
}

/// One replay's state, shared by the bundle's oplog and the slices.
#[derive(Default)]
struct Replay {
    applied: u64,
    left_out: u64,
    kept: u64,
    /// Slice entries before the base's position, after the target, in it.
    before: u64,
    after: u64,
    archived: u64,
    notes: BTreeMap<String, u64>,
    /// Replaying the archived slices (after the base's position).
    in_archive: bool,
    /// Existing collections the snapshot holds no data of, dropped (with
    /// `--drop`) because the archived oplog writes them: their state at
    /// the target time is what the log makes of them.
    dropped: Vec<String>,
    /// Target namespace → whether the oplog is replayed on it.
    state: BTreeMap<String, bool>,
    last: Option<mongodb::bson::Timestamp>,
    /// Writes of one namespace and command not sent yet.
    batch: Option<Batch>,
    /// Target namespace → whether its writes may be regrouped by kind.
    regroup: BTreeMap<String, bool>,
    /// Indexes the oplog builds, built at the end: (db, collection, spec).
    indexes: Vec<(String, String, Document)>,
}

/// Consecutive writes to one collection sent as one `update` or `delete`
/// command (ordered: they apply in oplog order, and stop at the first
/// error), instead of one round trip per entry.
struct Batch {
    db: String,
    coll: String,
    /// The namespace in the bundle, for the count changes.
    bundle_ns: String,
    /// The collection has no unique index but `_id`: writes to different
    /// documents may be regrouped by kind ([`regrouped`]).
    regroup: bool,
    /// In oplog order, each with the command kind it belongs to.
    statements: Vec<(Kind, RawDocumentBuf)>,
    bytes: usize,
}

/// The command a batch is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Insert,
    Update,
    Delete,
}

/// Statements and bytes a batch holds at most (the server's limits are
/// 100,000 and 16 MiB; mongorestore sends 1,000).
const BATCH_STATEMENTS: usize = 1000;
const BATCH_BYTES: usize = 8 << 20;

impl Replay {
    fn entry(&mut self, r: &MongoRestorer, entry: &RawDocument, tally: &mut Tally) -> Result<()> {
        r.cancel.check()?;
        if let Ok(ts) = entry.get_timestamp("ts") {
            self.last = Some(ts);
        }
        for (db, coll, w) in oplog::writes(entry)? {
            if let Write::Skip(why) | Write::Unknown(why) = w {
                *self.notes.entry(why).or_default() += 1;
                continue;
            }
            if matches!(w, Write::DropDatabase) {
                self.flush(r, tally)?;
                self.drop_database(r, &db)?;
                self.applied += 1;
                continue;
            }
            let Some((tdb, tcoll)) = r.rules.map(&db, &coll)? else {
                self.left_out += 1;
                continue;
            };
            let ns = format!("{tdb}.{tcoll}");
            if is_staging(&tcoll) {
                // A restore that ran on the source during the dump.
                *self
                    .notes
                    .entry("writes of a restore's staging collection are not replayed".into())
                    .or_default() += 1;
                continue;
            }
            if !self.replayed_on(r, &ns, &tdb, &tcoll)? {
                self.kept += 1;
                continue;
            }
            self.applied += 1;
            let bundle_ns = format!("{db}.{coll}");
            // After the base's point in time an insert is of a new document.
            let insert = self.in_archive && entry.get_str("op") == Ok("i");
            if let Some(statements) = statements(&w, insert)? {
                self.add_to_batch(r, tally, &tdb, &tcoll, bundle_ns, statements)?;
                continue;
            }
            self.flush(r, tally)?;
            let Some(w) = self.track_indexes(r, &bundle_ns, &tdb, &tcoll, w)? else {
                continue;
            };
            let change = r.apply(&tdb, &tcoll, w).map_err(replay_hint)?;
            if change != 0 {
                *tally.count_changes.entry(bundle_ns).or_default() += change;
            }
        }
        Ok(())
    }

    /// Whether the oplog is replayed on target namespace `ns` (`tdb.tcoll`), decided at its first write.
    fn replayed_on(&mut self, r: &MongoRestorer, ns: &str, tdb: &str, tcoll: &str) -> Result<bool> {
        let ok = match self.state.get(ns) {
            Some(ok) => *ok,
            None => {
                // Created or replaced by this restore, or new to the
                // server; never an existing collection this restore
                // did not replace: one merged into (insert-only keeps
                // its documents), or, with --drop, one the snapshot
                // holds no data of (made during the dump, or metadata
                // only), which was not swapped and so has no staging
                // copy behind it.
                let ok =
                    r.replayable.contains(ns) || (!r.targets.contains_key(ns) && !r.exists(tdb, tcoll)?);
                self.state.insert(ns.to_string(), ok);
                ok
            }
        };
        Ok(ok || (self.in_archive && r.drop && self.drop_for_archive(r, tdb, tcoll)?))
    }

    /// Adds a write's statements to the batch of `tdb.tcoll`, sending the pending batch first if needed.
    fn add_to_batch(
        &mut self,
        r: &MongoRestorer,
        tally: &mut Tally,
        tdb: &str,
        tcoll: &str,
        bundle_ns: String,
        statements: (Kind, Vec<RawDocumentBuf>),
    ) -> Result<()> {
        let (kind, statements) = statements;
        // One collection per batch; one command kind too unless the
        // server takes mixed ones (`bulkWrite`).
        let same = self.batch.as_ref().is_some_and(|b| {
            b.db == tdb
                && b.coll == tcoll
                && (b.regroup || r.bulk_write || b.statements.last().is_some_and(|(k, _)| *k == kind))
        });
        if !same {
            self.flush(r, tally)?;
        }
        if self.batch.is_none() {
            let regroup = self.may_regroup(r, tdb, tcoll)?;
            self.batch = Some(Batch {
                db: tdb.to_string(),
                coll: tcoll.to_string(),
                bundle_ns,
                regroup,
                statements: Vec::new(),
                bytes: 0,
            });
        }
        let b = self.batch.as_mut().expect("a batch was just made");
        for st in statements {
            b.bytes += st.as_bytes().len();
            b.statements.push((kind, st));
        }
        if b.statements.len() >= BATCH_STATEMENTS || b.bytes >= BATCH_BYTES {
            self.flush(r, tally)?;
        }
        Ok(())
    }

    /// Keeps the indexes built at the end in step with a write on `tdb.tcoll`; the write to apply, if any.
    fn track_indexes(
        &mut self,
        r: &MongoRestorer,
        bundle_ns: &str,
        tdb: &str,
        tcoll: &str,
        w: Write,
    ) -> Result<Option<Write>> {
        let w = match w {
            Write::CreateIndexes(specs) => {
                // Built at the end, as mongorestore does.
                self.indexes
                    .extend(specs.into_iter().map(|s| (tdb.to_string(), tcoll.to_string(), s)));
                return Ok(None);
            }
            Write::DropIndex(index) => {
                let before = self.indexes.len();
                self.indexes.retain(|(d, c, s)| {
                    !(d == tdb
                        && c == tcoll
                        && (s.get("name") == Some(&index) || s.get("key") == Some(&index)))
                });
                if self.indexes.len() < before {
                    return Ok(None);
                }
                Write::DropIndex(index)
            }
            Write::Rename {
                db: to_db,
                coll: to_coll,
                drop_target,
            } => {
                let Some((ndb, ncoll)) = r.rules.map(&to_db, &to_coll)? else {
                    return Err(Error::new(
                        ErrorKind::ConfigInvalid,
                        format!("the oplog renames `{bundle_ns}` to `{to_db}.{to_coll}`, which --ns-include/--ns-exclude leave out"),
                    )
                    .with_hint("restore to a time before the rename, or include both namespaces"));
                };
                for (d, c, _) in self.indexes.iter_mut().filter(|(d, c, _)| d == tdb && c == tcoll) {
                    (*d, *c) = (ndb.clone(), ncoll.clone());
                }
                self.state.insert(format!("{ndb}.{ncoll}"), true);
                Write::Rename {
                    db: ndb,
                    coll: ncoll,
                    drop_target,
                }
            }
            Write::Drop => {
                self.indexes.retain(|(d, c, _)| !(d == tdb && c == tcoll));
                Write::Drop
            }
            other => other,
        };
        Ok(Some(w))
    }

    /// Builds the indexes the oplog created, per collection.
    fn build_indexes(&mut self, r: &MongoRestorer) -> Result<()> {
        let mut by_coll: BTreeMap<(String, String), Vec<Document>> = BTreeMap::new();
        for (d, c, s) in std::mem::take(&mut self.indexes) {
            by_coll.entry((d, c)).or_default().push(s);
        }
        for ((d, c), specs) in by_coll {
            let n = specs.len();
            r.run(
                r.client
                    .database(&d)
                    .run_command(doc! { "createIndexes": &c, "indexes": specs }),
            )
            .map_err(|e| {
                r.err(
                    format!("cannot build the indexes the oplog created on `{d}.{c}`"),
                    &e,
                )
            })?;
            *self
                .notes
                .entry("indexes built after the replay".to_string())
                .or_default() += n as u64;
        }
        Ok(())
    }

    /// The oplog dropped database `db` (of the bundle).
    fn drop_database(&mut self, r: &MongoRestorer, db: &str) -> Result<()> {
        // Map a collection of it to find where the database went.
        let Some((tdb, _)) = r.rules.map(db, "coffer-probe")? else {
            self.left_out += 1;
            return Ok(());
        };
        self.indexes.retain(|(d, _, _)| d != &tdb);
        r.run(r.client.database(&tdb).drop())
            .map_err(|e| r.err(format!("cannot replay the oplog's dropDatabase of `{tdb}`"), &e))?;
        self.state.retain(|ns, _| !ns.starts_with(&format!("{tdb}.")));
        Ok(())
    }

    /// Whether writes to `db.coll` may be regrouped by kind: its only
    /// unique index is `_id`'s (asked once per collection). With another
    /// unique index, the order of writes to different documents matters
    /// (a delete that frees a key before an insert that takes it).
    fn may_regroup(&mut self, r: &MongoRestorer, db: &str, coll: &str) -> Result<bool> {
        let ns = format!("{db}.{coll}");
        if let Some(ok) = self.regroup.get(&ns) {
            return Ok(*ok);
        }
        if r.no_regroup {
            return Ok(false);
        }
        let listed = r.run(async {
            let c: Collection<Document> = r.client.database(db).collection(coll);
            c.list_indexes().await?.try_collect::<Vec<_>>().await
        });
        let ok = match listed {
            Ok(indexes) => !indexes.iter().any(|i| {
                i.options.as_ref().and_then(|o| o.unique) == Some(true) && i.keys != doc! { "_id": 1 }
            }),
            // Not there yet: the replay creates it, with no index but `_id`.
            Err(e) if code(&e) == Some(NAMESPACE_NOT_FOUND) => true,
            Err(e) => return Err(r.err(format!("cannot list the indexes of `{ns}`"), &e)),
        };
        self.regroup.insert(ns, ok);
        Ok(ok)
    }

    /// Sends the pending batch.
    fn flush(&mut self, r: &MongoRestorer, tally: &mut Tally) -> Result<()> {
        let Some(b) = self.batch.take() else {
            return Ok(());
        };
        if b.statements.iter().any(|(k, _)| *k != b.statements[0].0) {
            let how = if b.regroup {
                "batches of mixed writes regrouped by kind"
            } else {
                "runs of mixed writes sent as one bulkWrite"
            };
            *self.notes.entry(how.to_string()).or_default() += 1;
        }
        let change = r.apply_batch(&b).map_err(replay_hint)?;
        if change != 0 {
            *tally.count_changes.entry(b.bundle_ns).or_default() += change;
        }
        Ok(())
    }

    /// Drops an existing collection the archived oplog writes to (with
    /// `--drop`: it is rebuilt from the log as of the target time).
    fn drop_for_archive(&mut self, r: &MongoRestorer, db: &str, coll: &str) -> Result<bool> {
        let ns = format!("{db}.{coll}");
        let c: Collection<RawDocumentBuf> = r.client.database(db).collection(coll);
        r.run(c.drop()).map_err(|e| {
            r.err(
                format!("cannot drop `{ns}` before replaying its archived oplog"),
                &e,
            )
        })?;
        self.state.insert(ns.clone(), true);
        self.dropped.push(ns);
        Ok(true)
    }

    fn describe(&self, drop: bool, tail: Option<&LogReplay>) -> String {
        let mut target = format!("{} oplog writes replayed", self.applied);
        if let Some(ts) = self.last {
            target.push_str(&format!(
                " (point in time {{t: {}, i: {}}})",
                ts.time, ts.increment
            ));
        }
        if let Some(t) = tail {
            target.push_str(&format!(
                ", {} archived entries from {} slice{} up to {} ({})",
                self.archived,
                t.slices,
                if t.slices == 1 { "" } else { "s" },
                t.until,
                t.until.time()
            ));
        }
        if self.left_out > 0 {
            target.push_str(&format!(
                ", {} left out by --ns-include/--ns-exclude",
                self.left_out
            ));
        }
        if self.kept > 0 && drop {
            target.push_str(&format!(
                ", {} not replayed on existing collections the snapshot holds no data of (their documents kept; \
                 drop them first to restore them as of the point in time)",
                self.kept
            ));
        } else if self.kept > 0 {
            target.push_str(&format!(
                ", {} not replayed on collections merged into (existing documents kept; --drop restores the point \
                 in time)",
                self.kept
            ));
        }
        for (why, n) in &self.notes {
            target.push_str(&format!(", {n}× {why}"));
        }
        target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(kind: Kind, id: Option<i32>) -> (Kind, RawDocumentBuf) {
        let mut d = RawDocumentBuf::new();
        match (kind, id) {
            (Kind::Insert, Some(id)) => d.append("_id", id),
            (_, Some(id)) => {
                let mut q = RawDocumentBuf::new();
                q.append("_id", id);
                d.append("q", q);
            }
            (_, None) => d.append("q", RawDocumentBuf::new()),
        }
        (kind, d)
    }

    fn order(statements: &[(Kind, RawDocumentBuf)]) -> Vec<(Kind, Option<i32>)> {
        regrouped(statements)
            .iter()
            .map(|(k, d)| {
                let id = match k {
                    Kind::Insert => d.get_i32("_id").ok(),
                    _ => d.get_document("q").unwrap().get_i32("_id").ok(),
                };
                (*k, id)
            })
            .collect()
    }

    use Kind::{Delete as D, Insert as I, Update as U};

    #[test]
    fn writes_to_different_documents_go_by_kind_in_their_order() {
        let got = order(&[
            st(I, Some(1)),
            st(U, Some(2)),
            st(D, Some(3)),
            st(I, Some(4)),
            st(U, Some(1)),
        ]);
        assert_eq!(
            got,
            [
                (I, Some(1)),
                (I, Some(4)),
                (U, Some(2)),
                (U, Some(1)),
                (D, Some(3))
            ]
        );
    }

    #[test]
    fn a_documents_writes_never_move_before_its_earlier_ones() {
        // Re-inserted after its delete: the insert stays after it.
        assert_eq!(
            order(&[st(D, Some(1)), st(I, Some(1))]),
            [(D, Some(1)), (I, Some(1))]
        );
        // Updated after its delete (a no-op in order): still after it.
        let got = order(&[st(U, Some(1)), st(I, Some(2)), st(D, Some(1)), st(U, Some(1))]);
        assert_eq!(got, [(I, Some(2)), (U, Some(1)), (D, Some(1)), (U, Some(1))]);
        // Inserted after an update of the same _id (an upsert's document
        // replaced): the group ends.
        assert_eq!(
            order(&[st(U, Some(1)), st(I, Some(1))]),
            [(U, Some(1)), (I, Some(1))]
        );
    }

    #[test]
    fn a_statement_without_a_known_id_stays_in_its_place() {
        let got = order(&[st(U, Some(1)), st(I, Some(2)), st(D, None), st(I, Some(3))]);
        assert_eq!(got, [(I, Some(2)), (U, Some(1)), (D, None), (I, Some(3))]);
    }
}

//! Point in time: the bundle's `oplog.bson` kept until the collections
//! are in place, then replayed on the ones this restore created or
//! replaced whole.

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

    /// Replays the oplog entries as ordinary writes, after the collections
    /// are in place, honouring the namespace rules.
    pub(super) fn replay(&self, body: SpillBody, tally: &mut Tally) -> Result<()> {
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
                let change = self.apply(&tdb, &tcoll, w).map_err(|e| {
                    e.with_hint(
                        "the collections are restored as of the dump's start; the oplog replay stopped \
                         part-way: run the restore again with --drop",
                    )
                })?;
                if change != 0 {
                    *tally.count_changes.entry(format!("{db}.{coll}")).or_default() += change;
                }
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
            Write::Skip(_) => {}
        }
        Ok(0)
    }
}

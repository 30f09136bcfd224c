//! Point-in-time dumps from the oplog, as `mongodump --oplog` takes them,
//! and their replay as ordinary writes (servers without `applyOps`).
//!
//! Capture: the newest `local.oplog.rs` entry's `ts` is noted before the
//! first collection is listed; after the last collection was read, one
//! query reads every entry from `start` on, and those after it (up to
//! `end`, the last one read) on a dumped database and selected collection
//! are stored raw as `mongo/<source>/oplog.bson`. The oplog must not have
//! rolled over: the first entry read must be `start` itself (the oplog
//! drops its oldest entries first, so every later one is still there),
//! else the capture fails (entries of the window would be lost). One
//! query, not three (newest, window, oldest): servers that scan the whole
//! oplog for each query pay that once.
//!
//! Replay: after the collections are swapped in, each entry becomes a
//! write on its (renamed) namespace: `i` an upsert of the document by
//! `_id`, `u` a replacement upsert or an update (`$set`/`$unset`, and
//! the `$v: 2` diffs of mongod — `u`/`i`/`d`/`s…` fields, array `l`
//! truncation — and of servers that log `updatedFields` /
//! `removedFields` / `truncatedArrays`), `d` a delete by `_id`, `c`
//! `create`/`drop` (others are reported, not run) and `applyOps`
//! (transactions) entry by entry. Every write is idempotent, so a document
//! the dump already saw in its later state ends in the same state.

use mongodb::bson::{Bson, Document, RawDocument, RawDocumentBuf, Timestamp, doc};
use mongodb::{Client, Collection};

use coffer_core::{Error, ErrorKind, Result};

use crate::error::driver;
use crate::uri::redact;

/// The oplog's file inside the source's folder of the bundle.
pub(crate) const OPLOG_FILE: &str = "oplog.bson";

/// `(time, increment)`, for ordering and JSON.
pub(crate) fn ts_pair(ts: Timestamp) -> (u32, u32) {
    (ts.time, ts.increment)
}

fn oplog(client: &Client) -> Collection<Document> {
    client.database("local").collection("oplog.rs")
}

/// Whether the server keeps `local.oplog.rs` (asked of a replica set
/// member: an error is not taken for "no oplog", so a point in time is
/// never dropped silently).
pub(crate) async fn present(client: &Client, uri: &str) -> Result<bool> {
    client
        .database("local")
        .list_collection_names()
        .filter(doc! { "name": "oplog.rs" })
        .await
        .map(|names| names.iter().any(|n| n == "oplog.rs"))
        .map_err(|e| {
            let err = driver(
                "cannot list the oplog (local.oplog.rs) for a point-in-time dump",
                &e,
                uri,
                &redact(uri),
            );
            if err.kind() != ErrorKind::PermissionDenied {
                return err;
            }
            err.with_hint(
                "give the user the `backup` role (it reads local.oplog.rs), or set `point-in-time = false` on \
                 the source to dump each collection on its own",
            )
        })
}

/// The `ts` of the newest (`dir = -1`) or oldest (`dir = 1`) entry.
pub(crate) async fn edge(client: &Client, uri: &str, dir: i32) -> Result<Option<Timestamp>> {
    let found = oplog(client)
        .find_one(doc! {})
        .sort(doc! { "$natural": dir })
        .projection(doc! { "ts": 1 })
        .await
        .map_err(|e| driver("cannot read the oplog (local.oplog.rs)", &e, uri, &redact(uri)))?;
    Ok(found.and_then(|d| d.get_timestamp("ts").ok()))
}

/// A cursor over the entries with `ts >= start`, in oplog order (the
/// first one is `start` itself unless the oplog rolled over).
pub(crate) async fn window(
    client: &Client,
    uri: &str,
    start: Timestamp,
) -> Result<mongodb::Cursor<RawDocumentBuf>> {
    client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs")
        .find(doc! { "ts": { "$gte": start } })
        .sort(doc! { "$natural": 1 })
        .batch_size(1000)
        .await
        .map_err(|e| driver("cannot read the oplog (local.oplog.rs)", &e, uri, &redact(uri)))
}

/// The error when the oplog no longer holds the first entry after `start`.
pub(crate) fn rolled_over(start: Timestamp, oldest: Option<Timestamp>) -> Error {
    Error::new(
        ErrorKind::Integrity,
        format!(
            "the oplog rolled over during the dump: its oldest entry is {} but the dump started at {:?}, \
             so writes made during the dump are lost",
            oldest.map_or("none".to_string(), |t| format!("{:?}", ts_pair(t))),
            ts_pair(start)
        ),
    )
    .with_hint(
        "make the oplog larger (replSetResizeOplog) or dump at a quieter time, then back up again; \
         `point-in-time = false` on the source dumps without the oplog (each collection consistent on its own)",
    )
}

/// Whether an entry concerns the dump: `keep(db, coll)` (`coll` empty for
/// a whole-database command).
pub(crate) fn wanted(entry: &RawDocument, keep: &dyn Fn(&str, &str) -> bool) -> bool {
    let op = entry.get_str("op").unwrap_or("");
    let ns = entry.get_str("ns").unwrap_or("");
    match op {
        "i" | "u" | "d" => ns.split_once('.').is_some_and(|(db, c)| keep(db, c)),
        "c" => {
            let Ok(o) = entry.get_document("o") else {
                return false;
            };
            if let Ok(inner) = o.get_array("applyOps") {
                return inner
                    .into_iter()
                    .filter_map(|v| v.ok().and_then(|v| v.as_document()))
                    .any(|d| wanted(d, keep));
            }
            let Some((db, _)) = ns.split_once('.') else {
                return false;
            };
            if let Ok(from) = o.get_str("renameCollection") {
                let to = o.get_str("to").unwrap_or("");
                let keep_ns = |ns: &str| ns.split_once('.').is_some_and(|(d, c)| keep(d, c));
                return keep_ns(from) || keep_ns(to);
            }
            match o.into_iter().next() {
                Some(Ok((_, v))) => keep(db, v.as_str().unwrap_or("")),
                _ => false,
            }
        }
        _ => false,
    }
}

/// One write of a replay, on `ns` of the bundle.
#[derive(Debug, PartialEq)]
pub(crate) enum Write {
    /// Replace (or insert) the document matching `filter`.
    Upsert { filter: Document, doc: RawDocumentBuf },
    /// Apply update documents in order to the document matching `filter`.
    Update {
        filter: Document,
        updates: Vec<Document>,
    },
    /// Delete the document matching `filter`.
    Delete { filter: Document },
    /// Create the collection (options), unless it exists.
    Create { options: Document },
    /// Drop the collection.
    Drop,
    /// Build these indexes (deferred to the end of the replay, as
    /// mongorestore does).
    CreateIndexes(Vec<Document>),
    /// Drop the index with this name (or key pattern).
    DropIndex(Bson),
    /// Rename the collection to `db.coll` of the bundle.
    Rename {
        /// Target database.
        db: String,
        /// Target collection.
        coll: String,
        /// Replace an existing target.
        drop_target: bool,
    },
    /// Drop the whole database.
    DropDatabase,
    /// Change the collection's options (`collMod` without its name).
    CollMod(Document),
    /// Not replayed, with why.
    Skip(String),
    /// A command or op this replay does not know: reported in a snapshot's
    /// own oplog, refused in archived slices (before the restore starts).
    Unknown(String),
}

fn bad(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::Integrity, what.into())
        .with_context("path", OPLOG_FILE)
        .with_hint("the bundle's oplog is damaged; restore without it by taking another snapshot")
}

/// The writes of one oplog entry, each with its `(db, coll)` of the bundle.
pub(crate) fn writes(entry: &RawDocument) -> Result<Vec<(String, String, Write)>> {
    let op = entry
        .get_str("op")
        .map_err(|_| bad("an oplog entry without `op`"))?;
    let ns = entry.get_str("ns").unwrap_or("");
    match op {
        "n" => Ok(Vec::new()),
        "i" => {
            let (db, c) = split_ns(ns)?;
            let o = entry_object(entry, op)?;
            Ok(vec![(
                db,
                c,
                Write::Upsert {
                    filter: id_filter(o)?,
                    doc: o.to_raw_document_buf(),
                },
            )])
        }
        "d" => {
            let (db, c) = split_ns(ns)?;
            Ok(vec![(
                db,
                c,
                Write::Delete {
                    filter: id_filter(entry_object(entry, op)?)?,
                },
            )])
        }
        "u" => update_writes(entry, ns, op),
        "c" => command_writes(entry, ns, op),
        other => Ok(vec![(
            split_ns(ns).map(|(d, _)| d).unwrap_or_default(),
            String::new(),
            Write::Unknown(format!("oplog op `{other}` is not replayed")),
        )]),
    }
}

/// Splits an entry's `ns` into its database and collection.
fn split_ns(ns: &str) -> Result<(String, String)> {
    ns.split_once('.')
        .map(|(d, c)| (d.to_string(), c.to_string()))
        .ok_or_else(|| bad(format!("an oplog entry on `{ns}`, not `db.collection`")))
}

/// The `o` document of an entry of op `op`.
fn entry_object<'a>(entry: &'a RawDocument, op: &str) -> Result<&'a RawDocument> {
    entry
        .get_document("o")
        .map_err(|_| bad(format!("an oplog `{op}` entry without `o`")))
}

/// A filter on the `_id` of an entry's document.
fn id_filter(d: &RawDocument) -> Result<Document> {
    let id = d
        .get("_id")
        .ok()
        .flatten()
        .ok_or_else(|| bad("an oplog entry's document has no _id"))?;
    let id: Bson = id
        .to_raw_bson()
        .try_into()
        .map_err(|e| bad(format!("bad _id in the oplog: {e}")))?;
    Ok(doc! { "_id": id })
}

/// An entry's raw document decoded.
fn to_doc(d: &RawDocument) -> Result<Document> {
    d.try_into()
        .map_err(|e| bad(format!("bad document in the oplog: {e}")))
}

/// The write of a `u` entry: a replacement upsert, or an update.
fn update_writes(entry: &RawDocument, ns: &str, op: &str) -> Result<Vec<(String, String, Write)>> {
    let (db, c) = split_ns(ns)?;
    let o = entry_object(entry, op)?;
    let filter = match entry.get_document("o2") {
        Ok(o2) => to_doc(o2)?,
        Err(_) => return Err(bad("an oplog update without `o2`")),
    };
    let update = to_doc(o)?;
    let is_operator = update.keys().any(|k| k.starts_with('$'));
    if !is_operator {
        return Ok(vec![(
            db,
            c,
            Write::Upsert {
                filter,
                doc: o.to_raw_document_buf(),
            },
        )]);
    }
    let updates = if let Ok(diff) = update.get_document("diff") {
        diff_updates(diff)?
    } else {
        let mut u = update.clone();
        u.remove("$v");
        vec![u]
    };
    Ok(vec![(db, c, Write::Update { filter, updates })])
}

/// The writes of a `c` entry: those of its `applyOps`, or of its command.
fn command_writes(entry: &RawDocument, ns: &str, op: &str) -> Result<Vec<(String, String, Write)>> {
    let o = entry_object(entry, op)?;
    if let Ok(inner) = o.get_array("applyOps") {
        let mut out = Vec::new();
        for v in inner {
            let v = v.map_err(|e| bad(format!("bad applyOps entry: {e}")))?;
            let d = v
                .as_document()
                .ok_or_else(|| bad("an applyOps entry is not a document"))?;
            out.extend(writes(d)?);
        }
        return Ok(out);
    }
    let (db, _) = split_ns(ns)?;
    let cmd = to_doc(o)?;
    let Some((name, target)) = cmd.iter().next() else {
        return Ok(Vec::new());
    };
    let coll = target.as_str().unwrap_or("").to_string();
    let mut rest = cmd.clone();
    rest.remove(name.as_str());
    let w = match name.as_str() {
        "create" => {
            let mut options = rest;
            options.remove("idIndex");
            Write::Create { options }
        }
        "drop" => Write::Drop,
        "createIndexes" | "commitIndexBuild" => Write::CreateIndexes(index_specs(&rest)),
        "startIndexBuild" | "abortIndexBuild" => {
            Write::Skip("index build markers (the index is built at its commit)".into())
        }
        "dropIndexes" | "deleteIndexes" => match rest.get("index") {
            Some(i) => Write::DropIndex(i.clone()),
            None => Write::Skip(format!("command `{name}` without an index")),
        },
        "renameCollection" => return Ok(vec![rename_write(target, &rest)?]),
        "dropDatabase" => return Ok(vec![(db, String::new(), Write::DropDatabase)]),
        "collMod" => Write::CollMod(rest),
        other => Write::Unknown(format!("command `{other}` is not replayed")),
    };
    Ok(vec![(db, coll, w)])
}

/// The index specs of a `createIndexes` or `commitIndexBuild` command (without its name).
fn index_specs(rest: &Document) -> Vec<Document> {
    let list: Vec<Document> = match rest.get_array("indexes") {
        Ok(a) => a.iter().filter_map(|v| v.as_document().cloned()).collect(),
        Err(_) => vec![rest.clone()],
    };
    list.into_iter()
        .map(|mut d| {
            // The test server's own bookkeeping, not an option.
            d.remove("entryFormat");
            d
        })
        .collect()
}

/// The write of a `renameCollection` command from `target`, on the source namespace.
fn rename_write(target: &Bson, rest: &Document) -> Result<(String, String, Write)> {
    let from = target.as_str().unwrap_or("");
    let to = rest.get_str("to").unwrap_or("");
    let (Some((fdb, fcoll)), Some((tdb, tcoll))) = (from.split_once('.'), to.split_once('.')) else {
        return Err(bad(format!("a renameCollection from `{from}` to `{to}`")));
    };
    Ok((
        fdb.to_string(),
        fcoll.to_string(),
        Write::Rename {
            db: tdb.to_string(),
            coll: tcoll.to_string(),
            drop_target: rest.get_bool("dropTarget").unwrap_or(false),
        },
    ))
}

/// The update documents of a `$v: 2` diff, in the order to apply them
/// (array truncations first).
pub(crate) fn diff_updates(diff: &Document) -> Result<Vec<Document>> {
    let mut set = Document::new();
    let mut unset = Document::new();
    let mut trunc = Document::new();
    let has_fields = ["updatedFields", "removedFields", "truncatedArrays"]
        .iter()
        .any(|k| diff.contains_key(*k));
    if has_fields {
        if let Ok(u) = diff.get_document("updatedFields") {
            for (k, v) in u {
                set.insert(k.clone(), v.clone());
            }
        }
        if let Ok(r) = diff.get_array("removedFields") {
            for k in r {
                let k = k
                    .as_str()
                    .ok_or_else(|| bad("a removed field name is not a string"))?;
                unset.insert(k, "");
            }
        }
        if let Ok(t) = diff.get_array("truncatedArrays") {
            for a in t {
                let a = a.as_document().ok_or_else(|| bad("bad truncatedArrays entry"))?;
                let field = a.get_str("field").map_err(|_| bad("bad truncatedArrays entry"))?;
                let size = a
                    .get("newSize")
                    .and_then(|v| match v {
                        Bson::Int32(n) => Some(i64::from(*n)),
                        Bson::Int64(n) => Some(*n),
                        Bson::Double(n) => Some(*n as i64),
                        _ => None,
                    })
                    .ok_or_else(|| bad("bad truncatedArrays entry"))?;
                trunc.insert(field, doc! { "$each": [], "$slice": size });
            }
        }
    } else {
        object_diff("", diff, &mut set, &mut unset, &mut trunc)?;
    }
    let mut out = Vec::new();
    if !trunc.is_empty() {
        out.push(doc! { "$push": trunc });
    }
    let mut main = Document::new();
    if !set.is_empty() {
        main.insert("$set", set);
    }
    if !unset.is_empty() {
        main.insert("$unset", unset);
    }
    if !main.is_empty() {
        out.push(main);
    }
    Ok(out)
}

/// mongod's object diff: `u` (update), `i` (insert), `d` (delete) and
/// `s<field>` (a sub-diff).
fn object_diff(
    prefix: &str,
    diff: &Document,
    set: &mut Document,
    unset: &mut Document,
    trunc: &mut Document,
) -> Result<()> {
    for (k, v) in diff {
        match k.as_str() {
            "u" | "i" => {
                let d = v.as_document().ok_or_else(|| bad("bad update diff"))?;
                for (f, val) in d {
                    set.insert(format!("{prefix}{f}"), val.clone());
                }
            }
            "d" => {
                let d = v.as_document().ok_or_else(|| bad("bad update diff"))?;
                for (f, _) in d {
                    unset.insert(format!("{prefix}{f}"), "");
                }
            }
            _ if k.starts_with('s') => {
                let sub = v.as_document().ok_or_else(|| bad("bad update diff"))?;
                let path = format!("{prefix}{}", &k[1..]);
                if sub.get_bool("a").unwrap_or(false) {
                    array_diff(&path, sub, set, unset, trunc)?;
                } else {
                    object_diff(&format!("{path}."), sub, set, unset, trunc)?;
                }
            }
            other => return Err(bad(format!("unknown update diff field `{other}`"))),
        }
    }
    Ok(())
}

/// mongod's array diff: `a: true`, `l` (new length), `u<i>`, `s<i>`.
fn array_diff(
    path: &str,
    diff: &Document,
    set: &mut Document,
    unset: &mut Document,
    trunc: &mut Document,
) -> Result<()> {
    for (k, v) in diff {
        if k == "a" {
            continue;
        }
        if k == "l" {
            let n = match v {
                Bson::Int32(n) => i64::from(*n),
                Bson::Int64(n) => *n,
                _ => return Err(bad("bad array length in an update diff")),
            };
            trunc.insert(path, doc! { "$each": [], "$slice": n });
        } else if let Some(i) = k.strip_prefix('u') {
            set.insert(format!("{path}.{i}"), v.clone());
        } else if let Some(i) = k.strip_prefix('s') {
            let sub = v.as_document().ok_or_else(|| bad("bad update diff"))?;
            let p = format!("{path}.{i}");
            if sub.get_bool("a").unwrap_or(false) {
                array_diff(&p, sub, set, unset, trunc)?;
            } else {
                object_diff(&format!("{p}."), sub, set, unset, trunc)?;
            }
        } else {
            return Err(bad(format!("unknown array diff field `{k}`")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secantus_style_diffs() {
        let d = doc! { "updatedFields": { "a": 2, "arr.2": 3 }, "removedFields": ["x"],
        "truncatedArrays": [{ "field": "t", "newSize": 1 }] };
        let u = diff_updates(&d).unwrap();
        assert_eq!(
            u,
            vec![
                doc! { "$push": { "t": { "$each": [], "$slice": 1i64 } } },
                doc! { "$set": { "a": 2, "arr.2": 3 }, "$unset": { "x": "" } },
            ]
        );
    }

    #[test]
    fn mongod_style_diffs() {
        let d = doc! { "u": { "a": 1 }, "i": { "b": 2 }, "d": { "c": false },
        "ssub": { "u": { "x": 5 } }, "sarr": { "a": true, "l": 2, "u1": 9 } };
        let u = diff_updates(&d).unwrap();
        assert_eq!(
            u,
            vec![
                doc! { "$push": { "arr": { "$each": [], "$slice": 2i64 } } },
                doc! { "$set": { "a": 1, "b": 2, "sub.x": 5, "arr.1": 9 }, "$unset": { "c": "" } },
            ]
        );
    }

    #[test]
    fn a_mongod_transaction_is_one_applyops_entry_of_writes() {
        // mongod logs a committed multi-document transaction as one `c`
        // entry on `admin.$cmd` with its session, one `ts` for all.
        let raw = |d: Document| RawDocumentBuf::from_document(&d).unwrap();
        let txn = raw(doc! {
            "lsid": { "id": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Uuid, bytes: vec![7; 16] } },
            "txnNumber": 3i64, "op": "c", "ns": "admin.$cmd",
            "o": { "applyOps": [
                { "op": "i", "ns": "app.users", "ui": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Uuid, bytes: vec![1; 16] }, "o": { "_id": 1, "a": 1 } },
                { "op": "u", "ns": "app.audit", "o2": { "_id": 9 }, "o": { "$v": 2, "diff": { "u": { "n": 2 } } } },
                { "op": "d", "ns": "other.x", "o": { "_id": 5 } },
            ] },
            "ts": Timestamp { time: 100, increment: 2 }, "t": 1i64, "v": 2i64, "wall": mongodb::bson::DateTime::from_millis(0),
            "prevOpTime": { "ts": Timestamp { time: 0, increment: 0 }, "t": -1i64 },
        });
        let w = writes(&txn).unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].0.as_str(), w[0].1.as_str()), ("app", "users"));
        assert!(matches!(&w[0].2, Write::Upsert { filter, .. } if *filter == doc! { "_id": 1 }));
        assert_eq!(
            w[1].2,
            Write::Update {
                filter: doc! { "_id": 9 },
                updates: vec![doc! { "$set": { "n": 2 } }]
            }
        );
        assert!(matches!(&w[2].2, Write::Delete { .. }));
        // Kept when any of its writes concerns the dump.
        assert!(wanted(&txn, &|db: &str, _: &str| db == "app"));
        assert!(!wanted(&txn, &|db: &str, _: &str| db == "nope"));
    }

    #[test]
    fn entries_become_writes() {
        let raw = |d: Document| RawDocumentBuf::from_document(&d).unwrap();
        let i = raw(doc! { "op": "i", "ns": "app.t", "o": { "_id": 1, "a": 1 } });
        let w = writes(&i).unwrap();
        assert!(matches!(&w[0].2, Write::Upsert { filter, .. } if *filter == doc! { "_id": 1 }));
        let u = raw(
            doc! { "op": "u", "ns": "app.t", "o2": { "_id": 1 }, "o": { "$v": 2, "diff": { "updatedFields": { "a": 2 } } } },
        );
        assert_eq!(
            writes(&u).unwrap()[0].2,
            Write::Update {
                filter: doc! { "_id": 1 },
                updates: vec![doc! { "$set": { "a": 2 } }]
            }
        );
        let c = raw(doc! { "op": "c", "ns": "app.$cmd", "o": { "create": "n", "idIndex": {} } });
        assert_eq!(writes(&c).unwrap()[0].1, "n");
        let keep = |db: &str, c: &str| db == "app" && c != "skip";
        assert!(wanted(&i, &keep));
        assert!(wanted(&c, &keep));
        let other = raw(doc! { "op": "i", "ns": "app.skip", "o": { "_id": 1 } });
        assert!(!wanted(&other, &keep));
        let noop = raw(doc! { "op": "n", "ns": "", "o": { "msg": "x" } });
        assert!(!wanted(&noop, &keep));
    }
}

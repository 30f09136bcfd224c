//! Point-in-time dumps against a real server with an oplog (secantusd-py
//! keeps `local.oplog.rs`): a writer inserts, updates and deletes while
//! the dump runs; the restore (collections + oplog replayed as ordinary
//! writes) must equal the source as of the window's end. The expected
//! state is computed independently: the writer records the server's
//! `operationTime` of each of its writes, and a model applies exactly the
//! writes at or before the window's end.

use coffer_e2e::mongo_server as common;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use coffer_core::{
    Area, CaptureContext, EntryBody, EntrySender, Registry, RestoreEntry, RestoreEntryKind, RestoreOptions,
    RestoreReport, Source, SourceReport,
};
use common::MongoServer;
use futures::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{Document, Timestamp, doc};

const ITEMS: i64 = 3000;

struct Captured {
    path: String,
    data: Vec<u8>,
}

fn source(uri: &str) -> Arc<dyn Source> {
    let mut reg = Registry::new();
    coffer_source_mongo::register(&mut reg);
    let arg = format!("mongo:{uri}");
    let (factory, spec) = reg.source_spec(&arg).expect("spec");
    factory.from_spec("db", spec).expect("source")
}

async fn capture(src: &dyn Source) -> (Vec<Captured>, SourceReport) {
    let (tx, mut rx) = EntrySender::channel(4);
    let drain = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(entry) = rx.recv().await {
            let EntryBody::File { mut reader, .. } = entry.body else {
                panic!("not a file: {}", entry.path)
            };
            let data = tokio::task::spawn_blocking(move || {
                let mut data = Vec::new();
                reader.read_to_end(&mut data).unwrap();
                data
            })
            .await
            .unwrap();
            out.push(Captured {
                path: entry.path,
                data,
            });
        }
        out
    });
    let report = src
        .capture(&CaptureContext::new("test"), tx)
        .await
        .expect("capture");
    (drain.await.unwrap(), report)
}

/// Feeds the entries in bundle order (as sent) to a restorer and commits.
async fn restore(src: &dyn Source, entries: &[Captured], params: &[(&str, &str)]) -> RestoreReport {
    let mut opts = RestoreOptions::default();
    let kind = src.info().kind;
    for (k, v) in params {
        opts.params.insert(kind, k, *v);
    }
    let restorer = src.restore(&opts.for_kind(kind)).await.expect("restorer");
    let entries: Vec<(String, Vec<u8>)> = entries.iter().map(|e| (e.path.clone(), e.data.clone())).collect();
    tokio::task::spawn_blocking(move || {
        let mut restorer = restorer;
        for (path, data) in &entries {
            let mut reader = std::io::Cursor::new(&data[..]);
            restorer
                .entry(RestoreEntry {
                    area: Area::Mongo,
                    path,
                    mode: 0o644,
                    mtime: 0,
                    owner: None,
                    kind: RestoreEntryKind::File {
                        size: data.len() as u64,
                    },
                    reader: &mut reader,
                })
                .expect("entry");
        }
        restorer.finish(true)
    })
    .await
    .unwrap()
    .expect("restore")
}

/// One write of the writer, for the model.
#[derive(Debug, Clone)]
enum Op {
    Insert(&'static str, Document),
    Set(&'static str, i64, i64),
    Delete(&'static str, i64),
}

fn apply(model: &mut BTreeMap<&'static str, BTreeMap<i64, Document>>, op: &Op) {
    match op {
        Op::Insert(c, d) => {
            model
                .entry(c)
                .or_default()
                .insert(d.get_i64("_id").unwrap(), d.clone());
        }
        Op::Set(c, id, v) => {
            if let Some(d) = model.entry(c).or_default().get_mut(id) {
                d.insert("v", *v);
            }
        }
        Op::Delete(c, id) => {
            model.entry(c).or_default().remove(id);
        }
    }
}

fn initial() -> BTreeMap<&'static str, BTreeMap<i64, Document>> {
    let mut m: BTreeMap<&'static str, BTreeMap<i64, Document>> = BTreeMap::new();
    for i in 0..ITEMS {
        m.entry("items")
            .or_default()
            .insert(i, doc! { "_id": i, "v": -1i64, "pad": "x".repeat(200) });
    }
    for i in 0..10 {
        m.entry("other")
            .or_default()
            .insert(i, doc! { "_id": i, "v": -1i64 });
    }
    m
}

async fn contents(c: &Client, db: &str, coll: &str) -> BTreeMap<i64, Document> {
    c.database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<Document>>()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.get_i64("_id").unwrap(), d))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_replayed_to_the_point_in_time() {
    let (Some(a), Some(b)) = (MongoServer::start(), MongoServer::start()) else {
        return;
    };
    let ca = Client::with_uri_str(a.uri("")).await.unwrap();
    let start_state = initial();
    for (coll, docs) in &start_state {
        ca.database("app")
            .collection::<Document>(coll)
            .insert_many(docs.values())
            .await
            .unwrap();
    }

    // The writer: inserts, updates and deletes until told to stop,
    // recording each write's operationTime.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let ca = ca.clone();
        tokio::spawn(async move {
            let mut session = ca.start_session().await.unwrap();
            let items = ca.database("app").collection::<Document>("items");
            let other = ca.database("app").collection::<Document>("other");
            let mut log: Vec<(Timestamp, Op)> = Vec::new();
            let mut i: i64 = 0;
            while !stop.load(Ordering::SeqCst) || i < 30 {
                let op = match i % 4 {
                    0 => Op::Insert("items", doc! { "_id": 100_000 + i, "v": i }),
                    1 => Op::Set("items", (i * 7) % ITEMS, i),
                    2 => Op::Delete("items", (i * 13 + 5) % ITEMS),
                    _ => Op::Insert("other", doc! { "_id": 1000 + i, "v": i }),
                };
                let coll = match &op {
                    Op::Insert(c, _) | Op::Set(c, _, _) | Op::Delete(c, _) if *c == "other" => &other,
                    _ => &items,
                };
                match &op {
                    Op::Insert(_, d) => {
                        coll.insert_one(d.clone()).session(&mut session).await.unwrap();
                    }
                    Op::Set(_, id, v) => {
                        coll.update_one(doc! { "_id": id }, doc! { "$set": { "v": v } })
                            .session(&mut session)
                            .await
                            .unwrap();
                    }
                    Op::Delete(_, id) => {
                        coll.delete_one(doc! { "_id": id })
                            .session(&mut session)
                            .await
                            .unwrap();
                    }
                }
                let t = session
                    .operation_time()
                    .expect("the server returns operationTime");
                log.push((t, op));
                i += 1;
            }
            log
        })
    };
    // Let the writer get going, then dump while it writes.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let src = source(&a.uri("app"));
    let (entries, report) = capture(src.as_ref()).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let log = writer.await.unwrap();

    let oplog = &report.details["oplog"];
    let end = Timestamp {
        time: oplog["end"]["t"].as_u64().unwrap() as u32,
        increment: oplog["end"]["i"].as_u64().unwrap() as u32,
    };
    let start = Timestamp {
        time: oplog["start"]["t"].as_u64().unwrap() as u32,
        increment: oplog["start"]["i"].as_u64().unwrap() as u32,
    };
    let key = |t: Timestamp| (t.time, t.increment);
    let during = log
        .iter()
        .filter(|(t, _)| key(*t) > key(start) && key(*t) <= key(end))
        .count();
    assert!(during > 0, "no write during the dump: {report:?}");
    assert!(
        log.iter().any(|(t, _)| key(*t) <= key(start)) && log.iter().any(|(t, _)| key(*t) > key(end)),
        "the writer ran before and after the window"
    );
    // A write that changes nothing (an update of a deleted document) has
    // an operationTime but no oplog entry.
    let entries_in_window = oplog["entries"].as_u64().unwrap();
    assert!(
        entries_in_window > 0 && entries_in_window <= during as u64,
        "{during} writes during the dump: {oplog}"
    );
    assert!(report.summary.contains("point in time"), "{}", report.summary);
    assert!(entries.iter().any(|e| e.path == "oplog.bson"));

    // The source as of the window's end.
    let mut expected = start_state.clone();
    for (t, op) in &log {
        if key(*t) <= key(end) {
            apply(&mut expected, op);
        }
    }
    let mut now = start_state.clone();
    for (_, op) in &log {
        apply(&mut now, op);
    }
    assert_eq!(
        now["items"],
        contents(&ca, "app", "items").await,
        "the model matches the server"
    );

    // Restore with --drop: collections, then the oplog.
    let r = restore(src.as_ref(), &entries, &[("uri", &b.uri("")), ("drop", "true")]).await;
    let replay = r
        .actions
        .iter()
        .find(|a| a.action == "replay-oplog")
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        replay
            .target
            .starts_with(&format!("{entries_in_window} oplog writes replayed")),
        "{r:?}"
    );
    let cb = Client::with_uri_str(b.uri("")).await.unwrap();
    assert_eq!(contents(&cb, "app", "items").await, expected["items"]);
    assert_eq!(contents(&cb, "app", "other").await, expected["other"]);
    // The counts a check must expect: each collection's as dumped plus
    // what the replay added or removed, those at the consistency point.
    for coll in ["items", "other"] {
        let dumped = report.details["collections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["db"] == "app" && c["collection"] == coll)
            .unwrap_or_else(|| panic!("{report:?}"))["documents"]
            .as_i64()
            .unwrap();
        let change = r.count_changes.get(&format!("app.{coll}")).copied().unwrap_or(0);
        assert_eq!(dumped + change, expected[coll].len() as i64, "{coll}: {r:?}");
    }
    assert_ne!(
        expected["items"], start_state["items"],
        "writes during the dump changed the expected state"
    );
    // The interleaved inserts, updates and deletes to different documents
    // were regrouped by kind (no unique index but _id); in oplog order
    // (the switch, as with another unique index) they went as bulkWrite
    // commands (the server has it), and on a server without it as one
    // command per kind: each to the same state and counts.
    assert!(
        replay
            .target
            .contains("× batches of mixed writes regrouped by kind"),
        "{r:?}"
    );
    let dumped = |coll: &str| {
        report.details["collections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["db"] == "app" && c["collection"] == coll)
            .unwrap()["documents"]
            .as_i64()
            .unwrap()
    };
    for (db, switches, says) in [
        (
            "ordered",
            &[("test-no-regroup", "true")][..],
            Some("× runs of mixed writes sent as one bulkWrite"),
        ),
        (
            "old",
            &[("test-no-regroup", "true"), ("test-no-bulk-write", "true")][..],
            None,
        ),
    ] {
        let uri = b.uri("");
        let to = format!("{db}.*");
        let mut params = vec![
            ("uri", uri.as_str()),
            ("drop", "true"),
            ("ns-from", "app.*"),
            ("ns-to", to.as_str()),
        ];
        params.extend_from_slice(switches);
        let r = restore(src.as_ref(), &entries, &params).await;
        let replay = r.actions.iter().find(|a| a.action == "replay-oplog").unwrap();
        assert!(!replay.target.contains("regrouped"), "{r:?}");
        match says {
            Some(says) => assert!(replay.target.contains(says), "{r:?}"),
            None => assert!(!replay.target.contains("bulkWrite"), "{r:?}"),
        }
        for coll in ["items", "other"] {
            assert_eq!(contents(&cb, db, coll).await, expected[coll], "{db}.{coll}");
            let change = r.count_changes.get(&format!("app.{coll}")).copied().unwrap_or(0);
            assert_eq!(
                dumped(coll) + change,
                expected[coll].len() as i64,
                "{db}.{coll}: {r:?}"
            );
        }
    }

    // Renamed and selected: app.items -> pit.items, app.other left out.
    let r = restore(
        src.as_ref(),
        &entries,
        &[
            ("uri", &b.uri("")),
            ("ns-exclude", "app.other"),
            ("ns-from", "app.*"),
            ("ns-to", "pit.*"),
        ],
    )
    .await;
    assert!(r.summary.contains("oplog writes replayed"), "{r:?}");
    assert_eq!(contents(&cb, "pit", "items").await, expected["items"]);
    let names = cb.database("pit").list_collection_names().await.unwrap();
    assert_eq!(names, ["items"], "app.other and its oplog writes left out");
}

//! A point-in-time dump whose oplog window is lost must fail, not store a
//! dump that silently misses the writes made during it. The dump is held
//! (test hook `COFFER_TEST_MONGO_PAUSE_DIR`) right after it noted where the
//! oplog starts, while the test writes: 50 writes within a 1000-entry
//! oplog are captured (the control; its replay with --drop must not touch
//! an existing collection the snapshot has no data of), 50 writes and an
//! explicit prune on a 20-entry oplog push the start out and fail the dump.
//!
//! One test, as the hook is an environment variable: two tests of this
//! binary running as threads of one process (`cargo test`) would share it.

use coffer_e2e::mongo_server as common;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use coffer_core::ErrorKind;
use common::MongoServer;
use mongodb::Client;
use mongodb::bson::{RawDocument, doc};

/// Runs a dump of `uri` held at its pause while `during` writes, and
/// returns its outcome.
async fn held_dump<F: std::future::Future<Output = ()>>(
    uri: &str,
    pause: &Path,
    during: F,
) -> coffer_core::Result<(Vec<support::Captured>, coffer_core::SourceReport)> {
    let src = support::source(&format!("mongo:{uri}"));
    let capture = tokio::spawn(async move { support::capture(src.as_ref()).await });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pause.join("started").exists() {
        assert!(Instant::now() < deadline, "the dump never reached its pause");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    during.await;
    std::fs::write(pause.join("go"), b"").unwrap();
    capture.await.unwrap()
}

async fn insert_50(client: &Client) {
    let items = client.database("shop").collection("items");
    for i in 100..150 {
        items.insert_one(doc! { "_id": i }).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_fails_when_the_oplog_rolls_over_during_it() {
    let (Some(roomy), Some(tiny)) = (
        MongoServer::start_with_oplog(1000),
        MongoServer::start_with_oplog(20),
    ) else {
        return;
    };
    let pause = tempfile::tempdir().unwrap();
    // SAFETY: set before any capture starts, by the only test of this
    // binary; the captures only read it.
    unsafe { std::env::set_var("COFFER_TEST_MONGO_PAUSE_DIR", pause.path()) };

    // Control: the same hold without a roll-over captures every write.
    let uri = roomy.uri("shop");
    let client = support::client(&uri).await;
    client
        .database("shop")
        .collection("items")
        .insert_one(doc! { "_id": 0 })
        .await
        .unwrap();
    // Also a collection made while the dump is held (so before it lists
    // the collections: it is dumped, and its writes are in the oplog).
    // And writes of a restore's staging collection, which are not dumped.
    let during = async {
        insert_50(&client).await;
        support::seed(&client.database("shop"), "late", 3).await;
        support::seed(&client.database("shop"), "items.coffer-staging-0badf00d", 2).await;
    };
    let (entries, _) = held_dump(&uri, pause.path(), during)
        .await
        .expect("capture without a roll-over");
    let oplog = entries
        .iter()
        .find(|e| e.path.ends_with("oplog.bson"))
        .expect("an oplog.bson entry");
    let (mut inserts, mut rest) = (0, &oplog.data[..]);
    while !rest.is_empty() {
        let len = i32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let entry = RawDocument::from_bytes(&rest[..len]).unwrap();
        if entry.get_str("op").unwrap() == "i" {
            inserts += 1;
        }
        // Commands (`create`) name their collection in `o`.
        let shown = format!("{entry:?}");
        assert!(!shown.contains("coffer-staging"), "{shown} in the oplog");
        rest = &rest[len..];
    }
    assert_eq!(
        inserts, 53,
        "every insert made while the dump was held is in its oplog"
    );

    // Without `late`'s files the snapshot is one of a collection made
    // after the listing: only its oplog entries hold it. Replayed with
    // --drop, `late` is created where it does not exist, but an existing
    // `late`, which the restore did not replace, keeps its documents.
    let src = support::source(&format!("mongo:{uri}"));
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|e| !e.path.starts_with("shop/late."))
        .collect();
    for existing in [false, true] {
        let Some(target) = MongoServer::start() else {
            return;
        };
        let tc = support::client(&target.uri("")).await;
        if existing {
            tc.database("shop")
                .collection("late")
                .insert_one(doc! { "_id": "theirs" })
                .await
                .unwrap();
        }
        let r = support::restore(src.as_ref(), &entries, &target.uri(""), &[("drop", "true")])
            .await
            .expect("restore");
        assert_eq!(support::docs(&tc, "shop", "items").await.len(), 51, "{r:?}");
        let late = support::docs(&tc, "shop", "late").await;
        let replay = r
            .actions
            .iter()
            .find(|a| a.action == "replay-oplog")
            .unwrap_or_else(|| panic!("{r:?}"));
        if existing {
            assert_eq!(late, [doc! { "_id": "theirs" }]);
            assert!(
                replay
                    .target
                    .contains("not replayed on existing collections the snapshot holds no data of"),
                "{r:?}"
            );
        } else {
            assert_eq!(late, (0..3).map(|i| doc! { "_id": i }).collect::<Vec<_>>());
        }
    }
    // A merge whose documents a unique index refuses fails the restore,
    // but only after the replay: `late`, new on the target, is brought to
    // the point in time (a second run would find it existing and skip it).
    let Some(target) = MongoServer::start() else {
        return;
    };
    let tc = support::client(&target.uri("")).await;
    let items = tc.database("shop");
    items
        .run_command(doc! { "createIndexes": "items", "indexes": [{ "key": { "x": 1 }, "name": "x_1", "unique": true }] })
        .await
        .unwrap();
    items
        .collection("items")
        .insert_one(doc! { "_id": "theirs" })
        .await
        .unwrap();
    let e = support::restore(src.as_ref(), &entries, &target.uri(""), &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e:?}");
    assert!(
        e.to_string()
            .contains("refused by a unique index other than `_id`"),
        "{e}"
    );
    assert_eq!(
        support::docs(&tc, "shop", "late").await,
        (0..3).map(|i| doc! { "_id": i }).collect::<Vec<_>>()
    );

    // 50 writes into a 20-entry oplog, then a prune: the entry the dump
    // started at is gone.
    std::fs::remove_file(pause.path().join("started")).unwrap();
    std::fs::remove_file(pause.path().join("go")).unwrap();
    let uri = tiny.uri("shop");
    let client = support::client(&uri).await;
    for i in 0..5 {
        client
            .database("shop")
            .collection("items")
            .insert_one(doc! { "_id": i })
            .await
            .unwrap();
    }
    let roll_over = async {
        insert_50(&client).await;
        client
            .database("admin")
            .run_command(doc! { "secantusAdmin.pruneOplog": 1 })
            .await
            .unwrap();
    };
    let err = match held_dump(&uri, pause.path(), roll_over).await {
        Ok((entries, report)) => panic!(
            "a dump missing its oplog window succeeded: {:?} {:?}",
            entries.iter().map(|e| &e.path).collect::<Vec<_>>(),
            report.summary
        ),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    let text = err.to_string();
    assert!(text.contains("oplog rolled over during the dump"), "{text}");
    let hint = err.hint().unwrap_or_default();
    assert!(
        hint.contains("replSetResizeOplog"),
        "the hint says what to do: {err:?}"
    );
}

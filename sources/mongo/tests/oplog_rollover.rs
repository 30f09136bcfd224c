//! A point-in-time dump whose oplog window is lost must fail, not store a
//! dump that silently misses the writes made during it. secantusd-py runs
//! with a 20-entry oplog; the dump is held (test hook
//! `COFFER_TEST_MONGO_PAUSE_DIR`) right after it noted where the oplog
//! starts, while 50 writes and an explicit prune push that start out.

mod common;
mod support;

use std::time::{Duration, Instant};

use coffer_core::ErrorKind;
use common::MongoServer;
use mongodb::bson::doc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_fails_when_the_oplog_rolls_over_during_it() {
    let Some(server) = MongoServer::start_with_oplog(20) else {
        return;
    };
    let uri = server.uri("shop");
    let client = support::client(&uri).await;
    let items = client.database("shop").collection("items");
    for i in 0..5 {
        items.insert_one(doc! { "_id": i }).await.unwrap();
    }
    let pause = tempfile::tempdir().unwrap();
    // SAFETY: set before the capture starts and read only by it; no other
    // thread of this test process reads or writes the environment.
    unsafe { std::env::set_var("COFFER_TEST_MONGO_PAUSE_DIR", pause.path()) };

    let src = support::source(&format!("mongo:{uri}"));
    let capture = tokio::spawn(async move { support::capture(src.as_ref()).await });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pause.path().join("started").exists() {
        assert!(Instant::now() < deadline, "the dump never reached its pause");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 50 writes into a 20-entry oplog, then a prune: the entry the dump
    // started at is gone.
    for i in 100..150 {
        items.insert_one(doc! { "_id": i }).await.unwrap();
    }
    client
        .database("admin")
        .run_command(doc! { "secantusAdmin.pruneOplog": 1 })
        .await
        .unwrap();
    std::fs::write(pause.path().join("go"), b"").unwrap();

    let err = match capture.await.unwrap() {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_within_the_oplog_during_a_held_dump_are_captured() {
    // The same hold without a roll-over: the control for the test above.
    let Some(server) = MongoServer::start_with_oplog(1000) else {
        return;
    };
    let uri = server.uri("shop");
    let client = support::client(&uri).await;
    let items = client.database("shop").collection("items");
    items.insert_one(doc! { "_id": 0 }).await.unwrap();
    let pause = tempfile::tempdir().unwrap();
    // SAFETY: as above.
    unsafe { std::env::set_var("COFFER_TEST_MONGO_PAUSE_DIR", pause.path()) };

    let src = support::source(&format!("mongo:{uri}"));
    let capture = tokio::spawn(async move { support::capture(src.as_ref()).await });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pause.path().join("started").exists() {
        assert!(Instant::now() < deadline, "the dump never reached its pause");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 100..150 {
        items.insert_one(doc! { "_id": i }).await.unwrap();
    }
    std::fs::write(pause.path().join("go"), b"").unwrap();

    let (entries, _report) = capture.await.unwrap().expect("capture");
    let oplog = entries
        .iter()
        .find(|e| e.path.ends_with("oplog.bson"))
        .expect("an oplog.bson entry");
    let mut ops = 0;
    let mut rest = &oplog.data[..];
    while !rest.is_empty() {
        let len = i32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let entry = mongodb::bson::RawDocument::from_bytes(&rest[..len]).unwrap();
        if entry.get_str("op").unwrap() == "i" {
            ops += 1;
        }
        rest = &rest[len..];
    }
    assert_eq!(
        ops, 50,
        "every insert made while the dump was held is in its oplog"
    );
}

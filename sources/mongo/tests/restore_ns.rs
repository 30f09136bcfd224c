//! Namespace selection and renaming on restore (`--ns-include`,
//! `--ns-exclude`, `--ns-from` / `--ns-to`), the per-collection report and
//! the final count check, against a real server.

use coffer_e2e::mongo_server as common;
mod support;

use common::MongoServer;
use mongodb::bson::{Document, doc};
use support::{capture, client, index_specs, names, restore, source};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_exclude_and_rename_into_another_database() {
    let Some((a, b, ca, cb)) = support::source_and_target().await else {
        return;
    };
    for (db, coll, n) in [
        ("issuer-directory", "issuers", 12),
        ("issuer-directory", "cache_tokens", 3),
        ("issuer-directory", "with space", 2),
        ("other", "things", 4),
    ] {
        ca.database(db)
            .collection::<Document>(coll)
            .insert_many((0..n).map(|i| doc! { "_id": i, "c": coll }))
            .await
            .unwrap();
    }
    ca.database("issuer-directory")
        .run_command(doc! { "createIndexes": "issuers", "indexes": [{ "key": { "c": 1, "_id": -1 }, "name": "c_id", "unique": true }] })
        .await
        .unwrap();
    let src = source(&format!("mongo:{}", a.uri("")));
    let (entries, _) = capture(src.as_ref()).await.unwrap();

    let r = restore(
        src.as_ref(),
        &entries,
        &b.uri(""),
        &[
            ("ns-include", "issuer-directory.*"),
            ("ns-exclude", "*.cache_*"),
            ("ns-from", "issuer-directory.*"),
            ("ns-to", "issuer-directory-staging.*"),
        ],
    )
    .await
    .expect("restore");
    assert_eq!(
        names(&cb, "issuer-directory-staging").await,
        ["issuers", "with space"]
    );
    assert!(names(&cb, "issuer-directory").await.is_empty());
    assert!(names(&cb, "other").await.is_empty());
    assert_eq!(
        support::docs(&cb, "issuer-directory-staging", "issuers").await,
        support::docs(&ca, "issuer-directory", "issuers").await
    );
    let specs = index_specs(&cb, "issuer-directory-staging", "issuers").await;
    assert!(specs.iter().any(|s| s.get_str("name") == Ok("c_id")), "{specs:?}");

    // The report: per collection restored, conflicts, indexes, count check.
    let line = r
        .actions
        .iter()
        .find(|a| a.target.contains("issuers"))
        .unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(line.action, "create");
    assert_eq!(
        line.target,
        "issuer-directory.issuers -> issuer-directory-staging.issuers: 12 documents restored, 0 conflicts, \
         1 indexes built, all 12 acknowledged into a new collection"
    );
    let skipped: Vec<&str> = r
        .actions
        .iter()
        .filter(|a| a.action == "skip")
        .map(|a| a.target.as_str())
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(r.actions.len(), 4, "skips come last: {r:?}");
    assert!(r.summary.contains("2 left out"), "{}", r.summary);

    // Again without --drop: all conflicts, nothing changed, counts still ok.
    let r = restore(
        src.as_ref(),
        &entries,
        &b.uri(""),
        &[
            ("ns-include", "issuer-directory.issuers"),
            ("ns-from", "issuer-directory.*"),
            ("ns-to", "issuer-directory-staging.*"),
        ],
    )
    .await
    .expect("merge");
    assert_eq!(r.actions[0].action, "insert", "{r:?}");
    assert!(
        r.actions[0]
            .target
            .contains("0 documents restored, 12 conflicts, 1 indexes built, count 12 ok"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collections_onto_one_target_and_bad_patterns_are_refused() {
    let Some(a) = MongoServer::start() else { return };
    let ca = client(&a.uri("")).await;
    for db in ["one", "two"] {
        ca.database(db)
            .collection::<Document>("c")
            .insert_one(doc! { "_id": 1 })
            .await
            .unwrap();
    }
    let src = source(&format!("mongo:{}", a.uri("")));
    let (entries, _) = capture(src.as_ref()).await.unwrap();
    let e = restore(
        src.as_ref(),
        &entries,
        &a.uri(""),
        &[("ns-from", "*.c"), ("ns-to", "merged.c")],
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), coffer_core::ErrorKind::ConfigInvalid, "{e:?}");
    assert!(e.to_string().contains("merged.c"), "{e}");
    assert_eq!(names(&ca, "merged").await, Vec::<String>::new());
    assert_eq!(names(&ca, "one").await, ["c"], "no staging collection left");

    let e = restore(
        src.as_ref(),
        &entries,
        &a.uri(""),
        &[("ns-from", "one.*"), ("ns-to", "x.c")],
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), coffer_core::ErrorKind::ConfigInvalid, "{e:?}");
    assert!(e.hint().unwrap().contains("--ns-to"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_count_that_differs_from_the_bundle_fails_the_restore() {
    let Some((a, b, ca, cb)) = support::source_and_target().await else {
        return;
    };
    ca.database("app")
        .collection::<Document>("log")
        .insert_many((0..2000).map(|i| doc! { "_id": i, "line": format!("l{i}") }))
        .await
        .unwrap();
    let src = source(&format!("mongo:{}", a.uri("")));
    let (entries, _) = capture(src.as_ref()).await.unwrap();
    // Another client keeps writing into the target while the bundle's
    // documents are merged into it: the count after the merge is not the
    // count before it plus what the restore inserted.
    let log = cb.database("app").collection::<Document>("log");
    log.insert_one(doc! { "_id": -1 }).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut id = 100_000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                log.insert_one(doc! { "_id": id }).await.unwrap();
                id += 1;
            }
            id - 100_000
        }
    });
    let e = restore(src.as_ref(), &entries, &b.uri(""), &[])
        .await
        .unwrap_err();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0);
    assert_eq!(e.kind(), coffer_core::ErrorKind::Integrity, "{e:?}");
    let shown = e.to_string();
    // "… `app.log` holds N documents, expected M": the writer's documents
    // since the count before the merge are the difference.
    let numbers: Vec<u64> = shown
        .split_once("final count check failed: `app.log` holds ")
        .unwrap_or_else(|| panic!("{shown}"))
        .1
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (held, expected) = (numbers[0], numbers[1]);
    assert!(expected >= 2001 && held > expected, "{shown}");
    assert!(e.hint().unwrap().contains("another client"), "{e:?}");
}

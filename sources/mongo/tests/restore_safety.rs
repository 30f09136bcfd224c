//! Against a real server: a ~16 MiB document and 2dsphere index specs
//! round-trip (the test server refuses text indexes: a dump holding one
//! fails the restore cleanly); staging collections an interrupted restore left
//! behind are dropped by the next restore of the same collection; and the
//! `--unsafe-in-place` fallback for servers that cannot rename collections
//! (forced with the test-only param `test-pretend-no-rename`), refused
//! before any collection is replaced.

use coffer_e2e::mongo_server as common;
mod support;

use coffer_core::ErrorKind;
use common::MongoServer;
use futures::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{Binary, Document, RawDocumentBuf, doc, spec::BinarySubtype};
use support::{capture, client, docs, index_specs, names, restore, source};

/// The raw bytes of every document of `db.coll`, in natural order.
async fn raw(client: &Client, db: &str, coll: &str) -> Vec<u8> {
    let docs: Vec<RawDocumentBuf> = client
        .database(db)
        .collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.iter().flat_map(|d| d.as_bytes().to_vec()).collect()
}

fn entry<'a>(entries: &'a [support::Captured], path: &str) -> &'a [u8] {
    &entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} missing"))
        .data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_document_round_trips_byte_identical() {
    let Some((a, b, ca, cb)) = support::source_and_target().await else {
        return;
    };
    let coll = ca.database("app").collection::<Document>("blobs");
    // 16 MiB minus room for the envelope: the largest a server accepts.
    let bytes: Vec<u8> = (0..16 * 1024 * 1024 - 512)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    coll.insert_one(doc! { "_id": 0, "small": "before" })
        .await
        .unwrap();
    coll.insert_one(doc! { "_id": 1, "blob": Binary { subtype: BinarySubtype::Generic, bytes } })
        .await
        .unwrap();
    coll.insert_one(doc! { "_id": 2, "small": "after" })
        .await
        .unwrap();
    let original = raw(&ca, "app", "blobs").await;
    assert!(original.len() > 16 * 1024 * 1024 - 512, "{}", original.len());

    let src = source(&format!("mongo:{}", a.uri("app")));
    let (entries, report) = capture(src.as_ref()).await.unwrap();
    assert_eq!(entry(&entries, "app/blobs.bson"), &original[..]);
    assert_eq!(report.details["collections"][0]["documents"], 3);
    assert_eq!(report.details["collections"][0]["spilled"], true);

    restore(src.as_ref(), &entries, &b.uri(""), &[("drop", "true")])
        .await
        .expect("restore");
    assert_eq!(raw(&cb, "app", "blobs").await, original);
    assert_eq!(names(&cb, "app").await, ["blobs"]);
}

/// A text index spec as mongodump writes it into `.metadata.json`.
const TEXT_INDEX: &str = r#"{"v":{"$numberInt":"2"},"key":{"_fts":"text","_ftsx":{"$numberInt":"1"}},"name":"search","weights":{"body":{"$numberInt":"1"},"title":{"$numberInt":"10"}},"default_language":"english","language_override":"lang","textIndexVersion":{"$numberInt":"3"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_d_sphere_index_specs_round_trip_and_a_refused_text_index_changes_nothing() {
    let Some((a, b, ca, cb)) = support::source_and_target().await else {
        return;
    };
    let db = ca.database("geo");
    db.collection::<Document>("places")
        .insert_many((0..20).map(|i| {
            doc! {
                "_id": i,
                "title": format!("place {i}"),
                "loc": { "type": "Point", "coordinates": [13.4 + f64::from(i) / 100.0, 52.5] },
                "area": { "type": "Polygon", "coordinates": [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]] },
            }
        }))
        .await
        .unwrap();
    db.run_command(doc! { "createIndexes": "places", "indexes": [
        { "key": { "loc": "2dsphere" }, "name": "loc_2dsphere", "2dsphereIndexVersion": 3 },
        { "key": { "area": "2dsphere", "title": 1 }, "name": "area_title", "sparse": true },
    ] })
    .await
    .unwrap();
    // The test server refuses text indexes (real mongod builds them); the
    // restore of a dump holding one is checked below.
    let text = db
        .run_command(
            doc! { "createIndexes": "places", "indexes": [{ "key": { "title": "text" }, "name": "t" }] },
        )
        .await
        .unwrap_err();
    assert!(
        text.to_string().contains("text indexes are not supported"),
        "{text}"
    );
    let before = index_specs(&ca, "geo", "places").await;
    let names_of = |specs: &[Document]| -> Vec<String> {
        specs
            .iter()
            .map(|s| s.get_str("name").unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names_of(&before),
        ["_id_", "area_title", "loc_2dsphere"],
        "{before:?}"
    );

    let src = source(&format!("mongo:{}", a.uri("geo")));
    let (mut entries, report) = capture(src.as_ref()).await.unwrap();
    assert_eq!(report.details["collections"][0]["indexes"], 3);
    let r = restore(src.as_ref(), &entries, &b.uri(""), &[("drop", "true")])
        .await
        .expect("restore");
    assert!(r.actions[0].target.contains("2 indexes built"), "{r:?}");
    assert_eq!(index_specs(&cb, "geo", "places").await, before);
    let near = doc! { "loc": { "$near": { "$geometry": { "type": "Point", "coordinates": [13.4, 52.5] } } } };
    let first = cb
        .database("geo")
        .collection::<Document>("places")
        .find_one(near)
        .await
        .unwrap();
    assert_eq!(
        first.and_then(|d| d.get_i32("_id").ok()),
        Some(0),
        "the 2dsphere index answers $near"
    );

    // A dump holding a text index: the spec is sent verbatim; the server's
    // refusal fails the restore with its reason, before anything is swapped.
    let meta = entries
        .iter_mut()
        .find(|e| e.path == "geo/places.metadata.json")
        .unwrap();
    let json = String::from_utf8(meta.data.clone()).unwrap();
    meta.data = json
        .replacen(r#""indexes":["#, &format!(r#""indexes":[{TEXT_INDEX},"#), 1)
        .into_bytes();
    cb.database("geo")
        .collection::<Document>("places")
        .insert_one(doc! { "_id": "live" })
        .await
        .unwrap();
    let e = restore(src.as_ref(), &entries, &b.uri(""), &[("drop", "true")])
        .await
        .unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains("cannot build the indexes of `geo.places`"),
        "{shown}"
    );
    assert!(shown.contains("text indexes are not supported"), "{shown}");
    assert_eq!(names(&cb, "geo").await, ["places"], "no staging collection left");
    assert_eq!(
        support::docs(&cb, "geo", "places").await.len(),
        21,
        "original untouched"
    );
}

/// A staging collection as a killed restore leaves it (with documents).
async fn leave_staging(c: &Client, db: &str, name: &str) {
    c.database(db)
        .collection::<Document>(name)
        .insert_many((0..5).map(|i| doc! { "_id": i, "half": true }))
        .await
        .unwrap();
}

/// `app.users` of 10 documents dumped from `a`, and a target whose
/// `app.users` holds one document of its own, `{_id: "live"}`.
async fn users_over_a_live_target(
    a: &MongoServer,
    ca: &Client,
    cb: &Client,
) -> (std::sync::Arc<dyn coffer_core::Source>, Vec<support::Captured>) {
    support::seed(&ca.database("app"), "users", 10).await;
    let src = source(&format!("mongo:{}", a.uri("app")));
    let (entries, _) = capture(src.as_ref()).await.unwrap();
    cb.database("app")
        .collection::<Document>("users")
        .insert_one(doc! { "_id": "live" })
        .await
        .unwrap();
    (src, entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staging_collection_replaced_meanwhile_is_never_swapped_in() {
    let Some((a, b, ca, cb)) = support::source_and_target().await else {
        return;
    };
    let (src, entries) = users_over_a_live_target(&a, &ca, &cb).await;

    // Once the staging collection is filled, another client (a second
    // restore sweeping it as stale) drops it, and something re-creates it
    // with part of the documents: same name, not the same collection.
    let handle = tokio::runtime::Handle::current();
    let db = cb.database("app");
    let e = support::restore_hooked(
        src.as_ref(),
        &entries,
        &b.uri(""),
        &[("drop", "true")],
        true,
        move || {
            handle.block_on(async {
                let names = db.list_collection_names().await.unwrap();
                let staging = names
                    .iter()
                    .find(|n| n.starts_with("users.coffer-staging-"))
                    .unwrap_or_else(|| panic!("no staging collection in {names:?}"));
                let c = db.collection::<Document>(staging);
                c.drop().await.unwrap();
                c.insert_many((0..3).map(|i| doc! { "_id": i })).await.unwrap();
            })
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e:?}");
    assert!(
        e.to_string()
            .contains("was dropped or replaced by another client")
            && e.to_string().contains("`app.users` was not replaced"),
        "{e}"
    );
    assert!(e.hint().unwrap().contains("one restore at a time"), "{e:?}");
    // The original is untouched and the impostor is gone.
    assert_eq!(docs(&cb, "app", "users").await, vec![doc! { "_id": "live" }]);
    assert_eq!(names(&cb, "app").await, ["users"]);
}

/// `app.users` of `n` documents and the view `app.report` of those that
/// `filter` matches, dumped from `a`.
async fn users_and_a_report_view(
    a: &MongoServer,
    ca: &Client,
    n: i32,
    filter: Document,
) -> (std::sync::Arc<dyn coffer_core::Source>, Vec<support::Captured>) {
    let adb = ca.database("app");
    support::seed(&adb, "users", n).await;
    adb.run_command(doc! { "create": "report", "viewOn": "users", "pipeline": [{ "$match": filter }] })
        .await
        .unwrap();
    let src = source(&format!("mongo:{}", a.uri("app")));
    let (entries, _) = capture(src.as_ref()).await.unwrap();
    (src, entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_never_replaces_a_collection_and_a_view_is_replaced_by_its_new_definition() {
    let Some((a, b, ca, cb)) = support::source_and_target().await else {
        return;
    };
    let (src, entries) = users_and_a_report_view(&a, &ca, 4, doc! { "_id": { "$gte": 2 } }).await;

    // On the target `report` is a collection with documents of its own.
    let bdb = cb.database("app");
    support::seed(&bdb, "users", 1).await;
    support::seed(&bdb, "report", 2).await;
    let e = restore(src.as_ref(), &entries, &b.uri(""), &[("drop", "true")])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e:?}");
    assert!(
        e.to_string()
            .contains("is a view in the snapshot but a collection on the server"),
        "{e}"
    );
    assert!(e.hint().unwrap().contains("--ns-exclude 'app.report'"), "{e:?}");
    // Refused before anything was swapped: both collections as they were.
    assert_eq!(docs(&cb, "app", "report").await.len(), 2);
    assert_eq!(docs(&cb, "app", "users").await, vec![doc! { "_id": 0 }]);
    assert_eq!(names(&cb, "app").await, ["report", "users"]);

    // Where `report` is an older view, --drop replaces its definition (and
    // sweeps the probe view a killed restore left).
    bdb.collection::<Document>("report").drop().await.unwrap();
    for name in ["report", "report.coffer-staging-0badf00d"] {
        bdb.run_command(doc! { "create": name, "viewOn": "users", "pipeline": [] })
            .await
            .unwrap();
    }
    let r = restore(src.as_ref(), &entries, &b.uri(""), &[("drop", "true")])
        .await
        .expect("restore");
    assert!(
        r.actions.iter().any(|a| a.action == "drop-stale-staging"
            && a.target.starts_with("app.report.coffer-staging-0badf00d")),
        "{r:?}"
    );
    assert_eq!(
        docs(&cb, "app", "report").await,
        vec![doc! { "_id": 2 }, doc! { "_id": 3 }]
    );
    assert_eq!(names(&cb, "app").await, ["report", "users"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_tells_id_conflicts_from_documents_another_unique_index_refused() {
    let (Some(a), Some(b)) = (MongoServer::start(), MongoServer::start()) else {
        return;
    };
    let email_unique = doc! { "createIndexes": "people", "indexes": [{ "key": { "email": 1 }, "name": "email_1", "unique": true }] };
    let ca = client(&a.uri("")).await;
    let adb = ca.database("app");
    adb.run_command(email_unique.clone()).await.unwrap();
    adb.collection::<Document>("people")
        .insert_many([
            doc! { "_id": 1, "email": "same-id@x" },
            doc! { "_id": 2, "email": "taken@x" },
            doc! { "_id": 3, "email": "new@x" },
        ])
        .await
        .unwrap();
    let src = source(&format!("mongo:{}", a.uri("app")));
    let (entries, _) = capture(src.as_ref()).await.unwrap();

    let cb = client(&b.uri("")).await;
    let bdb = cb.database("app");
    bdb.run_command(email_unique).await.unwrap();
    bdb.collection::<Document>("people")
        .insert_many([
            doc! { "_id": 1, "email": "mine@x" },
            doc! { "_id": 99, "email": "taken@x" },
        ])
        .await
        .unwrap();
    // Without --drop: _id 1 is a conflict (kept), _id 3 is inserted, and
    // _id 2 is refused by email_1 — not an _id conflict, a lost document.
    let e = restore(src.as_ref(), &entries, &b.uri(""), &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e:?}");
    assert!(
        e.to_string().contains(
            "`app.people`: 1 documents of the snapshot were refused by a unique index other than `_id`"
        ),
        "{e}"
    );
    let mut people = docs(&cb, "app", "people").await;
    people.sort_by_key(|d| d.get_i32("_id").unwrap());
    assert_eq!(
        people,
        vec![
            doc! { "_id": 1, "email": "mine@x" },
            doc! { "_id": 3, "email": "new@x" },
            doc! { "_id": 99, "email": "taken@x" },
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_failing_part_way_says_what_is_already_restored() {
    let Some((a, b, ca, cb)) = support::source_and_target().await else {
        return;
    };
    let (src, mut entries) = users_and_a_report_view(&a, &ca, 3, doc! { "_id": 1 }).await;
    // A view definition the server refuses (an option it does not know):
    // views are created after the collections are swapped in.
    let view = entries
        .iter_mut()
        .find(|e| e.path == "app/report.metadata.json")
        .expect("the view's metadata");
    let json = String::from_utf8(view.data.clone()).unwrap();
    assert!(json.contains("\"viewOn\":"), "{json}");
    view.data = json
        .replacen("\"viewOn\":", "\"noSuchOption\":1,\"viewOn\":", 1)
        .into_bytes();

    let e = restore(src.as_ref(), &entries, &b.uri(""), &[("drop", "true")])
        .await
        .unwrap_err();
    let shown = format!("{e}");
    assert!(shown.contains("cannot create view `app.report`"), "{shown}");
    assert!(shown.contains("already restored: app.users"), "{shown}");
    assert!(shown.contains("not restored: app.report"), "{shown}");
    assert_eq!(docs(&cb, "app", "users").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_staging_collections_of_the_target_are_dropped_first() {
    let Some((a, b, ca, cb)) = support::source_and_target().await else {
        return;
    };
    let (src, entries) = users_over_a_live_target(&a, &ca, &cb).await;
    leave_staging(&cb, "app", "users.coffer-staging-0badf00d").await;
    // Not staging collections of `users`: another collection's, and a
    // user's collection that only looks similar.
    leave_staging(&cb, "app", "users2.coffer-staging-0badf00d").await;
    leave_staging(&cb, "app", "users.coffer-staging-notes").await;

    let r = restore(src.as_ref(), &entries, &b.uri(""), &[("drop", "true")])
        .await
        .expect("restore");
    let stale: Vec<&str> = r
        .actions
        .iter()
        .filter(|a| a.action == "drop-stale-staging")
        .map(|a| a.target.as_str())
        .collect();
    assert_eq!(
        stale,
        ["app.users.coffer-staging-0badf00d (left by an interrupted restore)"],
        "{r:?}"
    );
    assert_eq!(
        names(&cb, "app").await,
        [
            "users",
            "users.coffer-staging-notes",
            "users2.coffer-staging-0badf00d"
        ]
    );
    assert_eq!(support::docs(&cb, "app", "users").await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rename_drop_needs_unsafe_in_place() {
    let Some((a, b, ca, cb)) = support::source_and_target().await else {
        return;
    };
    let adb = ca.database("app");
    adb.run_command(doc! { "create": "users", "validator": { "age": { "$gte": 0 } } })
        .await
        .unwrap();
    adb.collection::<Document>("users")
        .insert_many((0..30).map(|i| doc! { "_id": i, "email": format!("u{i}@x"), "age": i }))
        .await
        .unwrap();
    adb.run_command(doc! { "createIndexes": "users", "indexes": [{ "key": { "email": 1 }, "name": "email_1", "unique": true }] })
        .await
        .unwrap();
    support::seed(&adb, "events", 4).await;
    let src = source(&format!("mongo:{}", a.uri("app")));
    let (entries, _) = capture(src.as_ref()).await.unwrap();

    let live = cb.database("app").collection::<Document>("users");
    live.insert_many((0..3).map(|i| doc! { "_id": format!("live{i}") }))
        .await
        .unwrap();
    let pretend = ("test-pretend-no-rename", "true");

    // --drop alone: refused before anything is replaced, nothing left over.
    let e = restore(src.as_ref(), &entries, &b.uri(""), &[("drop", "true"), pretend])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e:?}");
    let shown = format!("{e}");
    assert!(shown.contains("cannot rename collections"), "{shown}");
    assert!(
        e.hint().unwrap_or_default().contains("--unsafe-in-place"),
        "{e:?}"
    );
    assert_eq!(
        live.count_documents(doc! {}).await.unwrap(),
        3,
        "original untouched"
    );
    let left = names(&cb, "app").await;
    assert!(left.iter().all(|n| !n.contains("coffer-staging")), "{left:?}");

    // --drop --unsafe-in-place: dropped, recreated with options and
    // indexes, filled from the verified staging collection.
    let r = restore(
        src.as_ref(),
        &entries,
        &b.uri(""),
        &[("drop", "true"), ("unsafe-in-place", "true"), pretend],
    )
    .await
    .expect("in place");
    let users = r
        .actions
        .iter()
        .find(|a| a.target.starts_with("app.users"))
        .unwrap();
    assert_eq!(users.action, "replace-in-place", "{r:?}");
    assert!(users.target.contains("not atomically"), "{r:?}");
    assert!(users.target.contains("30 documents restored"), "{r:?}");
    assert!(users.target.contains("count 30 ok"), "{r:?}");
    assert_eq!(names(&cb, "app").await, ["events", "users"]);
    assert_eq!(
        support::docs(&cb, "app", "users").await,
        support::docs(&ca, "app", "users").await
    );
    assert_eq!(
        index_specs(&cb, "app", "users").await,
        index_specs(&ca, "app", "users").await
    );
    let options = |c: Client| async move {
        let specs: Vec<Document> = c
            .database("app")
            .run_cursor_command(doc! { "listCollections": 1, "filter": { "name": "users" } })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        specs[0].get_document("options").unwrap().clone()
    };
    assert_eq!(options(cb.clone()).await, options(ca.clone()).await);
    // The validator came back: a document breaking it is refused.
    assert!(live.insert_one(doc! { "_id": "bad", "age": -1 }).await.is_err());

    // A collection new to the server needs no flag and no rename: it is
    // loaded in place (marked unfinished until the commit).
    cb.database("app").drop().await.unwrap();
    let r = restore(src.as_ref(), &entries, &b.uri(""), &[("drop", "true"), pretend])
        .await
        .expect("new collections");
    let actions: Vec<&str> = r.actions.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["create", "create"], "{r:?}");
    assert_eq!(options(cb.clone()).await, options(ca.clone()).await);
    // With `always-stage` the server's missing rename makes them in place.
    cb.database("app").drop().await.unwrap();
    let r = restore(
        src.as_ref(),
        &entries,
        &b.uri(""),
        &[("drop", "true"), ("always-stage", "true"), pretend],
    )
    .await
    .expect("new collections, staged");
    let actions: Vec<&str> = r.actions.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["create-in-place", "create-in-place"], "{r:?}");
    assert_eq!(live.count_documents(doc! {}).await.unwrap(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_the_server_cannot_do_refuses_before_any_collection_is_replaced() {
    // secantusd-py's renameCollection drops collection options: a --drop
    // of `b_capped` over an existing one is refused, and `a_plain`, which
    // sorts first and could be swapped, must not have been replaced.
    let Some((a, b, ca, cb)) = support::source_and_target().await else {
        return;
    };
    let adb = ca.database("app");
    adb.run_command(doc! { "create": "b_capped", "capped": true, "size": 65536 })
        .await
        .unwrap();
    support::seed(&adb, "b_capped", 3).await;
    support::seed(&adb, "a_plain", 3).await;
    let src = source(&format!("mongo:{}", a.uri("app")));
    let (entries, _) = capture(src.as_ref()).await.unwrap();

    let bdb = cb.database("app");
    bdb.run_command(doc! { "create": "b_capped", "capped": true, "size": 65536 })
        .await
        .unwrap();
    bdb.collection::<Document>("a_plain")
        .insert_one(doc! { "_id": "live" })
        .await
        .unwrap();
    let e = restore(src.as_ref(), &entries, &b.uri(""), &[("drop", "true")])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e:?}");
    assert!(format!("{e}").contains("`app.b_capped`"), "{e}");
    assert!(
        format!("{e}").contains("capped"),
        "names what a rename would lose: {e}"
    );
    assert_eq!(
        docs(&cb, "app", "a_plain").await,
        [doc! { "_id": "live" }],
        "a_plain was replaced before the refusal"
    );
    let left = names(&cb, "app").await;
    assert_eq!(
        left,
        ["a_plain", "b_capped"],
        "no staging or probe collection left"
    );
}

/// A collection the target lacks is loaded in place (no staging copy, no
/// rename), marked unfinished until the commit: an aborted restore leaves
/// neither it nor its marker, and a marker a killed restore left makes the
/// next restore drop the half-loaded collection before loading it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_collection_is_loaded_in_place_and_an_unfinished_load_is_dropped() {
    let Some((a, b, ca, cb)) = support::source_and_target().await else {
        return;
    };
    support::seed(&ca.database("app"), "users", 10).await;
    let src = source(&format!("mongo:{}", a.uri("app")));
    let (entries, _) = capture(src.as_ref()).await.unwrap();

    // While the load runs, the target itself holds the documents and a
    // marker says it is unfinished; an abort drops both.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (seen2, cb2) = (seen.clone(), cb.clone());
    let handle = tokio::runtime::Handle::current();
    let r = support::restore_hooked(src.as_ref(), &entries, &b.uri(""), &[], false, move || {
        *seen2.lock().unwrap() = handle.block_on(names(&cb2, "app"));
    })
    .await
    .expect("aborted restore");
    let during = seen.lock().unwrap().clone();
    assert_eq!(during.len(), 2, "{during:?}");
    assert_eq!(during[0], "users");
    assert!(during[1].starts_with("users.coffer-restoring-"), "{during:?}");
    assert!(r.actions.iter().all(|a| a.action != "create"), "{r:?}");
    assert_eq!(
        names(&cb, "app").await,
        Vec::<String>::new(),
        "an abort leaves nothing"
    );

    // A killed load: half the documents and its marker.
    leave_staging(&cb, "app", "users").await;
    leave_staging(&cb, "app", "users.coffer-restoring-0badf00d").await;
    let r = restore(src.as_ref(), &entries, &b.uri(""), &[])
        .await
        .expect("restore");
    assert!(
        r.actions
            .iter()
            .any(|a| a.action == "drop-stale-staging" && a.target.starts_with("app.users ")),
        "{r:?}"
    );
    assert_eq!(names(&cb, "app").await, ["users"]);
    assert_eq!(raw(&cb, "app", "users").await, raw(&ca, "app", "users").await);
    assert!(r.actions.iter().any(|a| a.action == "create"), "{r:?}");

    // Staging everything (param `always-stage`) keeps the data invisible
    // until the swap.
    cb.database("app").drop().await.unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (seen2, cb2) = (seen.clone(), cb.clone());
    let handle = tokio::runtime::Handle::current();
    support::restore_hooked(
        src.as_ref(),
        &entries,
        &b.uri(""),
        &[("always-stage", "true")],
        true,
        move || {
            *seen2.lock().unwrap() = handle.block_on(names(&cb2, "app"));
        },
    )
    .await
    .expect("staged restore");
    let during = seen.lock().unwrap().clone();
    assert!(
        during.len() == 1 && during[0].starts_with("users.coffer-staging-"),
        "{during:?}"
    );
    assert_eq!(raw(&cb, "app", "users").await, raw(&ca, "app", "users").await);
}

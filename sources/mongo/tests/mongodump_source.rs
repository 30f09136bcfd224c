//! The `mongodump` source: every fixture of real mongodump output in
//! `tests/fixtures/mongodump/` (from mongo-tools' test data) is read and
//! restored into a real server with the right documents, indexes and
//! names; malformed archives are refused with clear errors.

use coffer_e2e::mongo_server as common;
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};

use coffer_core::ErrorKind;
use common::MongoServer;
use mongodb::Client;
use mongodb::bson::{Document, doc, oid::ObjectId};
use support::{Captured, capture, client, index_specs, names, restore, source};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mongodump")
        .join(rel)
}

fn spec(p: &Path) -> String {
    format!("mongodump:{}", p.display())
}

/// Captures a fixture and restores it into `server` with `--drop`.
async fn load(server: &MongoServer, p: &Path) -> (Vec<Captured>, coffer_core::SourceReport) {
    let src = source(&spec(p));
    src.check().await.expect("check");
    let (entries, report) = capture(src.as_ref()).await.expect("capture");
    let r = restore(src.as_ref(), &entries, &server.uri(""), &[("drop", "true")])
        .await
        .expect("restore");
    assert!(
        r.actions.iter().all(|a| a.target.contains(" ok")
            || a.target.contains("acknowledged into a new collection")
            || a.action.ends_with("view")),
        "{r:?}"
    );
    (entries, report)
}

/// Index names and keys of `db.coll`.
async fn keys(c: &Client, db: &str, coll: &str) -> Vec<(String, Document)> {
    index_specs(c, db, coll)
        .await
        .into_iter()
        .map(|s| {
            (
                s.get_str("name").unwrap().to_string(),
                s.get_document("key").unwrap().clone(),
            )
        })
        .collect()
}

fn oid(s: &str) -> ObjectId {
    ObjectId::parse_str(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_directory_fixture_restores_with_its_names_and_indexes() {
    let Some(server) = MongoServer::start() else {
        return;
    };
    let c = client(&server.uri("")).await;

    // foodump: test.foo, _id index only.
    let (entries, report) = load(&server, &fixture("foodump")).await;
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["test/foo.bson", "test/foo.metadata.json"]);
    assert_eq!(
        entries[0].data,
        std::fs::read(fixture("foodump/test/foo.bson")).unwrap(),
        "documents are passed through byte for byte"
    );
    assert_eq!(report.details["format"], "directory");
    assert_eq!(report.details["collections"][0]["documents"], 1);
    assert_eq!(
        support::docs(&c, "test", "foo").await,
        [doc! { "_id": oid("5dfa3b591dee33706cdf3eff"), "foo": 1.0 }]
    );
    assert_eq!(keys(&c, "test", "foo").await.len(), 1);

    // coll_with_index: test.foo again (replaced with --drop), with f_1.
    load(&server, &fixture("coll_with_index")).await;
    assert_eq!(
        support::docs(&c, "test", "foo").await,
        [doc! { "_id": oid("605c74db479d533a6e39d860"), "f": 1.0 }]
    );
    assert_eq!(
        keys(&c, "test", "foo").await,
        [
            ("_id_".to_string(), doc! { "_id": 1 }),
            ("f_1".to_string(), doc! { "f": 1.0 })
        ]
    );

    // indextestdump: a legacy index (v: 1, key values true, Decimal 0, "")
    // is converted as mongorestore --convertLegacyIndexes does.
    load(&server, &fixture("indextestdump")).await;
    let docs = support::docs(&c, "indextest", "test_collection").await;
    assert_eq!(docs.len(), 100);
    assert_eq!(docs[2], doc! { "_id": oid("558b2d624fb5110b23b68fd4"), "a": 2.0 });
    let specs = index_specs(&c, "indextest", "test_collection").await;
    let legacy = specs
        .iter()
        .find(|s| s.get_str("name") == Ok("a_1_b_true"))
        .unwrap_or_else(|| panic!("{specs:?}"));
    assert_eq!(
        legacy.get_document("key").unwrap(),
        &doc! { "a": 1.0, "b": 1, "c": 1, "d": 1 }
    );
    assert!(!legacy.contains_key("safe"), "{legacy:?}");

    // specialcharacter: `cafés`, escaped in the file name as caf%C3%A9s.
    let (entries, _) = load(&server, &fixture("specialcharacter")).await;
    assert!(entries.iter().any(|e| e.path == "db1/caf%C3%A9s.bson"));
    assert_eq!(names(&c, "db1").await, ["cafés"]);
    assert_eq!(
        support::docs(&c, "db1", "cafés").await,
        [doc! { "_id": oid("5f060b4c286d490ac33c4a35"), "A": 1.0 }]
    );

    // longcollectionname: the file name is truncated with %24<hash>; the
    // real name comes from the metadata.
    load(&server, &fixture("longcollectionname")).await;
    let long = "aVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVery\
                VeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVeryVery\
                LongCollectionNameConsistingOfExactlyTwoHundredAndFortySevenCharacters";
    assert_eq!(long.len(), 247);
    assert_eq!(names(&c, "db1").await, [long, "cafés"]);
    assert_eq!(
        support::docs(&c, "db1", long).await,
        [doc! { "_id": oid("5ea08711c959aa2047977b7a"), "a": 1.0 }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_directory_with_prelude_restores() {
    let Some(server) = MongoServer::start() else {
        return;
    };
    let c = client(&server.uri("")).await;
    let (entries, report) = load(&server, &fixture("prelude_test/prelude_gzip")).await;
    assert_eq!(report.details["format"], "directory (gzip)");
    assert_eq!(report.details["server_version"], "7.0.16");
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["test/foo.bson", "test/foo.metadata.json"],
        "stored uncompressed"
    );
    assert_eq!(
        support::docs(&c, "test", "foo").await,
        [doc! { "_id": oid("5dfa3b591dee33706cdf3eff"), "foo": 1.0 }]
    );
}

#[tokio::test]
async fn a_prelude_in_a_database_folder_is_part_of_the_dump() {
    // mongodump 100.x writes prelude.json into each database folder too.
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    std::fs::create_dir_all(dump.join("test")).unwrap();
    let from = fixture("prelude_test/prelude_gzip");
    for f in ["test/foo.bson.gz", "test/foo.metadata.json.gz"] {
        std::fs::copy(from.join(f), dump.join(f)).unwrap();
    }
    let prelude = r#"{"ServerVersion":"7.0.16","ToolVersion":"100.10.0"}"#;
    std::fs::write(dump.join("prelude.json"), prelude).unwrap();
    std::fs::write(dump.join("test/prelude.json"), prelude).unwrap();
    let (entries, report) = capture(source(&spec(&dump)).as_ref()).await.unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["test/foo.bson", "test/foo.metadata.json"]);
    assert_eq!(report.details["tool_version"], "100.10.0");
    let left_out = report.details["left_out"].as_array().map_or(0, Vec::len);
    assert_eq!(left_out, 0, "{report:?}");
    assert!(!report.summary.contains("left out"), "{}", report.summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_plain_and_gzipped_restores_and_renames() {
    let Some(server) = MongoServer::start() else {
        return;
    };
    let c = client(&server.uri("")).await;
    let (entries, report) = load(&server, &fixture("test.bar.archive")).await;
    assert_eq!(report.details["format"], "archive");
    assert_eq!(report.details["server_version"], "3.4.3");
    let left_out = report.details["left_out"].to_string();
    assert!(left_out.contains("admin.system.version"), "{left_out}");
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["test/bar.bson", "test/bar.metadata.json"]);
    let expected = [doc! { "_id": oid("58ffb124b721bc6c3234333c"), "foo": "bar" }];
    assert_eq!(support::docs(&c, "test", "bar").await, expected);
    assert_eq!(names(&c, "test").await, ["bar"]);
    assert!(names(&c, "admin").await.iter().all(|n| !n.contains("staging")));

    // The same archive gzipped (detected by content, whatever its name),
    // restored under another name with --ns-from/--ns-to.
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("dump.archive");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&std::fs::read(fixture("test.bar.archive")).unwrap())
        .unwrap();
    enc.finish().unwrap();
    let src = source(&spec(&gz));
    let (entries, report) = capture(src.as_ref()).await.unwrap();
    assert_eq!(report.details["format"], "archive (gzip)");
    let r = restore(
        src.as_ref(),
        &entries,
        &server.uri(""),
        &[("ns-from", "test.*"), ("ns-to", "test-staging.*")],
    )
    .await
    .unwrap();
    assert!(
        r.actions[0]
            .target
            .starts_with("test.bar -> test-staging.bar: 1 documents restored"),
        "{r:?}"
    );
    assert_eq!(support::docs(&c, "test-staging", "bar").await, expected);
}

/// The fixture archive with `edit` applied, captured: the error.
async fn broken(edit: impl FnOnce(&mut Vec<u8>)) -> coffer_core::Error {
    let mut bytes = std::fs::read(fixture("test.bar.archive")).unwrap();
    edit(&mut bytes);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.archive");
    std::fs::write(&p, &bytes).unwrap();
    let src = source(&spec(&p));
    capture(src.as_ref()).await.unwrap_err()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} not found"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_archives_are_refused_clearly() {
    let check = |e: coffer_core::Error, want: &str| {
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e:?}");
        assert!(e.to_string().contains(want), "`{e}` lacks `{want}`");
        assert!(e.hint().is_some(), "{e:?}");
    };
    check(broken(|b| b[0] ^= 0xff).await, "bad magic number");
    check(
        broken(|b| {
            let i = find(b, b"tool_version");
            b[i..i + 12].copy_from_slice(b"tool_versioX");
        })
        .await,
        "unknown key `tool_versioX`",
    );
    check(
        broken(|b| {
            // A byte of test.bar's document: its CRC no longer matches.
            let i = find(b, b"foo\0\x04\0\0\0bar");
            b[i + 8] = b'z';
        })
        .await,
        "CRC mismatch in namespace `test.bar`",
    );
    check(
        broken(|b| {
            // Cut the final EOF block of test.bar.
            let i = b.len() - 4 - 1;
            let eof = b[..i].windows(4).rposition(|w| w == [0xff; 4]).unwrap() + 4;
            b.truncate(eof);
        })
        .await,
        "reached their EOF block: test.bar",
    );
    check(
        broken(|b| {
            let i = find(
                b,
                b"\x02db\0\x05\0\0\0test\0\x02collection\0\x04\0\0\0bar\0\x08EOF\0\0",
            ) - 4;
            let doc = i + i32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
            // The first document after test.bar's opening header claims 17 MiB.
            b[doc..doc + 4].copy_from_slice(&(17 * 1024 * 1024i32).to_le_bytes());
        })
        .await,
        "over the 16 MiB BSON limit",
    );
    let e = source("mongodump:/nonexistent/dump").check().await.unwrap_err();
    assert!(e.hint().unwrap().contains("mongodump"), "{e:?}");
}

/// The BSON bytes of `d`.
fn bson(d: &Document) -> Vec<u8> {
    let mut out = Vec::new();
    d.to_writer(&mut out).unwrap();
    out
}

/// A document `{a: {a: … {}}}` nested `depth` deep, built without
/// recursion.
fn nested(depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for level in (1..=depth).rev() {
        let size = 5 + 8 * level as i32;
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&[0x03, b'a', 0]);
    }
    out.extend_from_slice(&[5, 0, 0, 0, 0]);
    out.extend(std::iter::repeat_n(0u8, depth));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_are_refused_without_crashing_or_piling_up_memory() {
    let check = |e: coffer_core::Error, want: &str| {
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e:?}");
        assert!(e.to_string().contains(want), "`{e}` lacks `{want}`");
    };
    // A header field nested 20000 deep: refused before it is decoded
    // (decoding it would overflow the stack and abort the process).
    check(
        broken(|b| {
            let len = i32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
            let deep = nested(20_000);
            let mut header = Vec::new();
            let size = 4 + 1 + 8 + deep.len() + 1;
            header.extend_from_slice(&(size as i32).to_le_bytes());
            header.push(0x03);
            header.extend_from_slice(b"version\0");
            header.extend_from_slice(&deep);
            header.push(0);
            b.splice(4..4 + len, header);
        })
        .await,
        "`version` of the archive header is not a plain value",
    );
    // A database name no server accepts (and a path of two folders).
    check(
        broken(|b| {
            let (from, to) = (b"\x05\0\0\0test\0", b"\x05\0\0\0te/t\0");
            while let Some(i) = b.windows(from.len()).position(|w| w == from) {
                b[i..i + from.len()].copy_from_slice(to);
            }
        })
        .await,
        "`te/t` is not a valid database name",
    );
    // 257 namespaces opened and none closed: each would hold a buffer.
    let mut b = 0x8199_e26du32.to_le_bytes().to_vec();
    b.extend(bson(
        &doc! { "version": "0.1", "server_version": "8.0.0", "tool_version": "100.9.0" },
    ));
    b.extend((-1i32).to_le_bytes());
    for i in 0..257 {
        b.extend(bson(&doc! { "db": "d", "collection": format!("c{i}") }));
        b.extend(bson(&doc! { "_id": i }));
        b.extend((-1i32).to_le_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("many.archive");
    std::fs::write(&p, &b).unwrap();
    check(
        capture(source(&spec(&p)).as_ref()).await.unwrap_err(),
        "more than 256 namespaces are open at once",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_directories_are_read_whole_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    let db = dump.join("app");
    std::fs::create_dir_all(&db).unwrap();
    // A plain .bson whose first document is 35,615 bytes long: it starts
    // with the gzip magic (1f 8b), and must still be read as plain BSON.
    let first = bson(&doc! { "_id": 1, "pad": "x".repeat(35_591) });
    assert_eq!(&first[..2], [0x1f, 0x8b]);
    let mut body = first.clone();
    body.extend(bson(&doc! { "_id": 2 }));
    std::fs::write(db.join("c.bson"), &body).unwrap();
    // A database folder that is a symlink is followed.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("d.bson"), bson(&doc! { "_id": 3 })).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dump.join("linked")).unwrap();
    // A file mongodump never writes: left out, and said so in the report.
    std::fs::write(db.join("c.bson.zst"), b"?").unwrap();

    let (entries, report) = capture(source(&spec(&dump)).as_ref()).await.unwrap();
    assert_eq!(
        report.details["left_out"],
        serde_json::json!(["app/c.bson.zst: not a file mongodump writes"]),
        "{:?}",
        report.details
    );
    let find = |path: &str| {
        entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no {path}: {:?}", report.details))
    };
    assert_eq!(find("app/c.bson").data, body);
    assert_eq!(find("linked/d.bson").data, bson(&doc! { "_id": 3 }));

    // The same collection twice (plain and gzip): refused, not one dropped.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&body).unwrap();
    std::fs::write(db.join("c.bson.gz"), gz.finish().unwrap()).unwrap();
    let e = capture(source(&spec(&dump)).as_ref()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e:?}");
    assert!(e.to_string().contains("two files for one collection"), "{e}");
    std::fs::remove_file(db.join("c.bson.gz")).unwrap();

    // The dump's parent directory given: its folders hold folders. Refused,
    // instead of a backup of no collection.
    let e = capture(source(&spec(dir.path())).as_ref()).await.unwrap_err();
    assert!(e.to_string().contains("inside a database folder"), "{e}");
    assert!(e.hint().unwrap().contains("top directory"), "{e:?}");
}

//! End-to-end: `coffer backup --source mongodump:ARCHIVE` repacks a real
//! mongodump archive into a bundle, and `coffer restore --only mongodump
//! --mongo-uri URI --ns-from … --ns-to …` restores it renamed, with the
//! per-collection report, through the real binary and a real server.

use std::path::Path;

use coffer_e2e::mongo_server::MongoServer;
use coffer_e2e::{coffer, keygen};
use mongodb::Client;
use mongodb::bson::{Document, doc};

#[test]
fn a_mongodump_archive_is_repacked_and_restored_renamed() {
    let Some(server) = MongoServer::start() else {
        return;
    };
    let archive = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sources/mongo/tests/fixtures/mongodump/test.bar.archive");
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, recipient) = keygen(p, "key.txt");
    let out = coffer(p)
        .args(["backup", "--source"])
        .arg(format!("mongodump:{}", archive.display()))
        .args(["--sink", "bk", "--recipient", &recipient])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = coffer(p)
        .args(["restore", "latest", "--sink", "bk", "--identity"])
        .arg(&key)
        .args(["--only", "mongodump", "--mongo-uri", &server.uri("")])
        .args([
            "--ns-include",
            "test.*",
            "--ns-from",
            "test.*",
            "--ns-to",
            "restored.*",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "test.bar -> restored.bar: 1 documents restored, 0 conflicts, 0 indexes built, all 1 acknowledged into a new collection"
        ),
        "{stdout}"
    );

    // --ns-from without --ns-to is refused by the argument parser.
    let out = coffer(p)
        .args(["restore", "latest", "--sink", "bk", "--identity"])
        .arg(&key)
        .args(["--mongo-uri", &server.uri(""), "--ns-from", "test.*"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Client::with_uri_str(server.uri("")).await.unwrap();
        let bar = c.database("restored").collection::<Document>("bar");
        assert_eq!(bar.count_documents(doc! { "foo": "bar" }).await.unwrap(), 1);
        assert!(
            c.database("test")
                .list_collection_names()
                .await
                .unwrap()
                .is_empty()
        );
    });
}

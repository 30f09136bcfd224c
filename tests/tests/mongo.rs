//! End-to-end: `coffer backup --source mongo:URI` and `coffer restore
//! --only mongo --mongo-uri URI2 --drop` through the real binary, against
//! two real MongoDB-compatible servers.

use std::process::Command;

use coffer_e2e::mongo_server::MongoServer;
use coffer_e2e::{coffer, keygen, only_object, require_tool};
use mongodb::Client;
use mongodb::bson::{Document, doc};

fn run(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.output().expect("run coffer");
    assert!(
        out.status.success(),
        "coffer failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

#[test]
fn backup_from_one_server_and_restore_into_another() {
    let (Some(a), Some(b)) = (MongoServer::start(), MongoServer::start()) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Client::with_uri_str(a.uri("")).await.unwrap();
        let users = c.database("app").collection::<Document>("users");
        users
            .insert_many((0..100).map(|i| doc! { "_id": i, "name": format!("user {i}"), "email": format!("u{i}@x") }))
            .await
            .unwrap();
        c.database("app")
            .run_command(doc! { "createIndexes": "users", "indexes": [{ "key": { "email": 1 }, "name": "email_1", "unique": true }] })
            .await
            .unwrap();
        let live = Client::with_uri_str(b.uri("")).await.unwrap();
        live.database("app")
            .collection::<Document>("users")
            .insert_one(doc! { "_id": "stale" })
            .await
            .unwrap();
    });

    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, recipient) = keygen(p, "key.txt");
    let out = run(coffer(p)
        .args(["--json", "backup", "--source"])
        .arg(format!("mongo:{}", a.uri("app")))
        .args(["--sink", "bk", "--recipient", &recipient]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(out.contains("point in time"), "the test server has an oplog: {v}");

    let restored = run(coffer(p)
        .args(["restore", "latest", "--sink", "bk", "--identity"])
        .arg(&key)
        .args(["--only", "mongo", "--mongo-uri", &b.uri(""), "--drop"]));
    assert!(restored.contains("replace"), "{restored}");
    rt.block_on(async {
        let c = Client::with_uri_str(b.uri("")).await.unwrap();
        let users = c.database("app").collection::<Document>("users");
        assert_eq!(users.count_documents(doc! {}).await.unwrap(), 100);
        assert_eq!(users.count_documents(doc! { "_id": "stale" }).await.unwrap(), 0);
        let mut names = c.database("app").list_collection_names().await.unwrap();
        names.sort();
        assert_eq!(names, ["users"]);
        let indexes = users.list_index_names().await.unwrap();
        assert!(indexes.contains(&"email_1".to_string()), "{indexes:?}");
    });

    // Standard tools read the bundle: age | zstd | tar, then sha256sum -c.
    if !(require_tool("age") && require_tool("zstd") && require_tool("sha256sum")) {
        return;
    }
    let object = only_object(&p.join("bk"), ".coffer");
    let x = p.join("x");
    std::fs::create_dir(&x).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i '{}' '{}' | zstd -dq | tar x -C '{}' && cd '{}' && sha256sum -c --quiet SHA256SUMS",
            key.display(),
            object.display(),
            x.display(),
            x.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let bson = std::fs::read(x.join("mongo/app/app/users.bson")).unwrap();
    assert!(bson.len() > 100 * 30);
    let meta = std::fs::read_to_string(x.join("mongo/app/app/users.metadata.json")).unwrap();
    assert!(meta.starts_with(r#"{"options":{},"indexes":["#), "{meta}");
}

#[test]
fn unreachable_server_fails_fast_with_a_hint() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, recipient) = keygen(p, "key.txt");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let out = coffer(p)
        .args(["backup", "--source"])
        .arg(format!(
            "mongo:mongodb://app:hunter2@127.0.0.1:{port}/app?serverSelectionTimeoutMS=1500"
        ))
        .args(["--sink", "bk", "--recipient", &recipient])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stderr.contains("app:***@"), "{stderr}");
    assert!(stderr.to_lowercase().contains("host"), "{stderr}");
}

//! End-to-end: `coffer backup --source mongo:URI` and `coffer restore
//! --only mongo --mongo-uri URI2 --drop` through the real binary, against
//! two real MongoDB-compatible servers.

use std::process::Command;

use coffer_e2e::mongo_server::MongoServer;
use coffer_e2e::{coffer, json_ok, keygen, only_object, require_tool};
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

    // The restore kit's mongorestore lines name the level where the
    // database folders and the point in time's oplog.bson sit, as
    // `mongorestore --oplogReplay --dir` needs them.
    let Some(medium) = coffer_e2e::Tmpfs::new("64m") else {
        return;
    };
    run(coffer(p)
        .args(["media", "init"])
        .arg(medium.path())
        .args(["--label", "KIT"]));
    run(coffer(p).args(["export", "--from", "bk", "--latest", "--to", &medium.url("")]));
    let kit = std::fs::read_to_string(medium.path().join("RESTORE.txt")).unwrap();
    let dir_of = |flags: &str| {
        let line = kit
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("mongorestore {flags}--dir ")))
            .unwrap_or_else(|| panic!("no `mongorestore {flags}--dir` line in:\n{kit}"));
        line.rsplit(' ').next().unwrap().to_string()
    };
    let replay = dir_of("--drop --oplogReplay ");
    assert_eq!(dir_of("--drop "), replay);
    assert!(x.join(&replay).join("oplog.bson").is_file(), "{replay}");
    assert!(x.join(&replay).join("app/users.bson").is_file(), "{replay}");
    assert!(
        x.join(&replay).join("app/users.metadata.json").is_file(),
        "{replay}"
    );
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

/// The collection names of `db`, sorted.
async fn collection_names(c: &Client, db: &str) -> Vec<String> {
    let mut names = c.database(db).list_collection_names().await.unwrap();
    names.sort();
    names
}

#[test]
fn a_restore_killed_half_way_leaves_the_original_and_a_rerun_cleans_up() {
    let (Some(a), Some(b)) = (MongoServer::start(), MongoServer::start()) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, recipient) = keygen(p, "key.txt");
    rt.block_on(async {
        let c = Client::with_uri_str(a.uri("")).await.unwrap();
        let big = c.database("app").collection::<Document>("big");
        for start in (0..20_000).step_by(2000) {
            big.insert_many((start..start + 2000).map(|i| doc! { "_id": i, "pad": "p".repeat(64) }))
                .await
                .unwrap();
        }
        let live = Client::with_uri_str(b.uri("")).await.unwrap();
        live.database("app")
            .collection::<Document>("big")
            .insert_many((0..3).map(|i| doc! { "_id": format!("original {i}") }))
            .await
            .unwrap();
    });
    run(coffer(p)
        .args(["backup", "--source"])
        .arg(format!("mongo:{}", a.uri("app")))
        .args(["--sink", "bk", "--recipient", &recipient]));

    let restore = |p: &std::path::Path| {
        let mut c = Command::new(coffer_e2e::coffer_bin());
        c.current_dir(p)
            .env_remove("COFFER_CONFIG")
            .env_remove("COFFER_MONGO_URI")
            .args(["restore", "latest", "--sink", "bk", "--identity"])
            .arg(&key)
            .args(["--only", "mongo", "--mongo-uri", &b.uri(""), "--drop"]);
        c
    };
    let mut child = restore(p)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL it while it inserts into the staging collection.
    let staging = rt.block_on(async {
        let c = Client::with_uri_str(b.uri("")).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the restore ended before it could be killed half-way"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "no staging collection appeared"
            );
            let names = collection_names(&c, "app").await;
            if let Some(s) = names.iter().find(|n| n.starts_with("big.coffer-staging-")) {
                let n = c
                    .database("app")
                    .collection::<Document>(s)
                    .count_documents(doc! {})
                    .await
                    .unwrap();
                if n > 0 && n < 20_000 {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    break s.clone();
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    rt.block_on(async {
        let c = Client::with_uri_str(b.uri("")).await.unwrap();
        let big = c.database("app").collection::<Document>("big");
        assert_eq!(big.count_documents(doc! {}).await.unwrap(), 3, "original intact");
        assert_eq!(
            big.count_documents(doc! { "_id": "original 0" }).await.unwrap(),
            1
        );
        assert_eq!(
            collection_names(&c, "app").await,
            ["big".to_string(), staging.clone()]
        );
    });

    // The next restore drops the leftover first and succeeds.
    let out = restore(p).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("app.{staging} (left by an interrupted restore)")),
        "{stdout}"
    );
    assert!(stdout.contains("20000 documents restored"), "{stdout}");
    rt.block_on(async {
        let c = Client::with_uri_str(b.uri("")).await.unwrap();
        assert_eq!(collection_names(&c, "app").await, ["big"]);
        let big = c.database("app").collection::<Document>("big");
        assert_eq!(big.count_documents(doc! {}).await.unwrap(), 20_000);
    });
}

#[test]
fn unsafe_in_place_is_required_where_the_server_cannot_rename() {
    let (Some(a), Some(b)) = (MongoServer::start(), MongoServer::start()) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (server, v, n) in [(&a, "bundle", 10), (&b, "live", 4)] {
            let c = Client::with_uri_str(server.uri("")).await.unwrap();
            c.database("app")
                .collection::<Document>("users")
                .insert_many((0..n).map(|i| doc! { "_id": i, "v": v }))
                .await
                .unwrap();
        }
    });
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, recipient) = keygen(p, "key.txt");
    run(coffer(p)
        .args(["backup", "--source"])
        .arg(format!("mongo:{}", a.uri("app")))
        .args(["--sink", "bk", "--recipient", &recipient]));
    let restore = |extra: &[&str]| {
        let mut c = coffer(p);
        c.env("COFFER_TEST_MONGO_NO_RENAME", "1")
            .args(["restore", "latest", "--sink", "bk", "--identity"])
            .arg(&key)
            .args(["--only", "mongo", "--mongo-uri", &b.uri(""), "--drop"])
            .args(extra);
        c
    };
    let out = restore(&[]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot rename collections"), "{stderr}");
    assert!(stderr.contains("--unsafe-in-place"), "{stderr}");
    let count = |v: &str| {
        rt.block_on(async {
            let c = Client::with_uri_str(b.uri("")).await.unwrap();
            c.database("app")
                .collection::<Document>("users")
                .count_documents(doc! { "v": v })
                .await
                .unwrap()
        })
    };
    assert_eq!((count("live"), count("bundle")), (4, 0), "untouched");

    let out = run(&mut restore(&["--unsafe-in-place"]));
    assert!(out.contains("replace-in-place"), "{out}");
    assert_eq!((count("live"), count("bundle")), (0, 10));

    // The flag means nothing without --drop.
    let out = coffer(p)
        .args(["restore", "latest", "--sink", "bk", "--identity"])
        .arg(&key)
        .args(["--only", "mongo", "--mongo-uri", &b.uri(""), "--unsafe-in-place"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The mongo plugin's declared restore options, given generically as
/// `--opt mongo.NAME=VALUE`, do what the built-in flags do; a wrong name
/// or value is a usage error that names the known ones, before anything
/// is written.
#[test]
fn declared_restore_options_work_through_opt() {
    let (Some(a), Some(b)) = (MongoServer::start(), MongoServer::start()) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Client::with_uri_str(a.uri("")).await.unwrap();
        let users = c.database("app").collection::<Document>("users");
        users
            .insert_many((0..20).map(|i| doc! { "_id": i }))
            .await
            .unwrap();
    });
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, recipient) = keygen(p, "key.txt");
    run(coffer(p)
        .args(["backup", "--source"])
        .arg(format!("mongo:{}", a.uri("app")))
        .args(["--sink", "bk", "--recipient", &recipient]));

    let help = run(coffer(p).args(["restore", "--help"]));
    assert!(
        help.contains("mongo.uri (also --mongo-uri)") && help.contains("k8s.namespace"),
        "{help}"
    );
    for (opt, said) in [
        // Read by `mongodump` sources only: this snapshot has none.
        (
            "mongodump.uri=mongodb://u:hunter2@x/",
            "the snapshot has no `mongodump` source",
        ),
        ("mongo.nope=1", "unknown restore option `mongo.nope`"),
        ("mongo.drop=maybe", "`maybe` is not true or false"),
        ("mongo.uri=", "needs a value"),
    ] {
        let out = coffer(p)
            .args(["restore", "latest", "--sink", "bk", "-i"])
            .arg(&key)
            .args(["--opt", opt])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{opt}: {err}");
        assert!(err.contains(said), "{opt}: {err}");
        assert!(!err.contains("hunter2"), "no option value is echoed: {err}");
    }
    assert!(
        String::from_utf8_lossy(
            &coffer(p)
                .args(["restore", "latest", "--sink", "bk", "-i"])
                .arg(&key)
                .args(["--opt", "mongo.nope"])
                .output()
                .unwrap()
                .stderr
        )
        .contains("mongo.ns-include"),
        "the hint names the known options"
    );

    let uri_opt = format!("mongo.uri={}", b.uri(""));
    run(coffer(p)
        .args(["restore", "latest", "--sink", "bk", "-i"])
        .arg(&key)
        .args(["--opt", &uri_opt, "--opt", "mongo.drop"])
        .args(["--opt", "mongo.ns-from=app.*", "--opt", "mongo.ns-to=staging.*"]));
    rt.block_on(async {
        let c = Client::with_uri_str(b.uri("")).await.unwrap();
        let staged = c.database("staging").collection::<Document>("users");
        assert_eq!(staged.count_documents(doc! {}).await.unwrap(), 20);
        let names = c.database("app").list_collection_names().await.unwrap();
        assert!(names.is_empty(), "renamed, not restored as app: {names:?}");
    });
}

/// A MongoDB source round-trips through a chunked snapshot too, and a
/// re-run after 1% of the documents were updated at random places stores
/// a few percent of the collection again (its `.bson` is cut into small
/// chunks at document ends), not all of it.
#[test]
fn a_chunked_snapshot_restores_into_another_server() {
    let (Some(a), Some(b)) = (MongoServer::start(), MongoServer::start()) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let users = rt.block_on(async {
        let c = Client::with_uri_str(a.uri("")).await.unwrap();
        let users = c.database("app").collection::<Document>("users");
        users
            .insert_many((0..2000u32).map(|i| {
                // Incompressible, as real documents mostly are here.
                let bytes: Vec<u8> = coffer_e2e::noise(900)
                    .into_iter()
                    .map(|b| b ^ (i as u8))
                    .rev()
                    .collect();
                let pad = mongodb::bson::Binary {
                    subtype: mongodb::bson::spec::BinarySubtype::Generic,
                    bytes: [&i.to_le_bytes()[..], &bytes].concat(),
                };
                doc! { "_id": i, "name": format!("user {i}"), "pad": pad }
            }))
            .await
            .unwrap();
        users
    });
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, recipient) = keygen(p, "key.txt");
    let backup = || {
        let out = coffer(p)
            .args(["--json", "backup", "--format", "chunked", "--source"])
            .arg(format!("mongo:{}", a.uri("app")))
            .args(["--sink", "bk", "--recipient", &recipient])
            .output()
            .unwrap();
        json_ok(&out)["chunks"]["new_bytes"].as_u64().unwrap()
    };
    let first = backup();
    rt.block_on(async {
        for k in 0..20 {
            let id = (k * 97 + 31) % 2000;
            users
                .update_one(
                    doc! { "_id": id },
                    doc! { "$set": { "name": format!("renamed {id}") } },
                )
                .await
                .unwrap();
        }
    });
    let second = backup();
    assert!(
        second * 100 < first * 20,
        "1% of the documents updated: {second} of {first} bytes stored again"
    );
    run(coffer(p)
        .args(["restore", "latest", "--sink", "bk", "--identity"])
        .arg(&key)
        .args(["--only", "mongo", "--mongo-uri", &b.uri(""), "--drop"]));
    rt.block_on(async {
        let c = Client::with_uri_str(b.uri("")).await.unwrap();
        let restored = c.database("app").collection::<Document>("users");
        assert_eq!(restored.count_documents(doc! {}).await.unwrap(), 2000);
        let renamed = restored
            .count_documents(doc! { "name": { "$regex": "^renamed" } })
            .await
            .unwrap();
        assert_eq!(renamed, 20);
    });
}

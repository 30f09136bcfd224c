//! `verify --deep` of MongoDB sources: every `.bson` parses document by
//! document and each collection's count equals the manifest's, on real
//! data (escaped collection names, a real mongodump archive) and on a
//! forged bundle whose hashes were all recomputed.

use std::path::Path;

use coffer_e2e::mongo_server::MongoServer;
use coffer_e2e::{coffer, forge_bundle, json_ok, keygen, require_tool};
use mongodb::bson::{Document, doc};

fn backup_app(server: &MongoServer, p: &Path, rec: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = mongodb::Client::with_uri_str(server.uri("")).await.unwrap();
        let db = c.database("app");
        db.collection::<Document>("users")
            .insert_many((0..40).map(|i| doc! { "_id": i, "name": format!("u{i}") }))
            .await
            .unwrap();
        db.collection::<Document>("café %+")
            .insert_many((0..3).map(|i| doc! { "_id": i }))
            .await
            .unwrap();
    });
    let v = json_ok(
        &coffer(p)
            .args(["--json", "backup", "--source"])
            .arg(format!("mongo:{}", server.uri("app")))
            .args(["--sink", "bk", "--recipient", rec])
            .output()
            .unwrap(),
    );
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn deep_verify_reads_every_document_of_real_dumps() {
    let Some(server) = MongoServer::start() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, rec) = keygen(p, "key.txt");
    backup_app(&server, p, &rec);
    let archive = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sources/mongo/tests/fixtures/mongodump/test.bar.archive");
    json_ok(
        &coffer(p)
            .args(["--json", "backup", "--source"])
            .arg(format!("mongodump:{}", archive.display()))
            .args(["--sink", "bk", "--recipient", &rec])
            .output()
            .unwrap(),
    );
    let v = json_ok(
        &coffer(p)
            .args(["--json", "verify", "--all", "--deep", "--sink", "bk", "-i"])
            .arg(&key)
            .output()
            .unwrap(),
    );
    let text = v.to_string();
    assert_eq!(text.matches("\"ok\":true").count(), 2, "{text}");
    assert!(!text.contains("\"ok\":false"), "{text}");
}

/// Rewrites the snapshot `id` in `sink` with `users.bson` one document
/// short, every hash (SHA256SUMS, manifest entries, the index) recomputed:
/// only the manifest's document count still tells.
fn forge_short_collection(p: &Path, id: &str, key: &Path, rec: &str) {
    let edit = r#"
target = next(n for n in data if n.endswith("/app/users.bson"))
body = data[target]
pos, last = 0, 0
while pos < len(body):
    last = pos
    pos += int.from_bytes(body[pos:pos + 4], "little")
data[target] = body[:last]
"#;
    forge_bundle(&p.join("bk"), id, key, rec, edit);
}

#[test]
fn deep_verify_finds_a_collection_shorter_than_its_manifest() {
    if !(require_tool("age") && require_tool("zstd") && require_tool("python3")) {
        return;
    }
    let Some(server) = MongoServer::start() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, rec) = keygen(p, "key.txt");
    let id = backup_app(&server, p, &rec);
    forge_short_collection(p, &id, &key, &rec);
    // The forged snapshot passes the hash checks: only the count tells.
    let out = coffer(p).args(["verify", &id, "--sink", "bk"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = coffer(p)
        .args(["verify", &id, "--deep", "--sink", "bk", "-i"])
        .arg(&key)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("app.users: 39 documents in the bundle, 40 in the manifest"),
        "{text}"
    );
}

//! End-to-end: a backup made exactly as the Issuer Directory runbook makes
//! it (gzip'd mongodump archive, config, seeds, secret, `sha256sum * >
//! SHA256SUMS`, `tar czf`, `age -r`, all with the real CLIs) is turned
//! into a coffer snapshot by `coffer import-runbook`, then restored into a
//! real server and to files; a tampered SHA256SUMS is refused with nothing
//! written to the sink.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use coffer_e2e::mongo_server::MongoServer;
use coffer_e2e::{coffer, files_under, keygen, require_tool};
use mongodb::Client;
use mongodb::bson::{Document, doc};

const SECRET: &str =
    "ISSUER_DIRECTORY_MONGO_CONNECTION_STRING=mongodb://issuer:s3cr3t-pw@mongo:27017/issuer-directory";
const YAML: &str = "IssuerDirectory:\n  Mongo:\n    Database: issuer-directory\n";
const CSAF: &str = "[{\"name\":\"Example CSAF\",\"url\":\"https://example.org/csaf\"}]\n";

fn sh(script: &str, dir: &Path) {
    let out = Command::new("bash")
        .arg("-euc")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the runbook's hot-backup steps in `dir`, with `tamper` run inside
/// `$BACKUP_DIR` after the checksums; returns the `.tar.gz.age` file.
fn runbook_backup(dir: &Path, name: &str, recipient: &str, tamper: &str) -> PathBuf {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sources/mongo/tests/fixtures/mongodump/test.bar.archive");
    std::fs::write(dir.join("issuer-directory.yaml"), YAML).unwrap();
    std::fs::write(dir.join("csaf-publishers.json"), CSAF).unwrap();
    std::fs::write(dir.join("dev.env"), format!("OTHER=1\n{SECRET}\nMORE=2\n")).unwrap();
    sh(
        &format!(
            r#"
BACKUP_DIR=backup/issuer-directory/{name}
mkdir -p "$BACKUP_DIR"
gzip -c '{archive}' > "$BACKUP_DIR/issuer-directory-20261127T221500Z.gz"
cp issuer-directory.yaml "$BACKUP_DIR/"
cp csaf-publishers.json "$BACKUP_DIR/"
grep '^ISSUER_DIRECTORY_MONGO_CONNECTION_STRING=' dev.env > "$BACKUP_DIR/issuer-directory.mongo.secret"
chmod 600 "$BACKUP_DIR/issuer-directory.mongo.secret"
(cd "$BACKUP_DIR" && sha256sum * > SHA256SUMS)
(cd "$BACKUP_DIR" && {tamper})
tar czf "$BACKUP_DIR.tar.gz" -C "$BACKUP_DIR" .
age -r {recipient} "$BACKUP_DIR.tar.gz" > "$BACKUP_DIR.tar.gz.age"
rm -r "$BACKUP_DIR" "$BACKUP_DIR.tar.gz"
"#,
            archive = archive.display()
        ),
        dir,
    );
    dir.join(format!("backup/issuer-directory/{name}.tar.gz.age"))
}

fn tools() -> bool {
    ["age", "gzip", "tar", "sha256sum"]
        .iter()
        .all(|t| require_tool(t))
}

#[test]
fn a_runbook_backup_is_imported_and_restored() {
    if !tools() {
        return;
    }
    let Some(server) = MongoServer::start() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, recipient) = keygen(p, "key.txt");
    let file = runbook_backup(p, "2026-11-27T221500", &recipient, "true");

    let out = coffer(p)
        .arg("import-runbook")
        .arg(&file)
        .arg("--identity")
        .arg(&key)
        .args(["--sink", "bk", "--recipient", &recipient])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(stdout.contains("job issuer-directory"), "{stdout}");
    assert!(stdout.contains("4 SHA256SUMS lines ok"), "{stdout}");
    assert!(stdout.contains("source mongo (mongodump)"), "{stdout}");
    assert!(stdout.contains("source secret (env): 1 key"), "{stdout}");
    assert!(!stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"));

    // The snapshot carries the archive's time.
    let out = coffer(p)
        .args(["--json", "list", "--sink", "bk"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("2026-11-27T22:15:00Z"), "{list}");
    assert!(list.contains("issuer-directory"), "{list}");

    // The database, into the real server.
    let out = coffer(p)
        .args(["restore", "latest", "--sink", "bk", "--identity"])
        .arg(&key)
        .args(["--only", "mongo", "--mongo-uri", &server.uri("")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("test.bar: 1 documents restored"), "{stdout}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Client::with_uri_str(server.uri("")).await.unwrap();
        let bar = c.database("test").collection::<Document>("bar");
        assert_eq!(bar.count_documents(doc! {}).await.unwrap(), 1);
        assert_eq!(bar.count_documents(doc! { "foo": "bar" }).await.unwrap(), 1);
    });

    // The config, seeds and secret, under --target.
    let target = p.join("restored");
    let out = coffer(p)
        .args(["restore", "latest", "--sink", "bk", "--identity"])
        .arg(&key)
        .args([
            "--only",
            "config",
            "--only",
            "csaf-seeds",
            "--only",
            "secret",
            "--target",
        ])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let files = files_under(&target);
    let find = |name: &str| -> PathBuf {
        let f = files
            .iter()
            .find(|f| f.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not restored: {files:?}"));
        target.join(f)
    };
    assert_eq!(
        std::fs::read_to_string(find("issuer-directory.yaml")).unwrap(),
        YAML
    );
    assert_eq!(
        std::fs::read_to_string(find("csaf-publishers.json")).unwrap(),
        CSAF
    );
    let secret = find("issuer-directory.mongo.secret");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), format!("{SECRET}\n"));
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The same archive with --json: the backup report, per its schema.
    let out = coffer(p)
        .args(["--json", "import-runbook"])
        .arg(&file)
        .arg("--identity")
        .arg(&key)
        .args(["--sink", "bk2", "--recipient", &recipient])
        .output()
        .unwrap();
    let v = coffer_e2e::json_as("backup", &out);
    assert_eq!(v["sha256sums_checked"], 4, "{v}");
    assert_eq!(v["created_at"], "2026-11-27T22:15:00Z", "{v}");
}

#[test]
fn a_tampered_runbook_backup_is_refused_and_nothing_is_written() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, recipient) = keygen(p, "key.txt");
    for (name, tamper, expect) in [
        (
            "2026-11-27T221500",
            // Another config file after the checksums were taken.
            "echo 'tampered: true' >> issuer-directory.yaml",
            "issuer-directory.yaml: checksum mismatch",
        ),
        (
            "2026-11-28T221500",
            "rm csaf-publishers.json",
            "csaf-publishers.json: listed in SHA256SUMS but missing",
        ),
        (
            "2026-11-29T221500",
            "sed -i -E \"1s/^[0-9a-f]{64}/$(printf 'a%.0s' $(seq 64))/\" SHA256SUMS",
            "checksum mismatch",
        ),
    ] {
        let file = runbook_backup(p, name, &recipient, tamper);
        let out = coffer(p)
            .arg("import-runbook")
            .arg(&file)
            .arg("--identity")
            .arg(&key)
            .args(["--sink", "bk", "--recipient", &recipient])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{tamper}: {stderr}");
        assert!(stderr.contains("SHA256SUMS check"), "{stderr}");
        assert!(stderr.contains(expect), "{tamper}: {stderr}");
        assert!(stderr.contains("nothing was imported"), "{stderr}");
        // (The sink that --create-sink, set by the test helper, made aside.)
        let left: Vec<String> = files_under(&p.join("bk"))
            .into_iter()
            .filter(|f| f != coffer_e2e::SINK_MARKER)
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    // A wrong identity is a key error (exit 5), not an integrity one.
    let (other, _) = keygen(p, "other.txt");
    let file = p.join("backup/issuer-directory/2026-11-27T221500.tar.gz.age");
    let out = coffer(p)
        .arg("import-runbook")
        .arg(&file)
        .arg("--identity")
        .arg(&other)
        .args(["--sink", "bk", "--recipient", &recipient])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!p.join("bk").exists() || files_under(&p.join("bk")).is_empty());
}

//! Progress that tells the truth: on a terminal, backup, restore, copy,
//! drill and `verify --deep` show a bar with bytes done of the total, rate and ETA,
//! phase by phase; with `-q` (or off a terminal, as in every other test)
//! nothing.

use std::fs;
use std::path::Path;
use std::process::Command;

use coffer_e2e::{coffer_bin, keygen, require_tool};

/// Runs coffer with `args` on a pseudo-terminal (util-linux `script`);
/// returns what the terminal showed.
fn on_a_terminal(dir: &Path, args: &str) -> String {
    let cmd = format!("{} {args}", coffer_bin().display());
    let out = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .current_dir(dir)
        .env("COFFER_CREATE_SINK", "true")
        .env("COLUMNS", "160")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args}: {shown}");
    shown
}

#[test]
fn long_operations_show_phases_bytes_and_eta_on_a_terminal_only() {
    if !require_tool("script") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir(p.join("data")).unwrap();
    // Incompressible, large enough to be seen moving.
    let blob = coffer_e2e::noise(96 << 20);
    fs::write(p.join("data/blob.bin"), &blob).unwrap();
    let (_, rec) = keygen(p, "key.txt");

    let shown = on_a_terminal(
        p,
        &format!("backup --source file:data --sink bk --recipient {rec}"),
    );
    assert!(shown.contains("backup ["), "{shown}");
    assert!(shown.contains("/96.00 MiB") && shown.contains("ETA"), "{shown}");

    // From a local sink the object is hashed while it is decrypted (one
    // read, no separate verify phase).
    let shown = on_a_terminal(p, "restore latest --sink bk --identity key.txt --target out");
    assert!(
        shown.contains("restore: decrypt") && shown.contains("/96."),
        "{shown}"
    );
    assert!(!shown.contains("restore: verify"), "{shown}");
    let shown = on_a_terminal(p, "verify --sink bk --deep --identity key.txt");
    assert!(shown.contains("verify: decrypt"), "{shown}");

    // Copy and drill show theirs too.
    let shown = on_a_terminal(p, "copy --latest --from bk --to bk2");
    assert!(
        shown.contains("copy [") && shown.contains("/96.03 MiB"),
        "{shown}"
    );
    let shown = on_a_terminal(p, "drill --sink bk --identity key.txt");
    assert!(
        shown.contains("restore: decrypt") && shown.contains("PASSED"),
        "{shown}"
    );

    // -q: the results only.
    let shown = on_a_terminal(p, "-q verify --sink bk --deep --identity key.txt");
    assert!(!shown.contains("ETA") && !shown.contains("verify: "), "{shown}");
    assert!(shown.contains("files match SHA256SUMS"), "{shown}");
}

#[test]
fn a_mongodb_backup_on_a_terminal_shows_its_total_from_collstats() {
    let Some(server) = coffer_e2e::mongo_server::MongoServer::start() else {
        return;
    };
    if !require_tool("script") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = mongodb::Client::with_uri_str(server.uri("")).await.unwrap();
        let docs = (0..20_000).map(|i| mongodb::bson::doc! { "_id": i, "pad": "x".repeat(200) });
        c.database("app")
            .collection::<mongodb::bson::Document>("big")
            .insert_many(docs)
            .await
            .unwrap();
    });
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, rec) = keygen(p, "key.txt");
    let shown = on_a_terminal(
        p,
        &format!(
            "backup --source mongo:{} --sink bk --recipient {rec}",
            server.uri("app")
        ),
    );
    // ~4.3 MB of BSON: a bar with its total, not a bare counter.
    assert!(shown.contains("backup [") && shown.contains("ETA"), "{shown}");
    assert!(shown.contains("/4.") && shown.contains(" MiB "), "{shown}");
}

//! The README's quick start runs as written: its lines, in order, from a
//! copy of the repository's `examples/quickstart`, with the `coffer` under
//! test on PATH, and a real MongoDB-compatible server as MONGO_URI so its
//! last step restores the database too.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use coffer_e2e::mongo_server::MongoServer;
use coffer_e2e::{coffer_bin, copy_dir};
use mongodb::bson::{Document, doc};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The shell lines between the quick-start markers of README.md.
fn quick_start() -> String {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("<!-- quickstart:begin -->").expect("begin marker");
    let end = readme.find("<!-- quickstart:end -->").expect("end marker");
    let block = &readme[start..end];
    let code = block.split("```sh\n").nth(1).expect("a sh block");
    code.split("```").next().unwrap().to_string()
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    let script = quick_start();
    let lines: Vec<&str> = script.lines().collect();
    // The build line is the only one not run: the binary under test is
    // put on PATH instead (by the script's own `export PATH` line, whose
    // target/release is made to hold it).
    assert!(
        lines[0].starts_with("cargo build --release -p coffer"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("export PATH=$PWD/target/release:$PATH"),
        "{}",
        lines[1]
    );
    assert!(lines[2].starts_with("cd examples/quickstart"), "{}", lines[2]);
    let body = lines[1..].join("\n");

    let d = tempfile::tempdir().unwrap();
    let repo = d.path();
    copy_dir(
        &root().join("examples/quickstart"),
        &repo.join("examples/quickstart"),
    );
    let _ = fs::remove_dir_all(repo.join("examples/quickstart/backups"));
    fs::create_dir_all(repo.join("target/release")).unwrap();
    std::os::unix::fs::symlink(coffer_bin(), repo.join("target/release/coffer")).unwrap();
    let qs = repo.join("examples/quickstart");
    let env_before = fs::read_to_string(qs.join("dev.env")).unwrap();

    let server = MongoServer::start();
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", &body])
        .current_dir(repo)
        .env_remove("COFFER_CONFIG")
        .env_remove("MONGO_URI");
    if let Some(s) = &server {
        cmd.env("MONGO_URI", s.uri(""));
    }
    let out = cmd.output().unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the quick start failed:\n{said}");

    // What it did: one bundle with all four parts, checked, restored.
    assert!(said.contains("files match SHA256SUMS"), "{said}");
    assert!(qs.join("key.txt").exists());
    assert_eq!(
        fs::read(qs.join("drill/csaf-publishers.json")).unwrap(),
        fs::read(qs.join("data/csaf-publishers.json")).unwrap()
    );
    // The dry run named the secret's keys, never their values; the .env
    // restored in place is byte for byte what it was.
    assert!(
        said.contains("keep-key") && said.contains("ISSUER_DIRECTORY_MONGO_CONNECTION_STRING"),
        "{said}"
    );
    assert!(!said.contains("example-password"), "a secret value was printed");
    assert_eq!(fs::read_to_string(qs.join("dev.env")).unwrap(), env_before);

    let Some(server) = server else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = mongodb::Client::with_uri_str(server.uri("")).await.unwrap();
        let foo = c.database("test").collection::<Document>("foo");
        assert_eq!(foo.count_documents(doc! {}).await.unwrap(), 1);
        let indexes = foo.list_index_names().await.unwrap();
        assert!(indexes.contains(&"f_1".to_string()), "{indexes:?}");
    });
}

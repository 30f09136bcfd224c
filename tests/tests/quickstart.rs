//! The README's quick start runs as written: its lines, in order, from a
//! copy of the files git tracks in `examples/quickstart` (what a clean
//! checkout has), with the `coffer` under test on PATH, and a real
//! MongoDB-compatible server as MONGO_URI so its last step restores the
//! database too. It runs twice in a row in the same copy, as a user pastes
//! it twice: the second run keeps the key and makes a second snapshot, and
//! checks and restores that one. A third run with a source missing stops at
//! the failed backup: nothing after it runs against the older snapshots.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use coffer_e2e::mongo_server::MongoServer;
use coffer_e2e::{coffer_bin, json_as};
use mongodb::bson::{Document, doc};
use serde_json::Value;

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

/// A line without its trailing comment, trimmed.
fn code_of(line: &str) -> &str {
    line.split('#').next().unwrap().trim()
}

/// What a run of the quick start leaves in the example (all three are in
/// `.gitignore`): never part of the copy the test runs in.
const LEFTOVERS: [&str; 3] = ["key.txt", "backups", "drill"];

/// Copies the example into `repo` as a clean checkout has it: the files git
/// tracks under examples/quickstart (`git ls-files`, with their work-tree
/// contents), so a `key.txt`, `backups/` or `drill/` that running the quick
/// start by hand left there is not copied. Without git (or outside a
/// checkout), the whole directory but those leftovers.
fn copy_example(repo: &Path) {
    let root = root();
    let tracked = Command::new("git")
        .args(["ls-files", "-z", "--", "examples/quickstart"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty());
    let Some(out) = tracked else {
        eprintln!("git ls-files listed nothing: copying examples/quickstart without {LEFTOVERS:?}");
        copy_skipping_leftovers(
            &root.join("examples/quickstart"),
            &repo.join("examples/quickstart"),
            true,
        );
        return;
    };
    for rel in out.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        // Relative to the directory git ran in: the repository's root.
        let rel = Path::new(OsStr::from_bytes(rel));
        let from = root.join(rel);
        // Deleted in the work tree but still in git's index: the work
        // tree is what is tested.
        if fs::symlink_metadata(&from).is_err() {
            continue;
        }
        let to = repo.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&from, &to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    }
}

fn copy_skipping_leftovers(from: &Path, to: &Path, top: bool) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if top && LEFTOVERS.iter().any(|l| name.to_str() == Some(*l)) {
            continue;
        }
        let t = to.join(&name);
        if e.file_type().unwrap().is_dir() {
            copy_skipping_leftovers(&e.path(), &t, false);
        } else {
            fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// Runs `body` from the copy's root as a user pastes the block: plain
/// bash, with no `-e` of the test's own, so only the block's `set -e` can
/// stop it at a failing line (`-u` also fails on an unset variable).
/// Returns the output and its stdout and stderr as one text.
fn run(body: &str, repo: &Path, mongo_uri: Option<&str>) -> (Output, String) {
    let mut cmd = Command::new("bash");
    cmd.args(["-u", "-o", "pipefail", "-c", body])
        .current_dir(repo)
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_IDENTITY")
        .env_remove("COFFER_PASSPHRASE")
        .env_remove("COFFER_CREATE_SINK")
        .env_remove("COFFER_SIGNING_KEY")
        .env_remove("MONGO_URI");
    if let Some(uri) = mongo_uri {
        cmd.env("MONGO_URI", uri);
    }
    let out = cmd.output().unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, said)
}

/// The snapshots on the example's sink (`coffer --json list`), oldest
/// first, each complete and holding the block's four sources.
fn snapshots(qs: &Path) -> Vec<Value> {
    let out = Command::new(coffer_bin())
        .args(["--json", "list", "--sink", "./backups"])
        .current_dir(qs)
        .env_remove("COFFER_CONFIG")
        .output()
        .unwrap();
    let listing = json_as("list", &out);
    let sinks = listing.as_array().unwrap();
    assert_eq!(sinks.len(), 1, "{listing}");
    assert_eq!(sinks[0]["incomplete"], serde_json::json!([]), "{listing}");
    assert_eq!(sinks[0]["unreadable"], serde_json::json!([]), "{listing}");
    let snapshots = sinks[0]["snapshots"].as_array().unwrap().clone();
    for s in &snapshots {
        assert_eq!(s["state"], "complete", "{s}");
        let mut sources: Vec<&str> = s["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        sources.sort();
        assert_eq!(
            sources,
            ["data", "env", "issuer-directory.yaml", "mongodump"],
            "{s}"
        );
    }
    snapshots
}

fn id(snapshot: &Value) -> String {
    snapshot["id"].as_str().unwrap().to_string()
}

#[test]
fn the_readme_quick_start_runs_as_written_twice() {
    let script = quick_start();
    let lines: Vec<&str> = script.lines().collect();
    // One subshell with `set -e` around the whole block: the first failing
    // line stops it, and the user's shell keeps its directory (so pasting
    // it again starts from the repository's root again).
    assert_eq!(code_of(lines[0]), "(", "{}", lines[0]);
    assert_eq!(code_of(lines[1]), "set -e", "{}", lines[1]);
    assert_eq!(code_of(lines.last().unwrap()), ")", "{script}");
    let parens = lines.iter().filter(|l| matches!(code_of(l), "(" | ")")).count();
    assert_eq!(parens, 2, "one subshell around the whole block:\n{script}");
    // The build line is the only one not run: the binary under test is
    // put on PATH instead (by the script's own `export PATH` line, whose
    // target/release is made to hold it).
    assert!(
        lines[2].starts_with("cargo build --release -p coffer"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("export PATH=$PWD/target/release:$PATH"),
        "{}",
        lines[3]
    );
    assert!(lines[4].starts_with("cd examples/quickstart"), "{}", lines[4]);
    let body = [&lines[..2], &lines[3..]].concat().join("\n");

    let d = tempfile::tempdir().unwrap();
    let repo = d.path();
    copy_example(repo);
    let qs = repo.join("examples/quickstart");
    // A clean checkout's example: its files, none of a run's leftovers.
    for file in [
        "coffer.toml",
        "dev.env",
        "etc/issuer-directory.yaml",
        "data/csaf-publishers.json",
    ] {
        assert!(qs.join(file).is_file(), "{file} was not copied");
    }
    assert!(qs.join("mongodump/test").is_dir());
    for leftover in LEFTOVERS {
        assert!(!qs.join(leftover).exists(), "{leftover} was copied");
    }
    fs::create_dir_all(repo.join("target/release")).unwrap();
    std::os::unix::fs::symlink(coffer_bin(), repo.join("target/release/coffer")).unwrap();
    let env_before = fs::read_to_string(qs.join("dev.env")).unwrap();

    let server = MongoServer::start();
    let uri = server.as_ref().map(|s| s.uri(""));

    // The first run: a new key, the first snapshot.
    let (out, said) = run(&body, repo, uri.as_deref());
    assert!(out.status.success(), "the quick start failed:\n{said}");
    let key = fs::read_to_string(qs.join("key.txt")).unwrap();
    let recipient = key
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("the key file names its public key");
    assert!(recipient.starts_with("age1"), "{recipient}");
    // keygen ran, printed the recipient the backup then used.
    assert!(said.contains("identity written to key.txt"), "{said}");
    assert!(said.contains(recipient), "{said}");
    let first = snapshots(&qs);
    assert_eq!(first.len(), 1, "{first:?}");
    let id1 = id(&first[0]);
    // What it did: one bundle with all four parts, checked, restored.
    assert!(said.contains(&format!("snapshot {id1} ")), "{said}");
    assert!(said.contains(&format!("{id1}: ok (decrypted, ")), "{said}");
    assert!(said.contains("files match SHA256SUMS"), "{said}");
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

    // The second run, in the same copy: the same key, a second snapshot,
    // and the checks and restores are of that one.
    let (out, said) = run(&body, repo, uri.as_deref());
    assert!(
        out.status.success(),
        "the quick start failed the second time:\n{said}"
    );
    assert_eq!(
        fs::read_to_string(qs.join("key.txt")).unwrap(),
        key,
        "the key changed"
    );
    assert!(!said.contains("identity written to"), "keygen ran again:\n{said}");
    let second = snapshots(&qs);
    assert_eq!(second.len(), 2, "no second snapshot: {second:?}");
    assert_eq!(id(&second[0]), id1);
    let id2 = id(&second[1]);
    assert_ne!(id2, id1);
    assert!(said.contains(&format!("snapshot {id2} ")), "{said}");
    assert!(said.contains(&format!("{id2}: ok (decrypted, ")), "{said}");
    assert!(!said.contains(&format!("{id1}: ok (decrypted, ")), "{said}");
    assert!(!said.contains("example-password"), "a secret value was printed");
    assert_eq!(fs::read_to_string(qs.join("dev.env")).unwrap(), env_before);
    assert_eq!(
        fs::read(qs.join("drill/csaf-publishers.json")).unwrap(),
        fs::read(qs.join("data/csaf-publishers.json")).unwrap()
    );

    if let Some(server) = &server {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let c = mongodb::Client::with_uri_str(server.uri("")).await.unwrap();
            let foo = c.database("test").collection::<Document>("foo");
            assert_eq!(foo.count_documents(doc! {}).await.unwrap(), 1);
            let indexes = foo.list_index_names().await.unwrap();
            assert!(indexes.contains(&"f_1".to_string()), "{indexes:?}");
            // The drills passed and removed their scratch databases.
            let names = c.list_database_names().await.unwrap();
            assert!(!names.iter().any(|n| n.contains("-drill-")), "{names:?}");
        });
        assert!(
            said.lines().any(|l| l.ends_with(": PASSED")),
            "the quick start's whole drill did not pass:\n{said}"
        );
    }
    // Each run drilled the files and the secret without a database (a
    // partial drill), and with a server the whole snapshot too.
    assert!(
        said.contains(": PASSED (partial: mongodump not drilled)"),
        "the quick start's partial drill did not pass:\n{said}"
    );
    let drills = fs::read_dir(qs.join("backups/drills")).unwrap().count();
    let per_run = if server.is_some() { 2 } else { 1 };
    assert_eq!(drills, 2 * 2 * per_run, "a .json and a .md per drill");
    let history = Command::new(coffer_bin())
        .args(["--json", "drills", "--sink", "./backups"])
        .current_dir(&qs)
        .env_remove("COFFER_CONFIG")
        .output()
        .unwrap();
    let history = json_as("drills", &history);
    let lines = history[0]["drills"].as_array().unwrap();
    let partial: Vec<&Value> = lines
        .iter()
        .filter(|d| d["left_out"] != serde_json::json!([]))
        .collect();
    assert_eq!(partial.len(), 2, "{history}");
    for d in &partial {
        assert_eq!(d["left_out"], serde_json::json!(["mongodump"]), "{d}");
        assert_eq!(d["passed"], true, "{d}");
    }
    // A partial drill is never the last passed one.
    match &server {
        Some(_) => {
            let last = history[0]["last_passed"]["drill"].as_str().unwrap();
            let whole = lines
                .iter()
                .rev()
                .find(|d| d["left_out"] == serde_json::json!([]))
                .unwrap();
            assert_eq!(whole["drill"], last, "{history}");
        }
        None => assert!(history[0]["last_passed"].is_null(), "{history}"),
    }

    // A third run whose backup fails (a source is gone) stops there: no
    // check or restore runs against the older snapshots. The restore of
    // the file sources would have put the missing file back, the scratch
    // restore would have made drill/ again.
    fs::remove_file(qs.join("etc/issuer-directory.yaml")).unwrap();
    fs::remove_dir_all(qs.join("drill")).unwrap();
    let (out, said) = run(&body, repo, uri.as_deref());
    assert!(
        !out.status.success(),
        "a failed backup did not stop the block:\n{said}"
    );
    assert!(said.contains("issuer-directory.yaml"), "{said}");
    assert!(
        !said.contains("match the index"),
        "verify ran after the failed backup:\n{said}"
    );
    assert!(
        !said.contains("files match SHA256SUMS"),
        "verify ran after the failed backup:\n{said}"
    );
    assert!(
        !qs.join("etc/issuer-directory.yaml").exists(),
        "a restore ran after the failed backup"
    );
    assert!(
        !qs.join("drill").exists(),
        "a restore ran after the failed backup"
    );
    let after = snapshots(&qs);
    assert_eq!(
        after.iter().map(id).collect::<Vec<_>>(),
        [id1, id2],
        "the failed run changed the sink"
    );
}

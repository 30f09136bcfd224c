//! The `command` source: a program's stdout stored as one entry, given
//! back to a restore command's stdin or as a file under `--target`. A
//! failing or hanging command fails the backup and stores nothing; secret
//! variables never reach the output; a large output streams in bounded
//! memory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use coffer_e2e::{coffer, json_ok, keygen};
use serde_json::Value;

/// A config with job `main` (command source `cmd` with these extra
/// lines, sink `bk`).
fn config(dir: &Path, rec: &str, source: &str) {
    fs::write(
        dir.join("coffer.toml"),
        format!(
            "recipients = [\"{rec}\"]\n[source.cmd]\nkind = \"command\"\n{source}\n\
             [sink.bk]\nkind = \"local\"\npath = \"bk\"\ncreate = true\n\
             [job.main]\nsources = [\"cmd\"]\nsinks = [\"bk\"]\n"
        ),
    )
    .unwrap();
}

fn snapshots(dir: &Path) -> usize {
    let out = coffer(dir)
        .args(["--json", "list", "--sink", "bk"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["snapshots"].as_array().expect("a list of snapshots").len()
}

#[test]
fn output_round_trips_through_the_restore_command_and_to_a_target_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, rec) = keygen(p, "key.txt");
    let data = "{\"db_password\": \"hunter22\"}\nline two\n";
    fs::write(p.join("store.json"), data).unwrap();
    config(
        p,
        &rec,
        "command = [\"cat\", \"store.json\"]\nrestore = [\"sh\", \"-c\", \"cat > restored.json\"]\nsecret = true\nfile = \"vault.json\"",
    );
    let backup = json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    let id = backup["id"].as_str().unwrap().to_string();

    // To the restore command's stdin.
    let out = coffer(p)
        .args(["--json", "restore", &id, "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    let v = json_ok(&out);
    assert_eq!(fs::read_to_string(p.join("restored.json")).unwrap(), data);
    assert!(v.to_string().contains("\"run\""), "{v}");
    assert!(!v.to_string().contains("hunter22"), "{v}");

    // A dry run runs nothing.
    fs::remove_file(p.join("restored.json")).unwrap();
    let out = coffer(p)
        .args(["restore", &id, "--dry-run", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!p.join("restored.json").exists());

    // As a file under --target, mode 0600 (a secret).
    let out = coffer(p)
        .args(["restore", &id, "--target", "out", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = p.join("out/vault.json");
    assert_eq!(fs::read_to_string(&file).unwrap(), data);
    assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // The report names the program and the entry; a secret's hash is not
    // recorded (it would let anyone with the manifest test guesses).
    let details = &backup["sources"][0]["details"];
    assert_eq!(details["program"], "cat", "{backup}");
    assert_eq!(details["file"], "vault.json", "{backup}");
    assert_eq!(details["bytes"], data.len(), "{backup}");
    assert!(details.get("sha256").is_none(), "{backup}");
}

#[test]
fn a_failing_restore_command_fails_the_restore() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, rec) = keygen(p, "key.txt");
    config(
        p,
        &rec,
        "command = [\"echo\", \"data\"]\nrestore = [\"sh\", \"-c\", \"cat >/dev/null; echo import refused >&2; exit 4\"]",
    );
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    let out = coffer(p)
        .args(["restore", "latest", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("exited with status 4") && err.contains("import refused"),
        "{err}"
    );

    // Without a restore command: a clear error, unless --target.
    config(p, &rec, "command = [\"echo\", \"data\"]");
    let out = coffer(p)
        .args(["restore", "latest", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no `restore` command") && err.contains("--target"),
        "{err}"
    );
}

#[test]
fn a_non_zero_exit_fails_the_backup_and_stores_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, rec) = keygen(p, "key.txt");
    // It printed half its output, then failed: the classic `dump | store`
    // hole. Nothing may be stored.
    config(
        p,
        &rec,
        "command = [\"sh\", \"-c\", \"echo partial; echo 'connection lost' >&2; exit 3\"]",
    );
    let out = coffer(p).arg("backup").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(err.contains("connection lost"), "stderr tail in the error: {err}");
    assert_eq!(snapshots(p), 0);

    // A program that does not exist.
    config(p, &rec, "command = [\"no-such-program-coffer\"]");
    let out = coffer(p).arg("backup").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("no-such-program-coffer") && err.contains("PATH"),
        "{err}"
    );

    // A string command without `shell = true` is a config error.
    config(p, &rec, "command = \"echo hi | cat\"");
    let out = coffer(p).arg("backup").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("shell = true"), "{err}");
    // With it, the shell runs it.
    config(p, &rec, "command = \"echo hi | tr h H\"\nshell = true");
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    assert_eq!(snapshots(p), 1);
}

#[test]
fn a_command_that_hangs_is_killed_at_its_timeout_with_its_children() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, rec) = keygen(p, "key.txt");
    config(
        p,
        &rec,
        "command = [\"sh\", \"-c\", \"echo some; sleep 300 & echo $! > child.pid; wait\"]\ntimeout = 2",
    );
    let started = Instant::now();
    let out = coffer(p).arg("backup").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("did not finish within 2 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(snapshots(p), 0);
    let pid: i32 = fs::read_to_string(p.join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signal 0 only checks that the process exists.
    let deadline = Instant::now() + Duration::from_secs(5);
    while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(
        unsafe { libc::kill(pid, 0) },
        0,
        "the command's child {pid} is still running"
    );
}

#[test]
fn secret_values_of_its_environment_never_reach_the_output() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, rec) = keygen(p, "key.txt");
    config(
        p,
        &rec,
        "command = [\"sh\", \"-c\", \"echo \\\"login with $TOKEN as $USER_NAME\\\" >&2; echo ok; test -z \\\"$UNLISTED\\\"\"]\n\
         env = { TOKEN = \"tok-7f3a9c-secret\" }\npass-env = [\"USER_NAME\"]",
    );
    let out = coffer(p)
        .args(["-v", "--json", "backup"])
        .env("USER_NAME", "alice-the-admin")
        .env("UNLISTED", "must-not-pass")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("login with *** as ***"),
        "stderr logged, masked: {all}"
    );
    assert!(
        !all.contains("tok-7f3a9c") && !all.contains("alice-the-admin"),
        "{all}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap();
    let out = coffer(p)
        .args(["--json", "show", id, "--sink", "bk"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains("tok-7f3a9c"), "{shown}");
}

/// Peak resident memory of this test's largest child so far, in KiB.
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    }
}

#[test]
fn one_gib_of_output_streams_in_bounded_memory_both_ways() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, rec) = keygen(p, "key.txt");
    config(
        p,
        &rec,
        "command = [\"head\", \"-c\", \"1073741824\", \"/dev/zero\"]\nrestore = [\"sh\", \"-c\", \"wc -c > restored.size\"]",
    );
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    let out = coffer(p)
        .args(["restore", "latest", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        fs::read_to_string(p.join("restored.size")).unwrap().trim(),
        "1073741824"
    );
    let rss = children_max_rss_kib();
    assert!(rss < 200 * 1024, "peak RSS {rss} KiB for 1 GiB of output");
}

/// A job of files and a command source whose restore command fails: the
/// command runs before the files are renamed into place (renames cannot
/// fail once staged), so the files are left as they were, and the error
/// says exactly what was and was not applied, in text and in `--json`.
#[test]
fn a_failing_restore_command_leaves_the_files_unreplaced_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, rec) = keygen(p, "key.txt");
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/app.yaml"), "version: 1\n").unwrap();
    fs::write(
        p.join("coffer.toml"),
        format!(
            "recipients = [\"{rec}\"]\n[source.conf]\nkind = \"file\"\npath = \"svc\"\n\
             [source.cmd]\nkind = \"command\"\ncommand = [\"echo\", \"data\"]\n\
             restore = [\"sh\", \"-c\", \"cat >/dev/null; echo import refused >&2; exit 7\"]\n\
             [sink.bk]\nkind = \"local\"\npath = \"bk\"\ncreate = true\n\
             [job.main]\nsources = [\"conf\", \"cmd\"]\nsinks = [\"bk\"]\n"
        ),
    )
    .unwrap();
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    fs::write(p.join("svc/app.yaml"), "version: 2\n").unwrap();
    for json in [false, true] {
        let mut c = coffer(p);
        if json {
            c.arg("--json");
        }
        let out = c
            .args(["restore", "latest", "--identity"])
            .arg(&key)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(
            fs::read_to_string(p.join("svc/app.yaml")).unwrap(),
            "version: 2\n",
            "the files were replaced although the restore failed"
        );
        let message = if json {
            let v: Value = serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{e}: {err}"));
            v["error"]["message"].as_str().unwrap().to_string()
        } else {
            err.clone()
        };
        assert!(
            message.contains("exited with status 7") && message.contains("no other source was changed"),
            "{message}"
        );
        assert!(!err.contains("nothing partial was kept"), "{err}");
    }
}

/// A `file` with control characters (an ESC that would recolour the
/// terminal) is refused, and shown escaped, never raw.
#[test]
fn a_file_name_with_control_characters_is_refused_and_never_printed_raw() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, rec) = keygen(p, "key.txt");
    config(
        p,
        &rec,
        "command = [\"echo\", \"data\"]\nfile = \"out\\u001b[31m.txt\"",
    );
    let out = coffer(p).args(["backup"]).output().unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("not a plain file name"), "{shown}");
    assert!(!shown.contains('\u{1b}'), "a raw ESC was printed: {shown:?}");
}

/// A command source round-trips through a chunked snapshot too.
#[test]
fn output_round_trips_through_a_chunked_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, rec) = keygen(p, "key.txt");
    let data = "{\"db_password\": \"hunter22\"}\n".repeat(5000);
    fs::write(p.join("store.json"), &data).unwrap();
    config(
        p,
        &rec,
        "command = [\"cat\", \"store.json\"]\nrestore = [\"sh\", \"-c\", \"cat > restored.json\"]\nsecret = true",
    );
    let backup = json_ok(
        &coffer(p)
            .args(["--json", "backup", "--format", "chunked"])
            .output()
            .unwrap(),
    );
    assert!(backup["chunks"].is_object(), "{backup}");
    let id = backup["id"].as_str().unwrap().to_string();
    json_ok(
        &coffer(p)
            .args(["--json", "restore", &id, "--identity"])
            .arg(&key)
            .output()
            .unwrap(),
    );
    assert_eq!(fs::read_to_string(p.join("restored.json")).unwrap(), data);
}

//! Cold backups: a job's `before`, `after` and `on-failure` hooks. `after`
//! runs on success, on failure, when `before` fails, on SIGINT and on
//! SIGTERM; a hook that hangs is killed with its process group.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use coffer_e2e::{HttpService, coffer, coffer_bin, keygen};
use serde_json::Value;

/// A config with job `main` (source `svc`, sink `bk` at `sink`) and these
/// hook lines in the job.
fn config(dir: &Path, rec: &str, sink: &str, hooks: &str) {
    fs::create_dir_all(dir.join("svc")).unwrap();
    fs::write(dir.join("svc/a.yaml"), "a: 1\n").unwrap();
    fs::write(
        dir.join("coffer.toml"),
        format!(
            "recipients = [\"{rec}\"]\n[source.svc]\nkind = \"file\"\npath = \"svc\"\n[sink.bk]\nkind = \"local\"\npath = \"{sink}\"\ncreate = true\n[job.main]\nsources = [\"svc\"]\nsinks = [\"bk\"]\n{hooks}\n"
        ),
    )
    .unwrap();
}

/// A hook appending `word` to `log` in the config's directory.
fn say(word: &str) -> String {
    format!("[\"sh\", \"-c\", \"echo {word} >> log\"]")
}

fn log(dir: &Path) -> String {
    fs::read_to_string(dir.join("log")).unwrap_or_default()
}

#[test]
fn hooks_run_in_order_and_after_runs_even_when_the_backup_fails() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, rec) = keygen(p, "key.txt");
    let hooks = format!(
        "before = [{}]\nafter = [{}, {}]\non-failure = [{}]",
        say("stop"),
        say("start"),
        say("check"),
        say("alert")
    );
    config(p, &rec, "bk", &hooks);
    let out = coffer(p).args(["--json", "backup"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(log(p), "stop\nstart\ncheck\n");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hooks_json = v["hooks"].as_array().unwrap();
    assert_eq!(hooks_json.len(), 3, "{v}");
    assert!(
        hooks_json.iter().all(|h| h["ok"] == true && h["program"] == "sh"),
        "{v}"
    );
    assert_eq!(hooks_json[0]["phase"], "before");

    // Every sink fails: after and on-failure still run, the run fails.
    fs::remove_file(p.join("log")).unwrap();
    fs::write(p.join("not-a-dir"), "x").unwrap();
    config(p, &rec, "not-a-dir/bk", &hooks);
    let out = coffer(p).arg("backup").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(log(p), "stop\nstart\ncheck\nalert\n");

    // A failing `before` stops the backup; `after` and `on-failure` run.
    fs::remove_file(p.join("log")).unwrap();
    let failing = format!(
        "before = [[\"false\"]]\nafter = [{}]\non-failure = [{}]",
        say("start"),
        say("alert")
    );
    config(p, &rec, "bk2", &failing);
    let out = coffer(p).arg("backup").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("did not start") && err.contains("hook before false"),
        "{err}"
    );
    assert_eq!(log(p), "start\nalert\n");
    assert!(!p.join("bk2").exists(), "no backup ran");
}

#[test]
fn a_hanging_hook_is_killed_with_its_process_group() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, rec) = keygen(p, "key.txt");
    let hooks = format!(
        "before = [[\"sh\", \"-c\", \"sleep 60 & echo $! > child; sleep 60\"]]\nafter = [{}]\nhook-timeout = 1",
        say("start")
    );
    config(p, &rec, "bk", &hooks);
    let started = Instant::now();
    let out = coffer(p).arg("backup").output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("KILLED after its timeout"), "{err}");
    assert_eq!(log(p), "start\n");
    // The hook's own child went with it.
    let child: i32 = fs::read_to_string(p.join("child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Gone, or a zombie its new parent has not reaped yet: not running.
    let state = fs::read_to_string(format!("/proc/{child}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().and_then(|rest| rest.chars().next()));
    assert!(
        matches!(state, None | Some('Z') | Some('X')),
        "the hook's background child survived: {state:?}"
    );
}

#[test]
fn after_runs_on_sigint_sigterm_and_sighup() {
    // SIGHUP: an SSH session dropping must not leave the service stopped.
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let (_, rec) = keygen(p, "key.txt");
        let hooks = format!(
            "before = [[\"sh\", \"-c\", \"echo stop >> log; sleep 30\"]]\nafter = [{}]\nhook-timeout = 60",
            say("start")
        );
        config(p, &rec, "bk", &hooks);
        let mut child = std::process::Command::new(coffer_bin())
            .arg("backup")
            .current_dir(p)
            .env_remove("COFFER_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !log(p).contains("stop") {
            assert!(Instant::now() < deadline, "the before hook never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: sends a signal to the child we started.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "signal {signal}");
        assert_eq!(log(p), "stop\nstart\n", "signal {signal}");
    }
}

#[test]
fn the_health_wait_says_whether_the_service_came_back() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, rec) = keygen(p, "key.txt");
    let server = HttpService::start(p, 2);
    let port = server.port;
    let job = |path: &str, timeout: u32| {
        format!(
            "after = [{}]\non-failure = [{}]\nhealth = {{ url = \"http://127.0.0.1:{port}{path}\", timeout = {timeout}, interval = 1, contains = \"live\" }}",
            say("start"),
            say("alert")
        )
    };
    // Comes back on the third attempt.
    config(p, &rec, "bk", &job("/live", 20));
    let out = coffer(p).args(["--json", "backup"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["health"]["ok"], true, "{v}");
    assert_eq!(v["health"]["attempts"], 3, "{v}");
    assert_eq!(log(p), "start\n");

    // Never healthy, and too slow: the run fails, on-failure runs.
    for (path, why) in [("/down", "500, not 200"), ("/slow", "timed out")] {
        fs::remove_file(p.join("log")).unwrap();
        config(p, &rec, "bk", &job(path, 2));
        let started = Instant::now();
        let out = coffer(p).arg("backup").output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(
            said.contains("did not come back") && said.contains(why),
            "{path}: {said}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(log(p), "start\nalert\n", "{path}");
    }
}

/// A hook that starts something in the background and exits 0 (`sh -c
/// 'x &'`, a service started detached) is a success at once, not KILLED at
/// its timeout because the background child keeps the output pipes open.
#[test]
fn a_hook_that_leaves_a_background_child_succeeds_when_it_exits() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, rec) = keygen(p, "key.txt");
    let hooks = format!(
        "after = [[\"sh\", \"-c\", \"echo started; sleep 20 &\"], {}]\nhook-timeout = 10",
        say("start")
    );
    config(p, &rec, "bk", &hooks);
    let started = Instant::now();
    let out = coffer(p).args(["--json", "backup"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hooks_json = v["hooks"].as_array().unwrap();
    assert!(hooks_json.iter().all(|h| h["ok"] == true), "{v}");
    assert_eq!(log(p), "start\n");
}

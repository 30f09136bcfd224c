//! End-to-end: continuous point-in-time recovery against the real
//! MongoDB-compatible server and its real oplog (no mock): `coffer oplog
//! follow` archives slices, `coffer restore --to-time/--to-ts` replays
//! them on the newest base, `coffer oplog status` and `export`.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use coffer_e2e::mongo_server::MongoServer;
use coffer_e2e::{coffer, keygen, spawn_coffer};
use mongodb::Client;
use mongodb::bson::{Document, Timestamp, doc};
use serde_json::Value;

/// A job `app` whose MongoDB source (database `app`) is followed into the
/// local sink `bk`, with a second server to restore into.
struct Pitr {
    dir: tempfile::TempDir,
    /// Kept running for the test's life.
    _server: MongoServer,
    scratch: MongoServer,
    key: PathBuf,
    follower: Option<Child>,
    rt: tokio::runtime::Runtime,
    client: Client,
}

fn setup(max_entries: u32, on_gap: &str) -> Option<Pitr> {
    let server = MongoServer::start_with_heartbeat(max_entries, 1)?;
    let scratch = MongoServer::start()?;
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = keygen(dir.path(), "key.txt");
    std::fs::write(
        dir.path().join("coffer.toml"),
        format!(
            r#"recipients = ["{recipient}"]
metrics-file = "metrics.prom"

[source.db]
kind = "mongo"
uri = "{uri}"

[sink.bk]
kind = "local"
path = "bk"
create = true

[job.app]
sources = ["db"]
sinks = ["bk"]

[job.app.oplog]
slice-interval = 1
on-gap = "{on_gap}"
"#,
            uri = server.uri("app")
        ),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(Client::with_uri_str(server.uri(""))).unwrap();
    Some(Pitr {
        dir,
        _server: server,
        scratch,
        key,
        follower: None,
        rt,
        client,
    })
}

impl Pitr {
    fn p(&self) -> &Path {
        self.dir.path()
    }

    fn follow(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.p().join("follow.log"))
            .unwrap();
        let child = spawn_coffer(
            self.p(),
            &["--config", "coffer.toml", "oplog", "follow"],
            Stdio::from(log.try_clone().unwrap()),
            Stdio::from(log),
        );
        self.follower = Some(child);
    }

    fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
        let mut child = self.follower.take().expect("a follower runs");
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(child.id() as i32, sig) };
        child.wait().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.p().join("follow.log")).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        coffer(self.p())
            .args(["--config", "coffer.toml"])
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "coffer {args:?} failed: {}\n{}\nfollower:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn status(&self) -> Value {
        let v = serde_json::from_str(&self.ok(&["--json", "oplog", "status", "--sink", "bk"])).unwrap();
        coffer_e2e::assert_schema("oplog-status", &v)
    }

    /// Waits until the archive holds the whole second of `ts` (an entry of
    /// a later second is archived): `--to-time` of that second is then
    /// restorable, never before.
    fn wait_archived(&self, ts: Timestamp) {
        let ts = Timestamp {
            time: ts.time + 1,
            increment: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status();
            let newest = &s[0]["newest"];
            if newest.is_object()
                && (newest["t"].as_u64().unwrap(), newest["i"].as_u64().unwrap())
                    >= (u64::from(ts.time), u64::from(ts.increment))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not archived within 60 s: {ts:?}; status {s}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Inserts `{_id: id}` into app.users, returns its oplog `ts`.
    fn insert(&self, ids: &[i32]) -> Vec<Timestamp> {
        self.rt.block_on(async {
            let users = self.client.database("app").collection::<Document>("users");
            let mut out = Vec::new();
            for &id in ids {
                users
                    .insert_one(doc! { "_id": id, "v": format!("doc {id}") })
                    .await
                    .unwrap();
                out.push(self.ts_of(id).await);
            }
            out
        })
    }

    async fn ts_of(&self, id: i32) -> Timestamp {
        let e = self
            .client
            .database("local")
            .collection::<Document>("oplog.rs")
            .find_one(doc! { "ns": "app.users", "op": "i", "o._id": id })
            .await
            .unwrap()
            .expect("the insert is in the oplog");
        e.get_timestamp("ts").unwrap()
    }

    /// The `_id`s of app.users on the scratch server, sorted.
    fn restored_ids(&self) -> Vec<i32> {
        self.rt.block_on(async {
            let c = Client::with_uri_str(self.scratch.uri("")).await.unwrap();
            let mut ids: Vec<i32> = c
                .database("app")
                .collection::<Document>("users")
                .distinct("_id", doc! {})
                .await
                .unwrap()
                .into_iter()
                .filter_map(|b| b.as_i32())
                .collect();
            ids.sort();
            ids
        })
    }

    fn restore_to(&self, flag: &str, value: &str) -> std::process::Output {
        let key = self.key.to_str().unwrap().to_string();
        let uri = self.scratch.uri("");
        self.run(&[
            "restore",
            flag,
            value,
            "--identity",
            &key,
            "--mongo-uri",
            &uri,
            "--drop",
            "--no-checks",
        ])
    }

    /// [`Pitr::restore_to`] that must fail with exit `code`; its stderr.
    fn restore_refused(&self, flag: &str, value: &str, code: i32) -> String {
        let out = self.restore_to(flag, value);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{flag} {value}: {err}");
        err
    }

    /// [`Pitr::restore_to`] that must succeed.
    fn restore_ok(&self, flag: &str, value: &str) -> std::process::Output {
        let out = self.restore_to(flag, value);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out
    }

    fn backup(&self) {
        self.ok(&["backup", "app"]);
    }
}

impl Drop for Pitr {
    fn drop(&mut self) {
        if let Some(mut c) = self.follower.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A slice's public index.
fn index_of(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rfc3339(second: u32) -> String {
    jiff::Timestamp::from_second(i64::from(second))
        .unwrap()
        .to_string()
}

#[test]
fn restore_to_each_second_between_slices_gives_exactly_the_writes_up_to_it() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.insert(&[0, 1, 2]);
    t.follow_and_backup();
    // Writes over several seconds: they land in several slices.
    let mut written: Vec<(i32, Timestamp)> = Vec::new();
    for round in 0..4 {
        let ids: Vec<i32> = (0..3).map(|k| 10 + round * 3 + k).collect();
        written.extend(ids.iter().copied().zip(t.insert(&ids)));
        std::thread::sleep(Duration::from_millis(1100));
    }
    t.wait_archived(written.last().unwrap().1);
    let slices = t.slice_files("bk", "json").len();
    assert!(slices >= 3, "the writes span several slices: {slices}");

    let mut seconds: Vec<u32> = written.iter().map(|(_, ts)| ts.time).collect();
    seconds.dedup();
    for s in seconds {
        let out = t.restore_ok("--to-time", &rfc3339(s));
        let mut expected: Vec<i32> = vec![0, 1, 2];
        expected.extend(written.iter().filter(|(_, ts)| ts.time <= s).map(|(id, _)| *id));
        assert_eq!(
            t.restored_ids(),
            expected,
            "to the second {s} (every write of it included)"
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("archived entries from"), "{text}");
    }

    // The follower stops cleanly on SIGTERM: the open slice written, the
    // lease given up, exit 0.
    let last = t.insert(&[99])[0];
    std::thread::sleep(Duration::from_millis(200));
    let status = t.signal(libc::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", t.log());
    let s = t.status();
    assert!(
        (
            s[0]["newest"]["t"].as_u64().unwrap(),
            s[0]["newest"]["i"].as_u64().unwrap()
        ) >= (u64::from(last.time), u64::from(last.increment)),
        "SIGTERM wrote the open slice: {s}"
    );
    let leases: Vec<_> = std::fs::read_dir(t.p().join("bk/oplog/app/db"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("lease-")
        })
        .collect();
    assert!(leases.is_empty(), "the lease was given up");
    // The status asks the server how far behind the archive is.
    assert!(s[0]["lag_seconds"].is_i64(), "{s}");
    let metrics = std::fs::read_to_string(t.p().join("metrics.prom")).unwrap();
    assert!(
        metrics.contains("coffer_oplog_last_archived_timestamp_seconds{job=\"app\",source=\"db\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("coffer_oplog_lag_seconds"), "{metrics}");
    assert!(
        metrics.contains("coffer_oplog_restorable_to_timestamp_seconds"),
        "{metrics}"
    );
}

#[test]
fn two_writes_in_one_second_to_time_takes_both_to_ts_the_first() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.follow_and_backup();
    // One insert_many: two entries of the same second, ordinals apart.
    let (a, b) = t.rt.block_on(async {
        let users = t.client.database("app").collection::<Document>("users");
        users
            .insert_many(vec![doc! { "_id": 1 }, doc! { "_id": 2 }])
            .await
            .unwrap();
        (t.ts_of(1).await, t.ts_of(2).await)
    });
    if a.time != b.time {
        // Written across a second boundary: the ordinals are still checked.
        eprintln!("the two writes fell into different seconds; the ordinals are still checked");
    }
    assert!((a.time, a.increment) < (b.time, b.increment));
    t.wait_archived(b);
    t.restore_ok("--to-ts", &format!("{}:{}", a.time, a.increment));
    assert_eq!(
        t.restored_ids(),
        vec![1],
        "--to-ts S:I includes that entry and nothing after"
    );
    t.restore_ok("--to-time", &rfc3339(b.time));
    assert_eq!(
        t.restored_ids(),
        vec![1, 2],
        "--to-time includes the whole second"
    );
}

#[test]
fn a_follower_killed_at_random_moments_leaves_an_unbroken_chain_without_duplicates() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.follow_and_backup();
    let mut next = 100;
    let mut last = None;
    for round in 0..5u64 {
        let ids: Vec<i32> = (next..next + 15).collect();
        next += 15;
        last = t.insert(&ids).last().copied();
        // A kill somewhere between 0.1 and 1.9 s into the round.
        std::thread::sleep(Duration::from_millis(100 + (round * 397) % 1800));
        t.signal(libc::SIGKILL);
        t.follow();
    }
    t.wait_archived(last.unwrap());
    let s = t.status();
    assert_eq!(
        s[0]["breaks"],
        serde_json::json!([]),
        "no break: {s}\n{}",
        t.log()
    );
    assert_eq!(s[0]["ranges"].as_array().unwrap().len(), 1, "{s}");
    // Every write restored once, none twice: the chain neither lost nor
    // repeated an entry (a repeated insert would still leave one document,
    // so the export's oplog.bson is checked entry by entry too).
    t.restore_ok("--to-time", &rfc3339(last.unwrap().time));
    assert_eq!(t.restored_ids(), (100..next).collect::<Vec<_>>());
    let key = t.key.to_str().unwrap().to_string();
    t.ok(&[
        "oplog",
        "export",
        "--to-time",
        &rfc3339(last.unwrap().time),
        "--dir",
        "exp",
        "--identity",
        &key,
    ]);
    let bytes = std::fs::read(t.p().join("exp/oplog.bson")).unwrap();
    let mut seen = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let d = Document::from_reader(&bytes[at..at + len]).unwrap();
        let ts = d.get_timestamp("ts").unwrap();
        seen.push((ts.time, ts.increment));
        at += len;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "oplog.bson: ts order, no entry twice");
    t.signal(libc::SIGTERM);
}

#[test]
fn a_rolled_over_oplog_is_a_recorded_gap_that_restore_refuses_naming_valid_times() {
    let Some(mut t) = setup(50, "backup") else { return };
    t.insert(&[0]);
    t.follow();
    // The first chain gets its base backup from the follower itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !t.log().contains("base backup") || t.status()[0]["ranges"].as_array().is_none_or(|r| r.is_empty())
    {
        assert!(Instant::now() < deadline, "no base backup: {}", t.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    let before = t.insert(&[1])[0];
    t.wait_archived(before);
    t.signal(libc::SIGTERM);
    // Stopped while the oplog rolls over (it is pruned every 1,000 writes).
    t.rt.block_on(async {
        let c = t.client.database("app").collection::<Document>("noise");
        for chunk in 0..12 {
            let docs: Vec<Document> = (0..100).map(|i| doc! { "_id": chunk * 100 + i }).collect();
            for d in docs {
                c.insert_one(d).await.unwrap();
            }
        }
    });
    // The follower stays down a while longer: the gap spans seconds.
    std::thread::sleep(Duration::from_millis(2500));
    t.follow();
    // The gap is recorded on the new chain's first slice, whose base the
    // follower takes (on-gap = "backup"): two ranges, one gap between.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = t.status();
        let ranges = s[0]["ranges"].as_array().unwrap();
        let breaks = s[0]["breaks"].as_array().unwrap();
        if ranges.len() == 2 && !breaks.is_empty() && ranges[1]["to"] != ranges[1]["from"] {
            assert_eq!(breaks.len(), 1, "{s}");
            assert_eq!(breaks[0]["kind"], "gap", "{s}");
            assert!(
                breaks[0]["reason"].as_str().unwrap().contains("rolled over"),
                "{s}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no second range: {s}\n{}", t.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    let gap_log = t.log();
    assert!(gap_log.contains("gap after"), "{gap_log}");
    let metrics = std::fs::read_to_string(t.p().join("metrics.prom")).unwrap();
    assert!(
        metrics.contains("coffer_oplog_gaps_total{job=\"app\",source=\"db\"} 1"),
        "{metrics}"
    );
    let s = t.status();
    let first_end = s[0]["ranges"][0]["to"]["t"].as_u64().unwrap() as u32;
    let second_start = s[0]["ranges"][1]["from"]["t"].as_u64().unwrap() as u32;
    assert!(second_start > first_end + 1, "the gap spans seconds: {s}");
    // Into the gap: refused before anything is touched, naming the ranges.
    let err = t.restore_refused("--to-time", &rfc3339(first_end + 1), 2);
    assert!(
        err.contains("Restorable:") && err.contains(&rfc3339(second_start).replace('Z', "")[..16]),
        "{err}"
    );
    // Both sides of the gap restore: the first chain up to its last entry
    // (its last second is not whole: --to-time of it is refused too), the
    // second from its base.
    let end = &s[0]["ranges"][0]["to"];
    t.restore_ok("--to-ts", &format!("{}:{}", end["t"], end["i"]));
    assert_eq!(t.restored_ids(), vec![0, 1]);
    let end = &s[0]["ranges"][1]["to"];
    t.restore_ok("--to-ts", &format!("{}:{}", end["t"], end["i"]));
    assert_eq!(t.restored_ids(), vec![0, 1]);
    t.signal(libc::SIGTERM);
}

#[test]
fn a_damaged_or_missing_slice_fails_the_restore_before_the_database_is_touched() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.follow_and_backup();
    let mut last = None;
    for round in 0..3 {
        last = t.insert(&[round * 10, round * 10 + 1]).last().copied();
        std::thread::sleep(Duration::from_millis(1100));
    }
    t.wait_archived(last.unwrap());
    t.signal(libc::SIGTERM);
    // Something to lose on the target.
    t.seed_scratch();
    // The slice holding the first round's writes.
    let holding = t.holding_slice().with_extension("slice");
    let target = rfc3339(last.unwrap().time);
    let original = std::fs::read(&holding).unwrap();
    let mut bad = original.clone();
    let n = bad.len() / 2;
    bad[n] ^= 0x40;
    std::fs::write(&holding, &bad).unwrap();
    let err = t.restore_refused("--to-time", &target, 3);
    assert!(err.contains("SHA-256"), "a flipped byte: {err}");
    assert_eq!(t.restored_ids(), vec![-1], "nothing was dropped or written");
    // Removed (with its index): the chain is broken there.
    std::fs::write(&holding, &original).unwrap();
    std::fs::remove_file(holding.with_extension("json")).unwrap();
    t.restore_refused("--to-time", &target, 2);
    assert_eq!(t.restored_ids(), vec![-1], "nothing was dropped or written");
    let s = t.status();
    assert_eq!(s[0]["breaks"][0]["kind"], "missing", "{s}");
}

#[test]
fn an_idle_database_still_advances_the_archived_time() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.follow_and_backup();
    let first = t.status()[0]["newest"]["t"].as_u64();
    std::thread::sleep(Duration::from_secs(4));
    let later = t.status()[0]["newest"]["t"].as_u64();
    assert!(
        later > first,
        "no write, yet the archive moved on with the no-op entries: {first:?} → {later:?}\n{}",
        t.log()
    );
    t.signal(libc::SIGTERM);
}

#[test]
fn export_writes_the_base_dump_and_exactly_the_archived_entries_up_to_the_time() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.insert(&[0, 1]);
    t.follow_and_backup();
    let first = t.insert(&[10, 11]);
    std::thread::sleep(Duration::from_millis(1100));
    let second = t.insert(&[12]);
    t.wait_archived(second[0]);
    t.signal(libc::SIGTERM);
    // What an export killed with kill -9 left: removed by the next one.
    let stale = t.p().join(".coffer-tmp-export-999999999-x");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("users.bson"), b"plaintext").unwrap();
    let key = t.key.to_str().unwrap().to_string();
    let out = t.ok(&[
        "oplog",
        "export",
        "--to-time",
        &rfc3339(first[1].time),
        "--dir",
        "exp",
        "--identity",
        &key,
    ]);
    assert!(
        out.contains("mongorestore --drop --oplogReplay --oplogLimit"),
        "{out}"
    );
    let exp = t.p().join("exp");
    // The dump part: the base snapshot's files, byte for byte.
    let users = std::fs::read(exp.join("app/users.bson")).unwrap();
    let mut docs = Vec::new();
    let mut at = 0;
    while at < users.len() {
        let len = u32::from_le_bytes(users[at..at + 4].try_into().unwrap()) as usize;
        docs.push(
            Document::from_reader(&users[at..at + len])
                .unwrap()
                .get_i32("_id")
                .unwrap(),
        );
        at += len;
    }
    docs.sort();
    assert_eq!(docs, vec![0, 1], "the base's collection");
    assert!(exp.join("app/users.metadata.json").exists());
    // oplog.bson: the archived entries up to the time, in ts order, of the
    // job's database only (no no-ops), each a whole BSON document.
    let bytes = std::fs::read(exp.join("oplog.bson")).unwrap();
    let mut entries = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        entries.push(Document::from_reader(&bytes[at..at + len]).unwrap());
        at += len;
    }
    assert_eq!(at, bytes.len(), "nothing but whole documents");
    let inserted: Vec<i32> = entries
        .iter()
        .filter(|e| e.get_str("op") == Ok("i"))
        .map(|e| e.get_document("o").unwrap().get_i32("_id").unwrap())
        .collect();
    let expected: Vec<i32> = [(10, first[0]), (11, first[1]), (12, second[0])]
        .into_iter()
        .filter(|(_, ts)| ts.time <= first[1].time)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(inserted, expected);
    assert!(
        entries.iter().all(|e| e.get_str("op") != Ok("n")),
        "no no-op entries"
    );
    let ts: Vec<(u32, u32)> = entries
        .iter()
        .map(|e| {
            let t = e.get_timestamp("ts").unwrap();
            (t.time, t.increment)
        })
        .collect();
    let mut sorted = ts.clone();
    sorted.sort();
    assert_eq!(ts, sorted);
    // Nothing left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(t.p())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".coffer-tmp")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A second export onto it is refused.
    let again = t.run(&[
        "oplog",
        "export",
        "--to-time",
        &rfc3339(first[1].time),
        "--dir",
        "exp",
        "--identity",
        &key,
    ]);
    assert_eq!(again.status.code(), Some(2));
}

/// A server that stops answering for a while (SIGSTOP: a stall, a cut
/// network) does not end the follower: it says it reconnects, resumes
/// from the archive once the server answers again, and the chain holds
/// every write, with none twice.
#[test]
fn a_follower_outlives_a_server_that_stops_answering_for_a_while() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.insert(&[0]);
    t.follow_and_backup();
    let before = t.insert(&[1])[0];
    t.wait_archived(before);
    t._server.signal(libc::SIGSTOP);
    // Past the driver's heartbeat timeout (10 s): the tail's read fails.
    std::thread::sleep(Duration::from_secs(25));
    t._server.signal(libc::SIGCONT);
    let after = t.insert(&[2, 3]);
    t.wait_archived(after[1]);
    assert!(
        t.follower.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the follower ended:\n{}",
        t.log()
    );
    assert!(t.log().contains("reconnecting"), "{}", t.log());
    t.restore_ok("--to-ts", &format!("{}:{}", after[1].time, after[1].increment));
    assert_eq!(t.restored_ids(), vec![0, 1, 2, 3]);
    let status = t.status();
    assert_eq!(status[0]["breaks"], serde_json::json!([]), "{status}");
    assert_eq!(status[0]["ranges"].as_array().unwrap().len(), 1, "{status}");
}

#[test]
fn a_second_follower_is_refused_while_the_first_holds_the_lease() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.follow();
    std::thread::sleep(Duration::from_millis(2000));
    let out = t.run(&["oplog", "follow"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another follower holds the oplog lease"), "{err}");
    t.signal(libc::SIGTERM);
}

#[test]
fn prune_keeps_every_kept_snapshots_chain_and_removes_the_slices_before_them() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.follow_and_backup();
    let early = t.insert(&[1])[0];
    std::thread::sleep(Duration::from_millis(1100));
    t.backup();
    std::thread::sleep(Duration::from_millis(1100));
    let late = t.insert(&[2])[0];
    t.wait_archived(late);
    t.signal(libc::SIGTERM);
    let before = t.status();
    let slices_before = before[0]["slices"].as_u64().unwrap();

    let dry: Value =
        serde_json::from_str(&t.ok(&["--json", "prune", "--keep-last", "1", "--dry-run"])).unwrap();
    let would = dry[0]["slices"][0]["removed"].as_u64().unwrap();
    assert!(would > 0, "slices before the kept snapshot would go: {dry}");
    assert_eq!(
        t.status()[0]["slices"].as_u64().unwrap(),
        slices_before,
        "a dry run removes nothing"
    );

    let done: Value = serde_json::from_str(&t.ok(&["--json", "prune", "--keep-last", "1"])).unwrap();
    coffer_e2e::assert_schema("prune", &done);
    assert_eq!(done[0]["slices"][0]["removed"].as_u64().unwrap(), would, "{done}");
    let after = t.status();
    assert_eq!(after[0]["slices"].as_u64().unwrap(), slices_before - would);
    assert_eq!(after[0]["breaks"], serde_json::json!([]), "{after}");
    // The kept snapshot still restores to every time after it …
    t.restore_ok("--to-time", &rfc3339(late.time));
    assert_eq!(t.restored_ids(), vec![1, 2]);
    // … and a time only the pruned snapshot reached is refused.
    t.restore_refused("--to-ts", &format!("{}:{}", early.time, early.increment), 2);
}

#[test]
fn a_drill_rehearses_a_point_in_time_restore_and_records_it() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.insert(&[0, 1]);
    t.follow_and_backup();
    let ts = t.insert(&[2, 3, 4]);
    t.rt.block_on(async {
        let users = t.client.database("app").collection::<Document>("users");
        users.delete_one(doc! { "_id": 0 }).await.unwrap();
    });
    t.wait_archived(*ts.last().unwrap());
    std::thread::sleep(Duration::from_millis(1200));
    t.signal(libc::SIGTERM);
    let key = t.key.to_str().unwrap().to_string();
    let uri = t.scratch.uri("");
    let target = rfc3339(ts[2].time);
    let out = t.run(&[
        "--json",
        "drill",
        "--to-time",
        &target,
        "--identity",
        &key,
        "--mongo-uri",
        &uri,
    ]);
    let v = coffer_e2e::json_as("drill", &out);
    assert!(
        out.status.success(),
        "{v}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["to_ts"]["t"].as_u64(), Some(u64::from(ts[2].time)), "{v}");
    assert!(v["slices"].as_u64().unwrap() >= 1, "{v}");
    // The scratch copy held the counts as of the target: the base's two
    // documents plus the three archived inserts (the delete, if in that
    // second, too), or the drill would have failed its count check.
    let counts = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "mongo-counts");
    assert!(counts.is_some_and(|c| c["passed"] == true), "{v}");
    let restore = &v["checks"][0];
    assert!(
        restore["figure"]
            .as_str()
            .unwrap()
            .contains("oplog writes replayed"),
        "{v}"
    );
    // Its scratch databases are gone.
    let names = t.rt.block_on(async {
        Client::with_uri_str(&uri)
            .await
            .unwrap()
            .list_database_names()
            .await
            .unwrap()
    });
    assert!(!names.iter().any(|n| n.contains("-drill-")), "{names:?}");
    // Before the first base: refused like a restore.
    let out = t.run(&[
        "drill",
        "--to-time",
        "2020-01-01T00:00:00Z",
        "--identity",
        &key,
        "--mongo-uri",
        &uri,
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pitr {
    /// Starts the follower, lets it start its chain, then takes the base.
    fn follow_and_backup(&mut self) {
        self.follow();
        std::thread::sleep(Duration::from_millis(1500));
        self.backup();
    }

    /// A document on the restore target that a refused restore keeps.
    fn seed_scratch(&self) {
        self.rt.block_on(async {
            let c = Client::with_uri_str(self.scratch.uri("")).await.unwrap();
            c.database("app")
                .collection::<Document>("users")
                .insert_one(doc! { "_id": -1 })
                .await
                .unwrap();
        });
    }

    /// The slice files of `sink` with extension `ext`, in key order.
    fn slice_files(&self, sink: &str, ext: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(self.p().join(sink).join("oplog/app/db"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == ext)
                    && !p.file_name().unwrap().to_string_lossy().starts_with("lease")
            })
            .collect();
        out.sort();
        out
    }

    /// The index of the first slice on `bk` that stores entries.
    fn holding_slice(&self) -> PathBuf {
        self.slice_files("bk", "json")
            .into_iter()
            .find(|p| index_of(p)["entries"].as_u64().unwrap() > 0)
            .expect("a slice with entries")
    }

    /// Adds the sink `[sink.NAME]` (`table`: its lines) to the job.
    fn add_sink(&self, name: &str, table: &str) {
        self.edit_config(|s| {
            s.replace("sinks = [\"bk\"]", &format!("sinks = [\"bk\", \"{name}\"]"))
                .replace("[job.app]", &format!("[sink.{name}]\n{table}\n\n[job.app]"))
        });
    }

    fn edit_config(&self, edit: impl Fn(String) -> String) {
        let path = self.p().join("coffer.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
    }
}

#[test]
fn signed_slices_are_judged_and_an_unsigned_one_is_refused() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    let sign = t.p().join("sign.key");
    t.ok(&["keygen", "--signing", "-o", sign.to_str().unwrap()]);
    // The config signs, so it trusts its own key: unsigned is refused.
    t.edit_config(|s| format!("signing-key = \"sign.key\"\n{s}"));
    t.follow_and_backup();
    let ts = t.insert(&[1, 2]);
    t.wait_archived(ts[1]);
    t.signal(libc::SIGTERM);
    let sigs = t.slice_files("bk", "sig");
    assert!(!sigs.is_empty(), "slices are signed");
    t.restore_ok("--to-time", &rfc3339(ts[1].time));
    assert_eq!(t.restored_ids(), vec![1, 2]);
    // A slice whose signature was stripped (anyone with write access to
    // the sink could have made it): refused before anything is touched.
    std::fs::remove_file(t.holding_slice().with_extension("sig")).unwrap();
    t.seed_scratch();
    let err = t.restore_refused("--to-time", &rfc3339(ts[1].time), 3);
    assert!(err.contains("unsigned"), "{err}");
    assert_eq!(t.restored_ids(), vec![-1, 1, 2], "nothing was dropped");
}

#[test]
fn a_slice_one_sink_lacks_is_copied_from_another_when_the_follower_starts() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.add_sink("bk2", "kind = \"local\"\npath = \"bk2\"\ncreate = true");
    t.follow_and_backup();
    let mut ts = Vec::new();
    for id in 1..=3 {
        ts.extend(t.insert(&[id]));
        std::thread::sleep(Duration::from_millis(1100));
    }
    t.wait_archived(ts[2]);
    t.signal(libc::SIGKILL);
    // A kill between two sinks: bk2 misses a slice bk holds.
    let jsons = t.slice_files("bk2", "json");
    assert!(jsons.len() >= 3, "{jsons:?}");
    let victim = jsons[1].clone();
    std::fs::remove_file(&victim).unwrap();
    std::fs::remove_file(victim.with_extension("slice")).unwrap();
    let gap = t.run(&["--json", "oplog", "status", "--sink", "bk2"]);
    let v: Value = serde_json::from_slice(&gap.stdout).unwrap();
    assert_eq!(v[0]["breaks"][0]["kind"], "missing", "{v}");
    t.follow();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !t.log().contains("slice copies made") {
        assert!(Instant::now() < deadline, "{}", t.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(victim.exists(), "copied back");
    let out = t.run(&["--json", "oplog", "status", "--sink", "bk2"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["breaks"], serde_json::json!([]), "{v}");
    t.signal(libc::SIGTERM);
    // bk2 alone restores every write.
    let key = t.key.to_str().unwrap().to_string();
    let uri = t.scratch.uri("");
    let out = t.run(&[
        "restore",
        "--to-time",
        &rfc3339(ts[2].time),
        "--sink",
        "bk2",
        "--identity",
        &key,
        "--mongo-uri",
        &uri,
        "--drop",
        "--no-checks",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(t.restored_ids(), vec![1, 2, 3]);
}

#[test]
fn a_transaction_is_never_split_between_slices_and_restores_whole() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.follow_and_backup();
    // Transactions over a few seconds, slices cut every second: some
    // commit right at a cut.
    let mut commits = Vec::new();
    t.rt.block_on(async {
        let users = t.client.database("app").collection::<Document>("users");
        let audit = t.client.database("app").collection::<Document>("audit");
        for n in 0..25 {
            let mut session = t.client.start_session().await.unwrap();
            session.start_transaction().await.unwrap();
            users
                .insert_one(doc! { "_id": n })
                .session(&mut session)
                .await
                .unwrap();
            audit
                .insert_one(doc! { "_id": n, "user": n })
                .session(&mut session)
                .await
                .unwrap();
            session.commit_transaction().await.unwrap();
            commits.push(t.ts_of(n).await);
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
    });
    t.wait_archived(*commits.last().unwrap());
    t.signal(libc::SIGTERM);
    let s = t.status();
    assert_eq!(
        s[0]["unreadable"],
        serde_json::json!([]),
        "no slice overlaps another: {s}"
    );
    assert_eq!(s[0]["breaks"], serde_json::json!([]), "{s}");
    // Each slice starts after the previous one's last position: no
    // position is in two slices.
    let idx: Vec<Value> = t.slice_files("bk", "json").iter().map(|p| index_of(p)).collect();
    assert!(idx.len() >= 3, "several slices");
    for w in idx.windows(2) {
        let pos = |v: &Value| (v["t"].as_u64().unwrap(), v["i"].as_u64().unwrap());
        assert!(
            pos(&w[1]["first"]) > pos(&w[0]["last"]["ts"]),
            "{} then {}",
            w[0],
            w[1]
        );
        assert_eq!(w[1]["prev"], w[0]["last"]);
    }
    // To a transaction's position: both of its documents; to just before
    // it: neither.
    let pick = commits[commits.len() / 2];
    t.restore_ok("--to-ts", &format!("{}:{}", pick.time, pick.increment));
    let n = commits.len() / 2;
    assert_eq!(t.restored_ids(), (0..=n as i32).collect::<Vec<_>>());
    let audit = t.rt.block_on(async {
        let c = Client::with_uri_str(t.scratch.uri("")).await.unwrap();
        c.database("app")
            .collection::<Document>("audit")
            .count_documents(doc! {})
            .await
            .unwrap()
    });
    assert_eq!(audit, n as u64 + 1, "the transaction's other document too");
    t.restore_ok("--to-ts", &format!("{}:{}", pick.time, pick.increment - 1));
    assert_eq!(t.restored_ids(), (0..n as i32).collect::<Vec<_>>());
}

#[test]
fn index_builds_and_renames_after_the_base_are_replayed() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.insert(&[1]);
    t.rt.block_on(async {
        let db = t.client.database("app");
        db.collection::<Document>("audit")
            .insert_one(doc! { "_id": 1 })
            .await
            .unwrap();
    });
    t.follow_and_backup();
    let last = t.rt.block_on(async {
        let db = t.client.database("app");
        db.run_command(doc! { "createIndexes": "users", "indexes": [{ "key": { "email": 1 }, "name": "email_1", "unique": true }] })
            .await
            .unwrap();
        db.run_command(doc! { "createIndexes": "users", "indexes": [{ "key": { "gone": 1 }, "name": "gone_1" }] })
            .await
            .unwrap();
        db.run_command(doc! { "dropIndexes": "users", "index": "gone_1" }).await.unwrap();
        t.client
            .database("admin")
            .run_command(doc! { "renameCollection": "app.audit", "to": "app.audit2" })
            .await
            .unwrap();
        db.collection::<Document>("users").insert_one(doc! { "_id": 2, "email": "b@x" }).await.unwrap();
        t.ts_of(2).await
    });
    t.wait_archived(last);
    t.signal(libc::SIGTERM);
    let out = t.restore_ok("--to-time", &rfc3339(last.time));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("indexes built after the replay"), "{text}");
    let (indexes, colls) = t.rt.block_on(async {
        let c = Client::with_uri_str(t.scratch.uri("")).await.unwrap();
        let db = c.database("app");
        let indexes: Vec<String> = db
            .collection::<Document>("users")
            .list_index_names()
            .await
            .unwrap();
        let mut colls = db.list_collection_names().await.unwrap();
        colls.sort();
        (indexes, colls)
    });
    assert!(indexes.contains(&"email_1".to_string()), "{indexes:?}");
    assert!(
        !indexes.contains(&"gone_1".to_string()),
        "built then dropped: {indexes:?}"
    );
    assert_eq!(colls, ["audit2", "users"]);
    assert_eq!(t.restored_ids(), vec![1, 2]);
}

#[test]
fn an_archived_command_the_replay_does_not_know_is_refused_before_anything_is_touched() {
    if !coffer_e2e::require_tool("age") || !coffer_e2e::require_tool("zstd") {
        return;
    }
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.follow_and_backup();
    let ts = t.insert(&[1]);
    t.wait_archived(ts[0]);
    t.signal(libc::SIGTERM);
    // Someone with the key and write access to the sink (or a newer
    // server) put a command into a slice that this replay does not know.
    let json = t.holding_slice();
    let mut index = index_of(&json);
    let slice = json.with_extension("slice");
    let sh = |script: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(t.p())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let mut plain = sh(&format!("age -d -i key.txt {} | zstd -d", slice.display()));
    // At the position of the archived insert: inside the restore's range.
    let last = ts[0];
    let forged = doc! { "ts": last, "t": 1i64, "op": "c", "ns": "app.$cmd", "o": { "emptycapped": "users" } };
    forged.to_writer(&mut plain).unwrap();
    std::fs::write(t.p().join("plain.bin"), &plain).unwrap();
    let recipient = std::fs::read_to_string(&t.key).unwrap();
    let recipient = recipient
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    sh(&format!(
        "zstd -q -c plain.bin | age -r {recipient} > {}",
        slice.display()
    ));
    let object = std::fs::read(&slice).unwrap();
    use sha2::Digest;
    index["object"]["size"] = object.len().into();
    index["object"]["sha256"] = hex::encode(sha2::Sha256::digest(&object)).into();
    index["object"]["plain_size"] = plain.len().into();
    std::fs::write(&json, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    std::fs::remove_file(t.p().join("plain.bin")).unwrap();
    t.seed_scratch();
    let err = t.restore_refused("--to-time", &rfc3339(ts[0].time), 1);
    assert!(
        err.contains("cannot replay") && err.contains("emptycapped") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(t.restored_ids(), vec![-1], "nothing was dropped or written");
}

#[test]
fn an_unreachable_optional_sink_is_left_out_and_a_quorum_short_of_sinks_stops() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    t.add_sink(
        "gone",
        "kind = \"local\"\npath = \"unplugged/disk\"\noptional = true",
    );
    t.follow();
    std::thread::sleep(Duration::from_millis(1500));
    t.backup_to("bk");
    let ts = t.insert(&[1]);
    t.wait_archived(ts[0]);
    assert!(t.log().contains("sink `gone` left out"), "{}", t.log());
    t.signal(libc::SIGTERM);
    // `oplog status` of both sinks lists bk's archive and fails on gone.
    let out = t.run(&["--json", "oplog", "status"]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["sink"], "bk", "{listed}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("sink `gone`"));
    t.restore_ok("--to-time", &rfc3339(ts[0].time));
    assert_eq!(t.restored_ids(), vec![1]);
    // A quorum of both: the follower cannot archive, and says so.
    t.edit_config(|s| {
        s.replace("optional = true", "").replace(
            "sinks = [\"bk\", \"gone\"]",
            "sinks = [\"bk\", \"gone\"]\nquorum = 2",
        )
    });
    let out = t.run(&["oplog", "follow"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("too few sinks") && err.contains("gone"), "{err}");
}

impl Pitr {
    fn backup_to(&self, sink: &str) {
        self.ok(&["backup", "app", "--sink", sink]);
    }
}

/// Writes whose order matters only through a unique secondary index (a
/// delete frees a key, an insert of another document takes it) replay in
/// oplog order: writes to different documents are regrouped by kind only
/// in collections whose one unique index is `_id`'s.
#[test]
fn a_key_freed_and_taken_again_under_a_unique_index_replays_in_order() {
    let Some(mut t) = setup(1_000_000, "stop") else {
        return;
    };
    let users = t.client.database("app").collection::<Document>("users");
    t.rt.block_on(async {
        let unique = mongodb::options::IndexOptions::builder().unique(true).build();
        users
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(doc! { "email": 1 })
                    .options(unique)
                    .build(),
            )
            .await
            .unwrap();
        users
            .insert_one(doc! { "_id": 0, "email": "a@example.org" })
            .await
            .unwrap();
    });
    t.follow_and_backup();
    let last = t.rt.block_on(async {
        users
            .update_one(doc! { "_id": 0 }, doc! { "$set": { "n": 1 } })
            .await
            .unwrap();
        users.delete_one(doc! { "_id": 0 }).await.unwrap();
        users
            .insert_one(doc! { "_id": 1, "email": "a@example.org" })
            .await
            .unwrap();
        t.ts_of(1).await
    });
    t.wait_archived(last);
    let out = t.restore_ok("--to-time", &rfc3339(last.time));
    assert_eq!(t.restored_ids(), vec![1]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("regrouped"), "{text}");
}

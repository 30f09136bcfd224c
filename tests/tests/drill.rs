//! Proving the restore: `coffer check`, the checks after `coffer restore`,
//! `coffer drill` (scratch targets, checks, RTO/RPO, evidence on the sink)
//! and `coffer drills`, against a real HTTP server process and the real
//! MongoDB-compatible server.

use std::fs;
use std::path::Path;

use coffer_e2e::mongo_server::MongoServer;
use coffer_e2e::{HttpService, coffer, json_ok, keygen};
use mongodb::bson::{DateTime, Document, doc};
use serde_json::Value;

/// A service directory (a config file and a `.env`), and a config whose job
/// `main` backs them up to sink `bk` with these check tables.
fn setup(p: &Path, checks: &str) -> std::path::PathBuf {
    fs::create_dir_all(p.join("svc/conf")).unwrap();
    fs::write(p.join("svc/conf/app.yaml"), "port: 8443\n").unwrap();
    fs::write(p.join("svc/.env"), "DB_PASSWORD=drill-secret-77\nOTHER=1\n").unwrap();
    let _ = fs::remove_file(p.join("key.txt"));
    let (key, rec) = keygen(p, "key.txt");
    fs::write(
        p.join("coffer.toml"),
        format!(
            "recipients = [\"{rec}\"]\n[source.conf]\nkind = \"file\"\npath = \"svc/conf\"\n\
             [source.secrets]\nkind = \"env\"\npath = \"svc/.env\"\nkeys = [\"DB_PASSWORD\"]\n\
             [sink.bk]\nkind = \"local\"\npath = \"bk\"\ncreate = true\n\
             [job.main]\nsources = [\"conf\", \"secrets\"]\nsinks = [\"bk\"]\n{checks}\n"
        ),
    )
    .unwrap();
    key
}

fn http_check(port: u16, path: &str, timeout: u32) -> String {
    format!(
        "[[job.main.checks]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}{path}\"\ntimeout = {timeout}\ninterval = 1\n"
    )
}

fn prometheus_check(port: u16, path: &str) -> String {
    format!(
        "[[job.main.checks]]\nkind = \"prometheus\"\nurl = \"http://127.0.0.1:{port}{path}\"\n\
         series = [\"issuer_directory_changes_total\"]\nincreasing = true\nwindow = 4\ninterval = 1\n"
    )
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_runs_http_and_prometheus_checks_including_slow_and_failing_ones() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let service = HttpService::start(p, 1);
    let port = service.port;
    // Healthy after one 503, a slow endpoint within its timeout, a series
    // that grows between scrapes.
    setup(
        p,
        &format!(
            "{}{}{}",
            http_check(port, "/live", 10),
            http_check(port, "/slow", 10),
            prometheus_check(port, "/metrics")
        ),
    );
    let v = json_ok(&coffer(p).args(["--json", "check"]).output().unwrap());
    assert_eq!(v["passed"], true, "{v}");
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3);
    assert!(checks[0]["details"]["attempts"].as_u64().unwrap() >= 2, "{v}");
    assert!(
        checks[1]["seconds"].as_f64().unwrap() >= 2.9,
        "the slow one waited: {v}"
    );
    assert!(
        checks[2]["figure"].as_str().unwrap().starts_with("increasing"),
        "{v}"
    );

    // A failing endpoint, a series that never grows: exit 6, each with a hint.
    setup(
        p,
        &format!(
            "{}{}",
            http_check(port, "/down", 2),
            prometheus_check(port, "/metrics-flat")
        ),
    );
    let out = coffer(p).arg("check").output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(6), "{t}");
    assert!(t.contains("FAILED http") && t.contains("500, not 200"), "{t}");
    assert!(
        t.contains("FAILED prometheus") && t.contains("not increasing"),
        "{t}"
    );
    assert!(t.contains("hint:"), "{t}");
    assert!(t.contains("2 of 2 checks failed"), "{t}");
}

#[test]
fn restore_runs_the_jobs_checks_and_fails_with_6_when_one_fails() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let service = HttpService::start(p, 0);
    let key = setup(p, &http_check(service.port, "/down", 2));
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    let out = coffer(p)
        .args(["--json", "restore", "latest", "-i"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["checks"][0]["passed"], false, "{v}");
    assert!(
        v["sources"].as_array().unwrap().len() == 2,
        "the restore itself was done: {v}"
    );
    // --no-checks skips them.
    let out = coffer(p)
        .args(["restore", "latest", "--no-checks", "-i"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_drill_restores_into_scratch_runs_checks_and_keeps_the_evidence() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let service = HttpService::start(p, 0);
    let port = service.port;
    let key = setup(
        p,
        &format!(
            "{}{}",
            http_check(port, "/live", 5),
            prometheus_check(port, "/metrics")
        ),
    );
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    // The live files change after the backup; a drill must not touch them.
    fs::write(p.join("svc/conf/app.yaml"), "port: 9443\n").unwrap();

    let out = coffer(p)
        .args(["--json", "drill", "-i"])
        .arg(&key)
        .args(["--report", "reports"])
        .output()
        .unwrap();
    let v = json_ok(&out);
    assert_no_secret(&text(&out));
    assert_eq!(v["passed"], true, "{v}");
    assert!(v["snapshot"].as_str().unwrap().len() > 10);
    assert!(v["rto_seconds"].as_f64().unwrap() > 0.0);
    assert!(v["rpo_seconds"].as_f64().unwrap() >= 0.0);
    let kinds: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["restore", "http", "prometheus"], "{v}");
    assert_eq!(
        fs::read_to_string(p.join("svc/conf/app.yaml")).unwrap(),
        "port: 9443\n",
        "live files untouched"
    );
    let scratch = v["scratch"]["dir"].as_str().unwrap();
    assert!(!Path::new(scratch).exists(), "scratch removed: {scratch}");
    // The evidence: on the sink and in --report.
    let drills: Vec<String> = fs::read_dir(p.join("bk/drills"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(drills.len(), 2, "{drills:?}");
    let md = drills.iter().find(|n| n.ends_with(".md")).unwrap();
    let md = fs::read_to_string(p.join("bk/drills").join(md)).unwrap();
    assert!(
        md.contains("PASSED") && md.contains("| RTO |") && md.contains("prometheus"),
        "{md}"
    );
    assert_no_secret(&md);
    assert_eq!(fs::read_dir(p.join("reports")).unwrap().count(), 2);

    // A drill whose check fails: exit 6, its evidence kept too.
    let toml = fs::read_to_string(p.join("coffer.toml")).unwrap();
    fs::write(p.join("coffer.toml"), toml.replace("/live\"", "/down\"")).unwrap();
    let out = coffer(p)
        .args(["drill", "latest", "--keep", "-i"])
        .arg(&key)
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(6), "{t}");
    assert!(t.contains("FAILED") && t.contains("scratch targets kept"), "{t}");
    let kept = t
        .lines()
        .find_map(|l| l.trim().strip_prefix("scratch targets kept: "))
        .unwrap();
    assert_eq!(
        fs::read_to_string(Path::new(kept).join("restore/conf/app.yaml")).unwrap(),
        "port: 8443\n"
    );
    assert!(
        fs::read_to_string(Path::new(kept).join("restore/secrets/.env"))
            .unwrap()
            .contains("DB_PASSWORD=")
    );
    fs::remove_dir_all(kept).unwrap();

    let v = json_ok(&coffer(p).args(["--json", "drills"]).output().unwrap());
    let list = v[0]["drills"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{v}");
    assert_eq!(
        (list[0]["passed"].as_bool(), list[1]["passed"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(list[1]["failed_checks"], serde_json::json!(["http"]));
    assert_eq!(v[0]["last_passed"]["drill"], list[0]["drill"]);
    // The history never counts as snapshots.
    let v = json_ok(
        &coffer(p)
            .args(["--json", "list", "--sink", "bk"])
            .output()
            .unwrap(),
    );
    assert_eq!(v[0]["snapshots"].as_array().unwrap().len(), 1, "{v}");
    assert!(v[0]["incomplete"].as_array().is_none_or(Vec::is_empty), "{v}");
}

fn assert_no_secret(t: &str) {
    assert!(!t.contains("drill-secret-77"), "a secret value was printed: {t}");
}

#[test]
fn a_mongo_drill_restores_into_scratch_databases_never_the_source() {
    let Some(server) = MongoServer::start() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async { mongodb::Client::with_uri_str(server.uri("")).await.unwrap() });
    let db = client.database("issuer");
    rt.block_on(async {
        db.collection::<Document>("entries")
            .insert_many((0..50).map(|i| doc! { "_id": i, "name": format!("e{i}") }))
            .await
            .unwrap();
        let t0 = DateTime::from_millis(DateTime::now().timestamp_millis() - 60_000);
        db.collection::<Document>("audit")
            .insert_many(
                (0..3).map(
                    |i| doc! { "_id": i, "at": DateTime::from_millis(t0.timestamp_millis() + i * 1000) },
                ),
            )
            .await
            .unwrap();
    });
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, rec) = keygen(p, "key.txt");
    fs::write(
        p.join("coffer.toml"),
        format!(
            "recipients = [\"{rec}\"]\n[source.db]\nkind = \"mongo\"\nuri = \"{}\"\n\
             [sink.bk]\nkind = \"local\"\npath = \"bk\"\ncreate = true\n\
             [job.main]\nsources = [\"db\"]\nsinks = [\"bk\"]\n\
             [[job.main.checks]]\nkind = \"audit\"\ncollection = \"issuer.audit\"\ntime-field = \"at\"\nexport = \"audit-gap.jsonl\"\n",
            server.uri("issuer")
        ),
    )
    .unwrap();
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    // After the snapshot: the service writes on (two audit entries, one
    // more document) — the window the audit check measures.
    rt.block_on(async {
        db.collection::<Document>("entries")
            .insert_one(doc! { "_id": 1000 })
            .await
            .unwrap();
        db.collection::<Document>("audit")
            .insert_many((10..12).map(|i| doc! { "_id": i, "at": DateTime::now() }))
            .await
            .unwrap();
    });

    // Never into the source database.
    let out = coffer(p)
        .args(["drill", "--scratch-suffix", "", "-i"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("never writes into a source database"),
        "{}",
        text(&out)
    );
    // A scratch name over MongoDB's 63 bytes names the limit.
    let long = format!("--scratch-suffix=-{}", "x".repeat(60));
    let out = coffer(p).args(["drill", &long, "-i"]).arg(&key).output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("MongoDB allows at most 63"), "{}", text(&out));

    let out = coffer(p)
        .args(["--json", "drill", "--keep", "-i"])
        .arg(&key)
        .output()
        .unwrap();
    let v = json_ok(&out);
    assert_eq!(v["passed"], true, "{v}");
    let scratch_db = v["scratch"]["databases"][0][1].as_str().unwrap().to_string();
    // The kept scratch directory (empty: the snapshot has no files) is
    // the test's to remove.
    fs::remove_dir_all(v["scratch"]["dir"].as_str().unwrap()).unwrap();
    assert!(scratch_db.starts_with("issuer-drill-"), "{v}");
    let counts = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "mongo-counts")
        .unwrap();
    assert_eq!(counts["passed"], true, "{v}");
    assert!(
        counts["figure"].as_str().unwrap().contains("53 documents"),
        "{counts}"
    );
    let audit = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "audit")
        .unwrap();
    assert_eq!(audit["details"]["entries_after_snapshot"], 2, "{audit}");
    assert!(v["audit_gap_seconds"].as_f64().unwrap() > 0.0, "{v}");
    let exported = fs::read_to_string(p.join("audit-gap.jsonl")).unwrap();
    assert_eq!(exported.lines().count(), 2, "{exported}");
    rt.block_on(async {
        // The source kept what was written after the snapshot; the scratch
        // copy holds the snapshot.
        assert_eq!(
            db.collection::<Document>("entries")
                .count_documents(doc! {})
                .await
                .unwrap(),
            51
        );
        let scratch = client.database(&scratch_db);
        assert_eq!(
            scratch
                .collection::<Document>("entries")
                .count_documents(doc! {})
                .await
                .unwrap(),
            50
        );
    });

    // Without --keep the scratch databases are dropped again. A second
    // drill of the same snapshot gets a scratch name of its own and never
    // touches the copy the first one kept.
    let v = json_ok(
        &coffer(p)
            .args(["--json", "drill", "-i"])
            .arg(&key)
            .output()
            .unwrap(),
    );
    assert_eq!(v["scratch"]["cleanup_error"], Value::Null, "{v}");
    assert_eq!(v["passed"], true, "{v}");
    let second_db = v["scratch"]["databases"][0][1].as_str().unwrap().to_string();
    assert_ne!(
        second_db, scratch_db,
        "two drills of one snapshot share a scratch name"
    );
    let names = rt.block_on(async { client.list_database_names().await.unwrap() });
    assert!(!names.contains(&second_db), "{names:?}");
    assert!(
        names.contains(&scratch_db),
        "the kept copy was dropped by another drill: {names:?}"
    );
    assert!(names.iter().any(|n| n == "issuer"), "{names:?}");

    // Another team's database whose name is the job's plus a suffix is
    // never taken for a scratch copy: the drill refuses before writing,
    // and it is neither replaced nor dropped.
    rt.block_on(async {
        client.database(&scratch_db).drop().await.unwrap();
        client
            .database("issuer-staging")
            .collection::<Document>("entries")
            .insert_many((0..7).map(|i| doc! { "_id": i, "team": "other" }))
            .await
            .unwrap();
    });
    for json in [false, true] {
        let mut c = coffer(p);
        if json {
            c.arg("--json");
        }
        let out = c
            .args(["drill", "--scratch-suffix=-staging", "-i"])
            .arg(&key)
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            text(&out).contains("issuer-staging` exists already"),
            "{}",
            text(&out)
        );
        let left = rt.block_on(async {
            let coll = client
                .database("issuer-staging")
                .collection::<Document>("entries");
            (
                coll.count_documents(doc! {}).await.unwrap(),
                coll.count_documents(doc! { "team": "other" }).await.unwrap(),
            )
        });
        assert_eq!(left, (7, 7), "another team's database was touched");
    }
    let live = rt.block_on(async {
        db.collection::<Document>("entries")
            .count_documents(doc! {})
            .await
            .unwrap()
    });
    assert_eq!(live, 51, "the source database is untouched");

    // A live service: `coffer check` with minimums.
    let toml = fs::read_to_string(p.join("coffer.toml")).unwrap();
    let with_minimum = |n: u32| {
        format!(
            "{toml}[[job.main.checks]]\nkind = \"mongo-counts\"\nuri = \"{}\"\nminimums = {{ \"issuer.entries\" = {n} }}\n",
            server.uri("")
        )
    };
    fs::write(p.join("coffer.toml"), with_minimum(50)).unwrap();
    let uri = server.uri("");
    let v = json_ok(
        &coffer(p)
            .args(["--json", "check", "--mongo-uri", &uri])
            .output()
            .unwrap(),
    );
    let counts = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "mongo-counts")
        .unwrap();
    assert!(
        counts["figure"]
            .as_str()
            .unwrap()
            .contains("at least its minimum"),
        "{v}"
    );
    fs::write(p.join("coffer.toml"), with_minimum(1000)).unwrap();
    let out = coffer(p).args(["check", "--mongo-uri", &uri]).output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(
        text(&out).contains("issuer.entries: 51, minimum 1000"),
        "{}",
        text(&out)
    );
}

#[test]
fn runs_leave_an_audit_log_and_textfile_metrics() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let key = setup(p, "");
    let toml = fs::read_to_string(p.join("coffer.toml")).unwrap();
    fs::write(
        p.join("coffer.toml"),
        format!("metrics-file = \"metrics/coffer.prom\"\naudit-log = \"log/audit.jsonl\"\n{toml}")
            .replace("[job.main]\n", "[job.main]\nretention = { keep-last = 1 }\n"),
    )
    .unwrap();
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    json_ok(
        &coffer(p)
            .args(["--json", "restore", "latest", "--target", "out", "-i"])
            .arg(&key)
            .output()
            .unwrap(),
    );
    json_ok(&coffer(p).args(["--json", "prune"]).output().unwrap());
    json_ok(
        &coffer(p)
            .args(["--json", "drill", "-i"])
            .arg(&key)
            .output()
            .unwrap(),
    );
    json_ok(
        &coffer(p)
            .args(["--json", "verify", "--sample", "100%"])
            .output()
            .unwrap(),
    );
    // A failed run is logged too; `list` (a read of the index only) is not.
    let out = coffer(p)
        .args(["restore", "no-such-snapshot", "-i"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    json_ok(&coffer(p).args(["--json", "list"]).output().unwrap());

    let log = fs::read_to_string(p.join("log/audit.jsonl")).unwrap();
    assert!(!log.contains("drill-secret-77"), "{log}");
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let commands: Vec<&str> = lines.iter().map(|l| l["command"].as_str().unwrap()).collect();
    assert_eq!(
        commands,
        [
            "backup", "backup", "restore", "prune", "drill", "verify", "restore"
        ],
        "{log}"
    );
    for l in &lines {
        for field in ["time", "user", "uid", "host", "result", "exit", "seconds"] {
            assert!(l.get(field).is_some(), "{field} missing: {l}");
        }
    }
    assert_eq!(lines[0]["job"], "main");
    assert_eq!(lines[0]["result"], "ok");
    assert!(
        lines[0]["snapshot"].is_string() && lines[0]["bytes_in"].is_u64(),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[2]["target"].as_str().map(|t| t.ends_with("out")),
        Some(true),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3]["sinks"][0]["deleted"], 1, "{}", lines[3]);
    assert_eq!(lines[4]["passed"], true, "{}", lines[4]);
    assert_eq!(
        (lines[6]["result"].as_str(), lines[6]["exit"].as_u64()),
        (Some("failed"), Some(1)),
        "{}",
        lines[6]
    );
    assert!(
        lines[6]["error"].as_str().unwrap().contains("no-such-snapshot"),
        "{}",
        lines[6]
    );
    let mode = fs::metadata(p.join("log/audit.jsonl"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let metrics = fs::read_to_string(p.join("metrics/coffer.prom")).unwrap();
    for expected in [
        "# TYPE coffer_backup_last_success_timestamp_seconds gauge",
        "coffer_backup_last_success_timestamp_seconds{job=\"main\",sink=\"bk\"} ",
        "coffer_backup_last_run_success{job=\"main\"} 1\n",
        "coffer_backup_last_duration_seconds{job=\"main\"} ",
        "coffer_backup_last_bytes_in{job=\"main\"} ",
        "coffer_backup_last_bytes_out{job=\"main\",sink=\"bk\"} ",
        "coffer_snapshots{sink=\"bk\"} 1\n",
        "coffer_drill_last_passed{job=\"main\"} 1\n",
        "coffer_drill_last_success_timestamp_seconds{job=\"main\"} ",
        "coffer_verify_coverage_ratio{sink=\"bk\"} 1\n",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }
    let left: Vec<_> = fs::read_dir(p.join("metrics")).unwrap().collect();
    assert_eq!(left.len(), 1, "only the metrics file, no temp file");

    // A failed backup says so in the metrics, keeping the last success.
    fs::write(p.join("svc/.env"), "OTHER=1\n").unwrap();
    let out = coffer(p).arg("backup").output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let metrics = fs::read_to_string(p.join("metrics/coffer.prom")).unwrap();
    assert!(
        metrics.contains("coffer_backup_last_run_success{job=\"main\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("coffer_backup_last_success_timestamp_seconds{job=\"main\",sink=\"bk\"} "),
        "{metrics}"
    );
    // A symlink planted at the log's path is never written through.
    fs::remove_file(p.join("log/audit.jsonl")).unwrap();
    fs::write(p.join("elsewhere"), "untouched\n").unwrap();
    std::os::unix::fs::symlink(p.join("elsewhere"), p.join("log/audit.jsonl")).unwrap();
    let out = coffer(p).args(["--json", "prune"]).output().unwrap();
    json_ok(&out);
    assert_eq!(fs::read_to_string(p.join("elsewhere")).unwrap(), "untouched\n");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("cannot append to the audit log") && said.contains("symlink"),
        "{said}"
    );
}

/// `drill latest --job J` drills J's newest snapshot, not the sink's newest
/// of any job.
#[test]
fn drill_latest_with_a_job_takes_that_jobs_newest_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let key = setup(p, "[job.other]\nsources = [\"conf\"]\nsinks = [\"bk\"]\n");
    let main = json_ok(&coffer(p).args(["--json", "backup", "main"]).output().unwrap());
    // Ids sort by their second first: the other job's is the sink's newest.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let other = json_ok(&coffer(p).args(["--json", "backup", "other"]).output().unwrap());
    let main_id = main["id"].as_str().unwrap().to_string();
    assert_ne!(main_id, other["id"].as_str().unwrap());
    let v = json_ok(
        &coffer(p)
            .args(["--json", "drill", "latest", "--job", "main", "-i"])
            .arg(&key)
            .output()
            .unwrap(),
    );
    assert_eq!(v["snapshot"].as_str(), Some(main_id.as_str()), "{v}");
    let out = coffer(p)
        .args(["drill", "latest", "--job", "nosuchjob", "-i"])
        .arg(&key)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("no snapshot of job `nosuchjob`"),
        "{}",
        text(&out)
    );
}

/// `drill --only` rehearses part of a snapshot: the report names what it
/// left out, and a partial pass is never the last passed drill; an
/// `--only` the snapshot has no source for is a usage error.
#[test]
fn a_partial_drill_names_what_it_left_out_and_is_never_the_last_passed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let key = setup(p, "");
    let config = fs::read_to_string(p.join("coffer.toml")).unwrap();
    fs::write(
        p.join("coffer.toml"),
        format!("metrics-file = \"metrics.prom\"\n{config}"),
    )
    .unwrap();
    json_ok(&coffer(p).args(["--json", "backup", "main"]).output().unwrap());
    let drill = |only: &[&str]| {
        let mut cmd = coffer(p);
        cmd.args(["--json", "drill", "latest", "-i"]).arg(&key);
        for o in only {
            cmd.args(["--only", o]);
        }
        cmd.output().unwrap()
    };
    let v = json_ok(&drill(&["file"]));
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["left_out"], serde_json::json!(["secrets"]), "{v}");
    // Only the file source was restored: one restore report, the checks
    // did not look at the secret.
    assert!(
        v["checks"][0]["figure"].as_str().unwrap().contains("conf:"),
        "{v}"
    );
    assert!(
        !v["checks"][0]["figure"].as_str().unwrap().contains("secrets:"),
        "{v}"
    );
    let md: Vec<_> = fs::read_dir(p.join("bk/drills"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    assert_eq!(md.len(), 1);
    assert!(
        fs::read_to_string(&md[0])
            .unwrap()
            .contains("PASSED (partial: secrets not drilled)"),
        "{}",
        fs::read_to_string(&md[0]).unwrap()
    );
    let history = json_ok(&coffer(p).args(["--json", "drills"]).output().unwrap());
    assert!(history[0]["last_passed"].is_null(), "{history}");
    let out = coffer(p).args(["drills"]).output().unwrap();
    assert!(
        text(&out).contains("passed (partial: secrets not drilled)")
            && text(&out).contains("no drill of a whole snapshot has passed"),
        "{}",
        text(&out)
    );
    // Its metrics are not the job's last drill.
    let metrics = fs::read_to_string(p.join("metrics.prom")).unwrap();
    assert!(metrics.contains("coffer_backup_last_success"), "{metrics}");
    assert!(!metrics.contains("coffer_drill_last_passed"), "{metrics}");
    // Both sources (by name and by kind): a whole drill, and the last passed.
    let v = json_ok(&drill(&["conf", "env"]));
    assert!(v.get("left_out").is_none(), "{v}");
    let history = json_ok(&coffer(p).args(["--json", "drills"]).output().unwrap());
    assert_eq!(history[0]["last_passed"]["drill"], v["drill"], "{history}");
    let metrics = fs::read_to_string(p.join("metrics.prom")).unwrap();
    assert!(
        metrics.contains("coffer_drill_last_passed{job=\"main\"} 1"),
        "{metrics}"
    );
    // A source the snapshot lacks: exit 2, naming the ones it has.
    let out = drill(&["mongo"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--only mongo") && text(&out).contains("conf, secrets"),
        "{}",
        text(&out)
    );
}

/// A health or metrics endpoint that answers a huge body is read up to
/// `max-body` (1 MiB by default), never whole into memory, and the result
/// says so.
#[test]
fn huge_response_bodies_are_read_up_to_a_bound() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let service = HttpService::start(p, 0);
    let port = service.port;
    setup(
        p,
        &format!(
            "[[job.main.checks]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/huge\"\ncontains = \"never\"\ntimeout = 2\ninterval = 1\n\
             [[job.main.checks]]\nkind = \"prometheus\"\nurl = \"http://127.0.0.1:{port}/metrics-huge\"\n\
             series = [\"issuer_directory_changes_total\"]\nwindow = 2\ninterval = 1\n"
        ),
    );
    let out = coffer(p).arg("check").output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(6), "{t}");
    assert!(
        t.contains("without the expected text in the first 1.0 MiB"),
        "{t}"
    );
    assert!(t.contains("larger than 1.0 MiB"), "{t}");
    // SAFETY: getrusage fills the struct it is given.
    let peak_kib = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss
    };
    assert!(
        peak_kib < 256 * 1024,
        "a child of this test peaked at {peak_kib} KiB"
    );
}

/// SIGTERM (or SIGHUP) while a drill's checks run: the scratch databases
/// are dropped all the same, and the drill says so.
#[test]
fn a_drill_ended_by_a_signal_removes_its_scratch_databases() {
    let Some(server) = MongoServer::start() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async { mongodb::Client::with_uri_str(server.uri("")).await.unwrap() });
    rt.block_on(async {
        client
            .database("issuer")
            .collection::<Document>("entries")
            .insert_many((0..20).map(|i| doc! { "_id": i }))
            .await
            .unwrap();
    });
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let service = HttpService::start(p, 0);
    let (key, rec) = keygen(p, "key.txt");
    fs::write(
        p.join("coffer.toml"),
        format!(
            "recipients = [\"{rec}\"]\n[source.db]\nkind = \"mongo\"\nuri = \"{}\"\n\
             [sink.bk]\nkind = \"local\"\npath = \"bk\"\ncreate = true\n\
             [job.main]\nsources = [\"db\"]\nsinks = [\"bk\"]\n{}",
            server.uri("issuer"),
            http_check(service.port, "/slow", 30)
        ),
    )
    .unwrap();
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        let child = std::process::Command::new(coffer_e2e::coffer_bin())
            .args(["drill", "-i"])
            .arg(&key)
            .current_dir(p)
            .env_remove("COFFER_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let scratch = |c: &mongodb::Client| {
            rt.block_on(async { c.list_database_names().await.unwrap() })
                .into_iter()
                .filter(|n| n.starts_with("issuer-drill-"))
                .collect::<Vec<_>>()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while scratch(&client).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "no scratch database appeared"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The restore is committed; the slow check runs for 3 s.
        std::thread::sleep(std::time::Duration::from_millis(800));
        // SAFETY: sends a signal to the child we started.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{said}");
        assert!(said.contains("scratch targets were removed"), "{said}");
        assert_eq!(scratch(&client), Vec::<String>::new(), "signal {signal}: {said}");
    }
}

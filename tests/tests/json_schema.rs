//! Every command's `--json` output validates against its checked-in schema
//! in `docs/json-schema/` (generated from the outcome types; the `coffer`
//! crate's `schema_tests` keeps the files in step with the types). One
//! service, one config, every command that prints JSON; import-runbook is
//! checked in `import_runbook.rs`.

use std::fs;
use std::path::Path;

use coffer_e2e::{HttpService, Tmpfs, assert_schema, coffer, json_as};
use serde_json::Value;

fn config(p: &Path, rec: &str, port: u16) {
    fs::create_dir_all(p.join("svc/conf")).unwrap();
    fs::write(p.join("svc/conf/app.yaml"), "port: 8443\n").unwrap();
    fs::write(p.join("svc/.env"), "DB_PASSWORD=schema-secret-1\nOTHER=1\n").unwrap();
    fs::write(
        p.join("coffer.toml"),
        format!(
            "recipients = [\"{rec}\"]\n\
             [source.conf]\nkind = \"file\"\npath = \"svc/conf\"\n\
             [source.secrets]\nkind = \"env\"\npath = \"svc/.env\"\nkeys = [\"DB_PASSWORD\"]\n\
             [sink.bk]\nkind = \"local\"\npath = \"bk\"\ncreate = true\n\
             [sink.far]\nkind = \"local\"\npath = \"far\"\ncreate = true\n\
             [job.main]\nsources = [\"conf\", \"secrets\"]\nsinks = [\"bk\"]\n\
             retention = {{ keep-last = 5 }}\n\
             before = [[\"true\"]]\nafter = [[\"true\"]]\n\
             health = {{ url = \"http://127.0.0.1:{port}/live\", timeout = 10, interval = 1 }}\n\
             [[job.main.checks]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/live\"\ntimeout = 5\ninterval = 1\n"
        ),
    )
    .unwrap();
}

fn run(p: &Path, args: &[&str]) -> std::process::Output {
    coffer(p).arg("--json").args(args).output().unwrap()
}

#[test]
fn every_json_output_matches_its_schema() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let service = HttpService::start(p, 0);

    let keygen = json_as("keygen", &run(p, &["keygen", "-o", "key.txt"]));
    let rec = keygen["recipient"].as_str().unwrap().to_string();
    json_as(
        "keygen-signing",
        &run(p, &["keygen", "--signing", "-o", "sign.key"]),
    );
    json_as("init", &run(p, &["init", "-o", "example.toml"]));
    json_as("sink-init", &run(p, &["sink", "init", "spare"]));
    config(p, &rec, service.port);

    let first = json_as("backup", &run(p, &["backup", "--signing-key", "sign.key"]));
    assert_eq!(first["hooks"].as_array().map(Vec::len), Some(2), "{first}");
    assert_eq!(first["health"]["ok"], true, "{first}");
    let v = json_as("backup", &run(p, &["backup", "--keep-forever", "--prune"]));
    assert!(v["prune"].is_array() && v["pinned_on"].is_array(), "{v}");
    let id = first["id"].as_str().unwrap();

    let list = json_as("list", &run(p, &["list"]));
    assert_eq!(list[0]["snapshots"].as_array().unwrap().len(), 2, "{list}");
    json_as("show", &run(p, &["show", id]));
    let show = json_as("show", &run(p, &["show", id, "-i", "key.txt"]));
    assert!(show["manifest"].is_object(), "{show}");
    json_as("verify", &run(p, &["verify", "--all"]));
    json_as(
        "verify",
        &run(p, &["verify", "--deep", "-i", "key.txt", "--sink", "bk"]),
    );
    json_as("verify", &run(p, &["verify", "--sample", "50%", "--sink", "bk"]));

    json_as("restore", &run(p, &["restore", id, "-i", "key.txt", "--dry-run"]));
    json_as(
        "restore",
        &run(p, &["restore", id, "-i", "key.txt", "--target", "out"]),
    );
    let restored = json_as("restore", &run(p, &["restore", "latest", "-i", "key.txt"]));
    assert_eq!(restored["checks"][0]["passed"], true, "{restored}");
    json_as("check", &run(p, &["check"]));
    json_as("keycheck", &run(p, &["keycheck", "-i", "key.txt"]));

    json_as("pin", &run(p, &["pin", id, "--reason", "audit"]));
    json_as("pin", &run(p, &["unpin", id]));
    json_as("prune", &run(p, &["prune", "--keep-last", "1", "--dry-run"]));
    json_as("prune", &run(p, &["prune"]));
    json_as("unlock", &run(p, &["unlock"]));
    json_as(
        "transfer",
        &run(p, &["copy", "--from", "bk", "--to", "far", "latest"]),
    );

    let drill = json_as("drill", &run(p, &["drill", "-i", "key.txt"]));
    assert_eq!(drill["passed"], true, "{drill}");
    json_as("drills", &run(p, &["drills"]));

    if let Some(m) = Tmpfs::new("16m") {
        let medium = m.path().to_str().unwrap().to_string();
        json_as(
            "media-init",
            &run(p, &["media", "init", &medium, "--label", "OFFSITE-A"]),
        );
        json_as(
            "transfer",
            &run(p, &["export", "--from", "bk", "--to", &m.url("")]),
        );
        json_as("media-status", &run(p, &["media", "status", &medium]));
        json_as(
            "transfer",
            &run(p, &["import", "--from", &m.url(""), "--to", "spare"]),
        );
    }

    // A failure: the error object on stderr.
    let out = run(p, &["show", "20991231T000000Z-00000000"]);
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_schema("error", &err);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("20991231T000000Z"),
        "{err}"
    );
}

#[test]
fn coffer_schema_prints_the_checked_in_schemas() {
    let d = tempfile::tempdir().unwrap();
    let out = coffer(d.path()).arg("schema").output().unwrap();
    assert!(out.status.success());
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/json-schema");
    let mut files: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_string()
        })
        .collect();
    files.sort();
    let mut listed = names.clone();
    listed.sort();
    assert_eq!(listed, files, "`coffer schema` lists one name per file");
    for name in ["backup", "prune", "error"] {
        let out = coffer(d.path()).args(["schema", name]).output().unwrap();
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        let file: Value =
            serde_json::from_str(&fs::read_to_string(dir.join(format!("{name}.json"))).unwrap()).unwrap();
        assert_eq!(printed, file, "{name}");
    }
    let out = coffer(d.path()).args(["schema", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`coffer schema` lists the names"));
}

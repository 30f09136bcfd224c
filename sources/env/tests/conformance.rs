//! The `env` source: the conformance kit, then capture and merge-restore
//! against real temp files.

use std::fs;
use std::io::{Cursor, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;

use coffer_core::testkit::source_suite;
use coffer_core::{
    Area, CaptureContext, EntryBody, EntrySender, ErrorKind, PathClaims, Registry, RestoreEntry,
    RestoreEntryKind, RestoreOptions, RestoreReport, Source, SourceFactory, SourceReport, toml,
};
use coffer_source_env::{EnvSource, KIND, register};

const SECRET: &str = "s3cr3t-value";

fn factory() -> Arc<dyn SourceFactory> {
    let mut reg = Registry::new();
    register(&mut reg);
    reg.source_factory(KIND).unwrap().clone()
}

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

/// The one captured entry: (path, mode, content), and the report.
async fn capture(source: &dyn Source) -> coffer_core::Result<((String, u32, Vec<u8>), SourceReport)> {
    let (tx, mut rx) = EntrySender::channel(4);
    let ctx = CaptureContext::new("test");
    let drain = async move {
        let mut out = Vec::new();
        while let Some(e) = rx.recv().await {
            assert_eq!(e.area, Area::Secrets);
            let EntryBody::File { size, mut reader } = e.body else {
                panic!("not a file")
            };
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            assert_eq!(data.len() as u64, size);
            out.push((e.path, e.mode, data));
        }
        out
    };
    let (report, mut entries) = tokio::join!(source.capture(&ctx, tx), drain);
    let report = report?;
    assert_eq!(entries.len(), 1);
    Ok((entries.remove(0), report))
}

fn opts(target: Option<&Path>, dry_run: bool) -> RestoreOptions {
    let mut o = RestoreOptions::default();
    o.target = target.map(Path::to_path_buf);
    o.dry_run = dry_run;
    o
}

async fn restore(
    source: &dyn Source,
    opts: &RestoreOptions,
    path: &str,
    data: &[u8],
    commit: bool,
) -> coffer_core::Result<RestoreReport> {
    let mut r = source.restore(opts).await?;
    let path = path.to_string();
    let data = data.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut reader = Cursor::new(&data[..]);
        r.entry(RestoreEntry {
            area: Area::Secrets,
            path: &path,
            mode: 0o600,
            mtime: 0,
            owner: None,
            kind: RestoreEntryKind::File {
                size: data.len() as u64,
            },
            reader: &mut reader,
        })?;
        r.finish(commit)
    })
    .await
    .unwrap()
}

fn actions(report: &RestoreReport) -> Vec<(String, String)> {
    report
        .actions
        .iter()
        .map(|a| (a.action.clone(), a.target.clone()))
        .collect()
}

const SAMPLE: &str = "# Issuer Directory\r\n\
export ISSUER_DIRECTORY_MONGO_URI=\"mongodb://u:p@h/db?a=b&c=d\"\r\n\
ISSUER_DIRECTORY_MONGO_DB='issuer' # inline note\n\
\n\
UNRELATED=keep me\n\
TOKEN=abc=def==\n\
ISSUER_DIRECTORY_MONGO_DB=second\n\
PEM=\"-----BEGIN KEY-----\n\
abc\n\
-----END KEY-----\"\n\
LAST=no-newline";

#[tokio::test]
async fn capture_selects_lines_verbatim() {
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join(".env");
    fs::write(&env, SAMPLE).unwrap();
    let source = EnvSource::new(
        "env",
        &env,
        keys(&["ISSUER_DIRECTORY_MONGO_*", "TOKEN", "PEM", "LAST"]),
    )
    .unwrap();
    let ((path, mode, data), report) = capture(&source).await.unwrap();
    assert_eq!(path, ".env");
    assert_eq!(mode, 0o600);
    assert_eq!(
        String::from_utf8(data).unwrap(),
        "export ISSUER_DIRECTORY_MONGO_URI=\"mongodb://u:p@h/db?a=b&c=d\"\r\n\
         TOKEN=abc=def==\n\
         ISSUER_DIRECTORY_MONGO_DB=second\n\
         PEM=\"-----BEGIN KEY-----\nabc\n-----END KEY-----\"\n\
         LAST=no-newline\n"
    );
    assert_eq!(
        report.details["keys"],
        serde_json::json!([
            "ISSUER_DIRECTORY_MONGO_URI",
            "TOKEN",
            "ISSUER_DIRECTORY_MONGO_DB",
            "PEM",
            "LAST"
        ])
    );
    assert_eq!(report.details["file"], env.to_str().unwrap());
    assert!(report.summary.starts_with("5 keys from "));
}

#[tokio::test]
async fn globs_select_only_matching_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join("app.env");
    fs::write(&env, "APP_A=1\nAPPX=2\nAPP_B=3\nOTHER=4\n").unwrap();
    let source = EnvSource::new("env", &env, keys(&["APP_?", "OTHER"])).unwrap();
    let ((path, _, data), _) = capture(&source).await.unwrap();
    assert_eq!(path, "app.env");
    assert_eq!(data, b"APP_A=1\nAPP_B=3\nOTHER=4\n");
}

#[tokio::test]
async fn missing_pattern_is_named_without_values() {
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join(".env");
    fs::write(&env, format!("PRESENT={SECRET}\n")).unwrap();
    let source = EnvSource::new("env", &env, keys(&["PRESENT", "MISSING_*", "GONE"])).unwrap();
    for err in [
        source.check().await.unwrap_err(),
        capture(&source).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let text = format!("{err} {err:?} {}", err.hint().unwrap_or(""));
        assert!(text.contains("`MISSING_*`") && text.contains("`GONE`"), "{text}");
        assert!(!text.contains("`PRESENT`"), "{text}");
        assert!(!text.contains(SECRET), "{text}");
    }
    let ok = EnvSource::new("env", &env, keys(&["PRESENT"])).unwrap();
    ok.check().await.unwrap();
}

#[tokio::test]
async fn merge_keeps_everything_else_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join(".env");
    fs::write(&env, "A=1\nB=2\nC=3\n").unwrap();
    let source = EnvSource::new("env", &env, keys(&["A", "B", "C"])).unwrap();
    let ((path, _, data), _) = capture(&source).await.unwrap();

    let existing = "# top comment\r\nA=1\n  # indented\nexport B=changed # why\nX=unrelated\n\nB=dup\nZ=z";
    fs::write(&env, existing).unwrap();
    fs::set_permissions(&env, fs::Permissions::from_mode(0o640)).unwrap();
    let report = restore(&source, &opts(None, false), &path, &data, true)
        .await
        .unwrap();
    assert_eq!(
        fs::read_to_string(&env).unwrap(),
        // The replaced `export B=…` line keeps its `export`.
        "# top comment\r\nA=1\n  # indented\nexport B=2\nX=unrelated\n\nB=2\nZ=z\nC=3\n"
    );
    assert_eq!(fs::metadata(&env).unwrap().mode() & 0o7777, 0o640);
    assert_eq!(
        actions(&report),
        [
            ("replace".to_string(), env.display().to_string()),
            ("keep-key".into(), "A".into()),
            ("change-key".into(), "B".into()),
            ("add-key".into(), "C".into()),
        ]
    );
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [".env"], "no temp file left");

    // Again: nothing to do, the file is not rewritten.
    let ino = fs::metadata(&env).unwrap().ino();
    let report = restore(&source, &opts(None, false), &path, &data, true)
        .await
        .unwrap();
    assert_eq!(actions(&report)[0].0, "unchanged");
    assert!(actions(&report)[1..].iter().all(|(a, _)| a == "keep-key"));
    assert_eq!(fs::metadata(&env).unwrap().ino(), ino);
}

#[tokio::test]
async fn new_file_is_created_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join(".env");
    fs::write(&env, "K=v\n").unwrap();
    fs::set_permissions(&env, fs::Permissions::from_mode(0o644)).unwrap();
    let source = EnvSource::new("env", &env, keys(&["K"])).unwrap();
    let ((path, _, data), _) = capture(&source).await.unwrap();
    let target = tmp.path().join("restore/deeper");
    let report = restore(&source, &opts(Some(&target), false), &path, &data, true)
        .await
        .unwrap();
    let dest = target.join(".env");
    assert_eq!(fs::read(&dest).unwrap(), b"K=v\n");
    assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(
        actions(&report)[0],
        ("create".to_string(), dest.display().to_string())
    );
    assert_eq!(actions(&report)[1], ("add-key".to_string(), "K".to_string()));
}

#[tokio::test]
async fn dry_run_and_abort_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join(".env");
    fs::write(&env, format!("A={SECRET}\nB=2\n")).unwrap();
    let source = EnvSource::new("env", &env, keys(&["A", "B"])).unwrap();
    let ((path, _, data), _) = capture(&source).await.unwrap();
    fs::write(&env, "B=3\n").unwrap();

    let report = restore(&source, &opts(None, true), &path, &data, false)
        .await
        .unwrap();
    assert_eq!(fs::read(&env).unwrap(), b"B=3\n");
    assert_eq!(
        actions(&report)[1..],
        [
            ("add-key".to_string(), "A".to_string()),
            ("change-key".into(), "B".into())
        ]
    );
    let target = tmp.path().join("t");
    restore(&source, &opts(Some(&target), true), &path, &data, false)
        .await
        .unwrap();
    assert!(!target.exists());

    // Aborted: nothing changes, no temp file, no created directory.
    restore(&source, &opts(None, false), &path, &data, false)
        .await
        .unwrap();
    restore(&source, &opts(Some(&target), false), &path, &data, false)
        .await
        .unwrap();
    assert_eq!(fs::read(&env).unwrap(), b"B=3\n");
    assert!(!target.exists());
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [".env"]);
}

#[tokio::test]
async fn symlink_destination_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("real"), "A=0\n").unwrap();
    let env = tmp.path().join(".env");
    symlink(tmp.path().join("real"), &env).unwrap();
    let source = EnvSource::new("env", &env, keys(&["A"])).unwrap();
    let err = restore(&source, &opts(None, false), ".env", b"A=1\n", true)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert_eq!(fs::read(tmp.path().join("real")).unwrap(), b"A=0\n");
}

#[tokio::test]
async fn forged_entries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let source = EnvSource::new("env", tmp.path().join(".env"), keys(&["A"])).unwrap();
    let target = tmp.path().join("t");
    for bad in ["../.env", "/etc/.env", "a/.env"] {
        let err = restore(&source, &opts(Some(&target), false), bad, b"A=1\n", true)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{bad}");
    }
    assert!(!target.exists());
}

#[tokio::test]
async fn suite() {
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join(".env");
    fs::write(
        &env,
        format!("# c\nexport DB_URI=\"{SECRET}\"\nDB_NAME=x\nOTHER=y\n"),
    )
    .unwrap();
    let table: toml::Table = toml::from_str("path = \".env\"\nkeys = [\"DB_*\"]").unwrap();
    let source = factory().from_config("secrets", table, tmp.path()).unwrap();
    let target = tmp.path().join("restore");
    let entries = source_suite(source.as_ref(), &target).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        fs::read_to_string(target.join(".env")).unwrap(),
        format!("export DB_URI=\"{SECRET}\"\nDB_NAME=x\n")
    );
}

#[tokio::test]
async fn secret_values_never_leak() {
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join(".env");
    fs::write(&env, format!("API_TOKEN={SECRET}\nexport DB_PASS='{SECRET}'\n")).unwrap();
    let spec = format!("{}#API_*,DB_PASS", env.display());
    let source = factory().from_spec("env", &spec).unwrap();
    let ((path, _, data), report) = capture(source.as_ref()).await.unwrap();
    assert!(
        String::from_utf8_lossy(&data).contains(SECRET),
        "the secret itself is captured"
    );

    fs::write(&env, "API_TOKEN=old\n").unwrap();
    let dry = restore(source.as_ref(), &opts(None, true), &path, &data, false)
        .await
        .unwrap();
    let done = restore(source.as_ref(), &opts(None, false), &path, &data, true)
        .await
        .unwrap();
    assert!(fs::read_to_string(&env).unwrap().contains(SECRET));

    let info = source.info();
    let outputs = [
        format!("{source:?}"),
        format!("{info:?}"),
        info.description.clone(),
        info.origin.to_string(),
        format!("{report:?}"),
        serde_json::to_string(&report).unwrap(),
        format!("{dry:?}"),
        format!("{done:?}"),
        serde_json::to_string(&done).unwrap(),
    ];
    for out in &outputs {
        assert!(!out.contains(SECRET), "value leaked: {out}");
    }
    assert!(outputs[4].contains("API_TOKEN") && outputs[7].contains("DB_PASS"));

    // Errors about a file holding the secret do not show it either.
    let missing = EnvSource::new("env", &env, keys(&["NOPE"])).unwrap();
    let err = missing.check().await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains(SECRET));
}

#[tokio::test]
async fn config_spec_and_origin() {
    let f = factory();
    assert_eq!(f.spec_name("/x/.env#A"), "env");
    let err = f.from_spec("env", "/x/.env").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(err.hint().unwrap().contains('#'));

    let table: toml::Table = toml::from_str("path = \".env\"\nkeys = [\"A\"]\nextra = true").unwrap();
    let err = f.from_config("s", table, Path::new("/srv")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(err.to_string().contains("extra"), "{err}");
    let table: toml::Table = toml::from_str("path = \".env\"\nkeys = []").unwrap();
    assert_eq!(
        f.from_config("s", table, Path::new("/srv")).unwrap_err().kind(),
        ErrorKind::ConfigInvalid
    );
    let table: toml::Table = toml::from_str("path = \".env\"").unwrap();
    assert_eq!(
        f.from_config("s", table, Path::new("/srv")).unwrap_err().kind(),
        ErrorKind::ConfigInvalid
    );

    let table: toml::Table = toml::from_str("path = \"app/.env\"\nkeys = [\"A_*\"]").unwrap();
    let s = f.from_config("s", table, Path::new("/srv")).unwrap();
    let origin = s.info().origin;
    assert_eq!(
        origin,
        serde_json::json!({"path": "/srv/app/.env", "keys": ["A_*"]})
    );
    let back = f.from_origin("s", &origin).unwrap();
    assert_eq!(back.info().origin, origin);
    assert_eq!(
        f.from_origin("s", &serde_json::json!({"path": "/x"}))
            .unwrap_err()
            .kind(),
        ErrorKind::Integrity
    );
}

#[tokio::test]
async fn export_prefix_follows_the_existing_line() {
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join(".env");
    let source = EnvSource::new("env", &env, keys(&["A", "B"])).unwrap();
    fs::write(&env, "export A=old\nB=old\n").unwrap();
    restore(
        &source,
        &opts(None, false),
        ".env",
        b"A=new\nexport B=new\n",
        true,
    )
    .await
    .unwrap();
    assert_eq!(fs::read_to_string(&env).unwrap(), "export A=new\nB=new\n");
}

#[tokio::test]
async fn sources_restoring_to_the_same_file_collide() {
    let tmp = tempfile::tempdir().unwrap();
    let one = EnvSource::new("one", tmp.path().join("a/.env"), keys(&["A"])).unwrap();
    let two = EnvSource::new("two", tmp.path().join("b/.env"), keys(&["B"])).unwrap();
    let target = tmp.path().join("t");
    for dry_run in [true, false] {
        // One restore: every source gets a clone of the same options.
        let mut o = opts(Some(&target), dry_run);
        o.claims = PathClaims::default();
        restore(&one, &o.clone(), ".env", b"A=1\n", false).await.unwrap();
        let err = restore(&two, &o.clone(), ".env", b"B=1\n", false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("`one`") && msg.contains("`two`") && msg.contains(".env"),
            "{msg}"
        );
    }
    assert!(!target.exists());
}

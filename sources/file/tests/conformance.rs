//! The `file` source: the conformance kit, then capture and restore against
//! real temp directories.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Cursor;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use coffer_core::testkit::{CapturedEntry, source_suite};
use coffer_core::{
    Area, CaptureContext, EntryBody, EntrySender, Error, ErrorKind, PathClaims, Registry, RestoreEntry,
    RestoreEntryKind, RestoreOptions, RestoreReport, Source, SourceFactory, SourceReport, toml,
};
use coffer_source_file::{FileSource, KIND, register};

fn factory() -> Arc<dyn SourceFactory> {
    let mut reg = Registry::new();
    register(&mut reg);
    reg.source_factory(KIND).unwrap().clone()
}

fn set_mtime(path: &Path, secs: u64) {
    let f = File::open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with nested dirs, an empty dir, a symlink, odd names and modes.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("conf.d/nested")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::create_dir(root.join("spaced dir")).unwrap();
    fs::write(root.join("app.yaml"), "listen: 8080\n").unwrap();
    fs::write(root.join("conf.d/nested/deep.conf"), vec![7u8; 200_000]).unwrap();
    fs::write(root.join("spaced dir/ünïcödé file.txt"), "hé\n").unwrap();
    fs::write(root.join("secret.key"), "k\n").unwrap();
    fs::write(root.join("empty.txt"), "").unwrap();
    symlink("conf.d/nested/deep.conf", root.join("current.conf")).unwrap();
    symlink("../app.yaml", root.join("conf.d/app-link")).unwrap();
    chmod(&root.join("secret.key"), 0o640);
    set_mtime(&root.join("secret.key"), 1_600_000_000);
    set_mtime(&root.join("app.yaml"), 1_500_000_000);
    chmod(&root.join("empty"), 0o700);
    set_mtime(&root.join("empty"), 1_400_000_000);
    set_mtime(&root.join("conf.d/nested"), 1_300_000_000);
}

/// What a tree holds: kind, mode, mtime (for files and dirs), content or
/// link target, by relative path.
fn snapshot(root: &Path) -> BTreeMap<String, (String, u32, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            let m = fs::symlink_metadata(&p).unwrap();
            let v = if m.file_type().is_symlink() {
                (
                    "link".into(),
                    0,
                    0,
                    fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes(),
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                ("dir".into(), m.mode() & 0o7777, m.mtime(), vec![])
            } else {
                ("file".into(), m.mode() & 0o7777, m.mtime(), fs::read(&p).unwrap())
            };
            out.insert(rel, v);
        }
    }
    out
}

async fn capture(source: &dyn Source) -> (Vec<CapturedEntry>, SourceReport) {
    let (tx, mut rx) = EntrySender::channel(4);
    let ctx = CaptureContext::new("test");
    let drain = async move {
        let mut out = Vec::new();
        while let Some(e) = rx.recv().await {
            let (kind, data) = match e.body {
                EntryBody::File { size, mut reader } => {
                    let data = tokio::task::spawn_blocking(move || {
                        let mut v = Vec::new();
                        std::io::copy(&mut reader, &mut v).unwrap();
                        v
                    })
                    .await
                    .unwrap();
                    assert_eq!(data.len() as u64, size, "{}", e.path);
                    (RestoreEntryKind::File { size }, data)
                }
                EntryBody::Dir => (RestoreEntryKind::Dir, vec![]),
                EntryBody::Symlink { target } => (RestoreEntryKind::Symlink { target }, vec![]),
            };
            out.push(CapturedEntry {
                area: e.area,
                path: e.path,
                mode: e.mode,
                mtime: e.mtime,
                kind,
                data,
            });
        }
        out
    };
    let (report, entries) = tokio::join!(source.capture(&ctx, tx), drain);
    (entries, report.unwrap())
}

fn opts(target: Option<&Path>, dry_run: bool) -> RestoreOptions {
    let mut o = RestoreOptions::default();
    o.target = target.map(Path::to_path_buf);
    o.dry_run = dry_run;
    o
}

/// Feeds `entries` to a restorer; the error of the first failing entry
/// finishes the restorer with `commit = false`.
async fn restore(
    source: &dyn Source,
    opts: &RestoreOptions,
    entries: Vec<CapturedEntry>,
    commit: bool,
) -> coffer_core::Result<RestoreReport> {
    let mut r = source.restore(opts).await?;
    tokio::task::spawn_blocking(move || {
        for e in &entries {
            let mut reader = Cursor::new(&e.data[..]);
            let res = r.entry(RestoreEntry {
                area: e.area.clone(),
                path: &e.path,
                mode: e.mode,
                mtime: e.mtime,
                owner: None,
                kind: e.kind.clone(),
                reader: &mut reader,
            });
            if let Err(err) = res {
                r.finish(false).unwrap();
                return Err(err);
            }
        }
        r.finish(commit)
    })
    .await
    .unwrap()
}

fn file_entry(path: &str, data: &[u8]) -> CapturedEntry {
    CapturedEntry {
        area: Area::Files,
        path: path.into(),
        mode: 0o644,
        mtime: 1_700_000_000,
        kind: RestoreEntryKind::File {
            size: data.len() as u64,
        },
        data: data.to_vec(),
    }
}

fn dir_entry(path: &str) -> CapturedEntry {
    CapturedEntry {
        area: Area::Files,
        path: path.into(),
        mode: 0o755,
        mtime: 1_700_000_000,
        kind: RestoreEntryKind::Dir,
        data: vec![],
    }
}

fn link_entry(path: &str, target: &str) -> CapturedEntry {
    CapturedEntry {
        area: Area::Files,
        path: path.into(),
        mode: 0o777,
        mtime: 1_700_000_000,
        kind: RestoreEntryKind::Symlink {
            target: target.into(),
        },
        data: vec![],
    }
}

fn actions(report: &RestoreReport) -> Vec<(String, String)> {
    report
        .actions
        .iter()
        .map(|a| (a.action.clone(), a.target.clone()))
        .collect()
}

/// Regular files and symlinks under `root` (temp files included).
fn non_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn suite_directory_tree_roundtrips() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app");
    make_tree(&src);
    let source = FileSource::new("app", &src).unwrap();
    let target = tmp.path().join("restore");
    let entries = source_suite(&source, &target).await;

    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "entries are sorted");
    assert!(paths.contains(&"empty"));
    assert!(paths.contains(&"spaced dir/ünïcödé file.txt"));
    assert!(!paths.contains(&""));
    let link = entries.iter().find(|e| e.path == "current.conf").unwrap();
    assert_eq!(
        link.kind,
        RestoreEntryKind::Symlink {
            target: "conf.d/nested/deep.conf".into()
        }
    );
    let key = entries.iter().find(|e| e.path == "secret.key").unwrap();
    assert_eq!((key.mode, key.mtime), (0o640, 1_600_000_000));

    // The committed restore reproduces the tree exactly.
    assert_eq!(snapshot(&src), snapshot(&target));
    let info = source.info();
    assert_eq!(info.origin["is_dir"], true);
    assert_eq!(info.origin["path"], src.to_str().unwrap());
}

#[tokio::test]
async fn suite_single_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("app.yaml");
    fs::write(&file, "a: 1\n").unwrap();
    chmod(&file, 0o640);
    set_mtime(&file, 1_234_567_890);
    let source = factory().from_spec("app.yaml", file.to_str().unwrap()).unwrap();
    let target = tmp.path().join("restore");
    let entries = source_suite(source.as_ref(), &target).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].path, "app.yaml");
    let m = fs::metadata(target.join("app.yaml")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 1_234_567_890));
    assert_eq!(fs::read(target.join("app.yaml")).unwrap(), b"a: 1\n");
    assert_eq!(source.info().origin["is_dir"], false);
}

#[tokio::test]
async fn report_counts_and_excludes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app");
    make_tree(&src);
    fs::create_dir_all(src.join("tmp/cache")).unwrap();
    fs::write(src.join("tmp/cache/x"), "x").unwrap();
    fs::write(src.join("conf.d/debug.log"), "log").unwrap();
    let table: toml::Table = toml::from_str(
        r#"path = "app"
exclude = ["*.log", "tmp/**"]"#,
    )
    .unwrap();
    let source = factory().from_config("app", table, tmp.path()).unwrap();
    let (entries, report) = capture(source.as_ref()).await;
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert!(
        !paths.iter().any(|p| p.ends_with(".log") || p.starts_with("tmp/")),
        "{paths:?}"
    );
    assert!(paths.contains(&"tmp"), "the dir itself stays: {paths:?}");
    assert_eq!(report.details["files"], 5);
    assert_eq!(report.details["dirs"], 5);
    assert_eq!(report.details["symlinks"], 2);
    assert_eq!(report.details["bytes"], 200_000 + 13 + 4 + 2);
    assert_eq!(report.summary, "5 files, 5 dirs, 2 symlinks, 195.3 KiB");
}

#[tokio::test]
async fn config_and_spec() {
    let f = factory();
    let table: toml::Table = toml::from_str(
        r#"path = "x"
bogus = 1"#,
    )
    .unwrap();
    let err = f.from_config("x", table, Path::new("/srv")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(err.to_string().contains("bogus"), "{err}");

    let table: toml::Table = toml::from_str(r#"path = "etc/app.yaml""#).unwrap();
    let s = f.from_config("cfg", table, Path::new("/srv/svc")).unwrap();
    assert_eq!(s.info().origin["path"], "/srv/svc/etc/app.yaml");
    assert_eq!(s.info().name, "cfg");

    let table: toml::Table = toml::from_str(
        r#"path = "x"
exclude = ["a[b"]"#,
    )
    .unwrap();
    let err = f.from_config("x", table, Path::new("/srv")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    // The glob library's error is kept as the source, not only as text.
    let source = std::error::Error::source(&err).expect("the glob error is the source");
    assert!(err.to_string().contains(&source.to_string()), "{err} / {source}");

    assert_eq!(f.spec_name("/etc/my app.yaml"), "my_app.yaml");
    assert_eq!(f.spec_name("/"), "files");

    let origin = serde_json::json!({"path": "/srv/conf", "is_dir": true});
    let s = f.from_origin("conf", &origin).unwrap();
    assert_eq!(s.info().origin, origin);
    let err = f
        .from_origin("conf", &serde_json::json!({"path": "rel"}))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity);
}

#[tokio::test]
async fn check_reports_missing_path() {
    let tmp = tempfile::tempdir().unwrap();
    let source = FileSource::new("x", tmp.path().join("nope")).unwrap();
    let err = source.check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(err.hint().is_some());
}

#[tokio::test]
async fn unreadable_file_is_a_clear_error() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: root can read everything");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("locked"), "x").unwrap();
    chmod(&src.join("locked"), 0o000);
    let source = FileSource::new("x", &src).unwrap();
    let (tx, _rx) = EntrySender::channel(4);
    let err = source.capture(&CaptureContext::new("t"), tx).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("locked"));
    assert!(err.hint().unwrap().contains("exclude"));
}

#[tokio::test]
async fn fifo_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), "x").unwrap();
    let fifo = std::ffi::CString::new(src.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: `fifo` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let source = FileSource::new("x", &src).unwrap();
    let (entries, _) = capture(&source).await;
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["a"]);
}

#[tokio::test]
async fn malicious_paths_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let source = FileSource::new("x", tmp.path().join("src")).unwrap();
    let target = tmp.path().join("t");
    for bad in ["../x", "/etc/x", "a/../../x", "a//b"] {
        let err = restore(
            &source,
            &opts(Some(&target), false),
            vec![file_entry(bad, b"evil")],
            true,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{bad}");
    }
    // Links are restored as links whatever they point to (as `tar x`
    // does), but no later entry is ever written through one.
    for (link, to) in [
        ("l", "../outside"),
        ("d/l", "../../outside"),
        ("l", "/etc"),
        ("l", "a/../../outside"),
        ("l", ".."),
    ] {
        let below = format!("{link}/passwd");
        let entries = vec![dir_entry("d"), link_entry(link, to), file_entry(&below, b"evil")];
        let err = restore(&source, &opts(Some(&target), false), entries, true)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{link} -> {to}");
        assert!(err.to_string().contains(&below), "{err}");
        let entries = vec![dir_entry("d"), link_entry(link, to), dir_entry(&below)];
        let err = restore(&source, &opts(Some(&target), false), entries, true)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{link} -> {to}");
    }
    assert!(non_dirs(&target).is_empty(), "{:?}", non_dirs(&target));
    // A file cannot be the parent of another path of the same bundle.
    let entries = vec![link_entry("a", "b"), file_entry("a/x", b"x")];
    let err = restore(&source, &opts(Some(&target), false), entries, true)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity);
    // Nor may a path appear twice.
    let entries = vec![file_entry("a", b"1"), file_entry("a", b"2")];
    assert!(
        restore(&source, &opts(Some(&target), false), entries, true)
            .await
            .is_err()
    );
    assert!(non_dirs(&target).is_empty(), "{:?}", non_dirs(&target));
    assert!(!tmp.path().join("outside").exists());
}

#[tokio::test]
async fn existing_symlinks_in_the_target_are_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("passwd"), "root:x:0:0\n").unwrap();
    let target = tmp.path().join("t");
    fs::create_dir(&target).unwrap();
    symlink(&outside, target.join("a")).unwrap();
    let source = FileSource::new("x", tmp.path().join("src")).unwrap();

    // As an implicit parent and as a Dir entry.
    for entries in [
        vec![file_entry("a/passwd", b"pwned\n")],
        vec![dir_entry("a"), file_entry("a/passwd", b"pwned\n")],
        vec![link_entry("a/l", "x")],
    ] {
        for dry_run in [false, true] {
            let err = restore(&source, &opts(Some(&target), dry_run), entries.clone(), true)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err:?}");
            assert!(err.to_string().contains("symlink"), "{err}");
        }
    }
    assert_eq!(fs::read(outside.join("passwd")).unwrap(), b"root:x:0:0\n");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);

    // A symlink where a file goes is replaced, not written through.
    symlink(outside.join("passwd"), target.join("leaf")).unwrap();
    let report = restore(
        &source,
        &opts(Some(&target), false),
        vec![file_entry("leaf", b"new\n")],
        true,
    )
    .await
    .unwrap();
    assert_eq!(actions(&report)[0].0, "replace");
    assert!(fs::symlink_metadata(target.join("leaf")).unwrap().is_file());
    assert_eq!(fs::read(target.join("leaf")).unwrap(), b"new\n");
    assert_eq!(fs::read(outside.join("passwd")).unwrap(), b"root:x:0:0\n");
}

#[tokio::test]
async fn abort_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("t");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep"), "old").unwrap();
    let source = FileSource::new("x", tmp.path().join("src")).unwrap();
    let entries = vec![
        dir_entry("new"),
        dir_entry("new/deeper"),
        file_entry("new/deeper/f", b"data"),
        file_entry("keep", b"replacement"),
        link_entry("l", "keep"),
    ];
    let report = restore(&source, &opts(Some(&target), false), entries, false)
        .await
        .unwrap();
    assert!(!report.actions.is_empty());
    let names: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keep"]);
    assert_eq!(fs::read(target.join("keep")).unwrap(), b"old");

    // A target that did not exist is gone again.
    let missing = tmp.path().join("missing/below");
    let entries = vec![dir_entry("d"), file_entry("d/f", b"data")];
    restore(&source, &opts(Some(&missing), false), entries, false)
        .await
        .unwrap();
    assert!(!tmp.path().join("missing").exists());
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app");
    make_tree(&src);
    let source = FileSource::new("app", &src).unwrap();
    let (entries, _) = capture(&source).await;
    let target = tmp.path().join("t");
    let report = restore(&source, &opts(Some(&target), true), entries.clone(), true)
        .await
        .unwrap();
    assert!(!target.exists());
    let acts = actions(&report);
    assert_eq!(acts[0], ("mkdir".to_string(), target.display().to_string()));
    assert!(acts.contains(&("create".into(), target.join("app.yaml").display().to_string())));
    assert!(acts.contains(&("mkdir".into(), target.join("empty").display().to_string())));
    assert!(acts.contains(&(
        "symlink".into(),
        target.join("current.conf").display().to_string()
    )));

    // In place: the plan of an unchanged tree changes nothing.
    let before = snapshot(&src);
    fs::write(src.join("app.yaml"), "listen: 9090\n").unwrap();
    let before_edit = snapshot(&src);
    let report = restore(&source, &opts(None, true), entries, true).await.unwrap();
    assert_eq!(snapshot(&src), before_edit);
    let acts = actions(&report);
    assert!(acts.contains(&("replace".into(), src.join("app.yaml").display().to_string())));
    assert!(acts.contains(&("unchanged".into(), src.join("secret.key").display().to_string())));
    assert_ne!(before, before_edit);
}

#[tokio::test]
async fn restore_in_place_replaces_only_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app");
    make_tree(&src);
    let original = snapshot(&src);
    let origin = FileSource::new("app", &src).unwrap().info().origin;
    let (entries, _) = capture(&FileSource::new("app", &src).unwrap()).await;

    fs::write(src.join("app.yaml"), "changed\n").unwrap();
    chmod(&src.join("secret.key"), 0o600);
    fs::remove_file(src.join("current.conf")).unwrap();
    fs::remove_dir(src.join("empty")).unwrap();
    let deep_inode = fs::metadata(src.join("conf.d/nested/deep.conf")).unwrap().ino();

    let source = factory().from_origin("app", &origin).unwrap();
    let report = restore(source.as_ref(), &opts(None, false), entries, true)
        .await
        .unwrap();
    let acts = actions(&report);
    let p = |rel: &str| src.join(rel).display().to_string();
    assert!(acts.contains(&("replace".into(), p("app.yaml"))), "{acts:?}");
    assert!(acts.contains(&("chmod".into(), p("secret.key"))), "{acts:?}");
    assert!(acts.contains(&("symlink".into(), p("current.conf"))), "{acts:?}");
    assert!(acts.contains(&("mkdir".into(), p("empty"))), "{acts:?}");
    assert!(
        acts.contains(&("unchanged".into(), p("conf.d/nested/deep.conf"))),
        "{acts:?}"
    );
    assert_eq!(
        fs::metadata(src.join("conf.d/nested/deep.conf")).unwrap().ino(),
        deep_inode
    );
    assert_eq!(snapshot(&src), original);
    assert!(
        non_dirs(&src)
            .iter()
            .all(|p| !p.to_str().unwrap().contains(".coffer-tmp-"))
    );
}

#[tokio::test]
async fn single_file_restores_to_its_own_path() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("app.yaml");
    fs::write(&file, "v1\n").unwrap();
    let source = FileSource::new("app", &file).unwrap();
    let (entries, _) = capture(&source).await;
    fs::write(&file, "v2\n").unwrap();
    let report = restore(&source, &opts(None, false), entries.clone(), true)
        .await
        .unwrap();
    assert_eq!(
        actions(&report),
        [("replace".to_string(), file.display().to_string())]
    );
    assert_eq!(fs::read(&file).unwrap(), b"v1\n");

    // Rebuilt from config after the file is gone: the shape is inferred.
    fs::remove_file(&file).unwrap();
    let source = FileSource::new("app", &file).unwrap();
    let report = restore(&source, &opts(None, false), entries.clone(), true)
        .await
        .unwrap();
    assert_eq!(
        actions(&report),
        [("create".to_string(), file.display().to_string())]
    );
    assert_eq!(fs::read(&file).unwrap(), b"v1\n");

    // A single-file source takes exactly one file entry.
    let mut two = entries.clone();
    two.push(file_entry("other", b"x"));
    assert_eq!(
        restore(&source, &opts(None, false), two, true)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Integrity
    );
}

#[tokio::test]
async fn symlinks_pointing_anywhere_restore_as_links() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let source = FileSource::new("x", tmp.path().join("src")).unwrap();
    let target = tmp.path().join("t");
    let entries = vec![
        file_entry("data.txt", b"d"),
        dir_entry("d"),
        link_entry("d/a", ".."),
        // Lexically the root, through `d/a` the root's parent: a link all
        // the same, never followed.
        link_entry("d/b", "a/../.."),
        link_entry("log", "/var/log"),
        link_entry("out", "../outside"),
        link_entry("shared", "../common/x"),
    ];
    for dry_run in [true, false] {
        let report = restore(&source, &opts(Some(&target), dry_run), entries.clone(), true)
            .await
            .unwrap();
        let links = actions(&report).iter().filter(|(a, _)| a == "symlink").count();
        assert_eq!(links, 5, "{report:?}");
    }
    for (link, to) in [
        ("d/a", ".."),
        ("d/b", "a/../.."),
        ("log", "/var/log"),
        ("out", "../outside"),
        ("shared", "../common/x"),
    ] {
        assert_eq!(fs::read_link(target.join(link)).unwrap(), Path::new(to), "{link}");
    }
    assert_eq!(fs::read(target.join("data.txt")).unwrap(), b"d");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    // Restoring again: the links are unchanged, and the next restore of a
    // bundle with a file below one of them is refused, nothing written.
    let report = restore(&source, &opts(Some(&target), false), entries, true)
        .await
        .unwrap();
    assert!(
        actions(&report).iter().all(|(a, _)| a == "unchanged"),
        "{report:?}"
    );
    for dry_run in [true, false] {
        let err = restore(
            &source,
            &opts(Some(&target), dry_run),
            vec![file_entry("out/evil", b"x")],
            true,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err:?}");
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[tokio::test]
async fn legitimate_relative_symlinks_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let source = FileSource::new("x", tmp.path().join("src")).unwrap();
    let target = tmp.path().join("t");
    let entries = vec![
        file_entry("a.txt", b"a"),
        link_entry("l", "a.txt"),
        link_entry("m", "sub/x"),
        dir_entry("sub"),
        link_entry("sub/l", "../a.txt"),
        file_entry("sub/x", b"x"),
        link_entry("sub/up", ".."),
    ];
    restore(&source, &opts(Some(&target), false), entries, true)
        .await
        .unwrap();
    assert_eq!(fs::read(target.join("l")).unwrap(), b"a");
    assert_eq!(fs::read(target.join("m")).unwrap(), b"x");
    assert_eq!(fs::read(target.join("sub/l")).unwrap(), b"a");
    assert_eq!(
        fs::read_link(target.join("sub/l")).unwrap(),
        Path::new("../a.txt")
    );
    assert_eq!(fs::read(target.join("sub/up/a.txt")).unwrap(), b"a");
}

#[tokio::test]
async fn sources_restoring_to_the_same_path_collide() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["one", "two"] {
        fs::create_dir(tmp.path().join(dir)).unwrap();
        fs::write(tmp.path().join(dir).join("config.yaml"), dir).unwrap();
    }
    let first = FileSource::new("first", tmp.path().join("one/config.yaml")).unwrap();
    let second = FileSource::new("second", tmp.path().join("two/config.yaml")).unwrap();
    let (first_entries, _) = capture(&first).await;
    let (second_entries, _) = capture(&second).await;
    let target = tmp.path().join("t");
    for dry_run in [true, false] {
        // One restore: every source gets a clone of the same options.
        let mut o = opts(Some(&target), dry_run);
        o.claims = PathClaims::default();
        restore(&first, &o.clone(), first_entries.clone(), false)
            .await
            .unwrap();
        let err = restore(&second, &o.clone(), second_entries.clone(), false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("`first`") && msg.contains("`second`") && msg.contains("config.yaml"),
            "{msg}"
        );
        // The same source may restore again (claims are per source).
        restore(&first, &o.clone(), first_entries.clone(), false)
            .await
            .unwrap();
    }
    // Separate restores do not share claims.
    restore(&second, &opts(Some(&target), false), second_entries, true)
        .await
        .unwrap();
    assert_eq!(fs::read(target.join("config.yaml")).unwrap(), b"two");
    // Symlinks are claimed too.
    let first = FileSource::new("first", tmp.path().join("one")).unwrap();
    let second = FileSource::new("second", tmp.path().join("two")).unwrap();
    let o = opts(Some(&target), true);
    restore(
        &first,
        &o.clone(),
        vec![dir_entry("d"), link_entry("d/l", "x")],
        false,
    )
    .await
    .unwrap();
    let err = restore(&second, &o.clone(), vec![file_entry("d/l", b"x")], false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err:?}");
}

#[tokio::test]
async fn a_file_shrinking_during_backup_is_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("log"), vec![b'x'; 10_000]).unwrap();
    let source = FileSource::new("app", &src).unwrap();
    let (tx, mut rx) = EntrySender::channel(4);
    let ctx = CaptureContext::new("t");
    let (report, entry) = tokio::join!(source.capture(&ctx, tx), rx.recv());
    report.unwrap();
    let EntryBody::File { size, mut reader } = entry.unwrap().body else {
        panic!("not a file")
    };
    assert_eq!(size, 10_000);
    // Shrinks between the scan and the read.
    File::options()
        .write(true)
        .open(src.join("log"))
        .unwrap()
        .set_len(100)
        .unwrap();
    let io = std::io::copy(&mut reader, &mut std::io::sink()).unwrap_err();
    let err = Error::io("cannot read the source", io);
    assert_eq!(err.kind(), ErrorKind::Unexpected, "{err:?}");
    assert!(err.is_temporary(), "{err:?}");
    assert!(err.to_string().contains("shrank"), "{err}");
    let hint = err.hint().unwrap();
    assert!(hint.contains("stop") && hint.contains("re-run"), "{hint}");
}

#[tokio::test]
async fn names_with_line_breaks_are_stored_and_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app");
    fs::create_dir_all(src.join("bad\rdir")).unwrap();
    fs::write(src.join("bad\rdir/inner"), "x").unwrap();
    fs::write(src.join("evil\nname"), "y").unwrap();
    fs::write(src.join("back\\slash"), "z").unwrap();
    fs::write(src.join("good"), "ok").unwrap();
    let source = FileSource::new("app", &src).unwrap();
    let (entries, report) = capture(&source).await;
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["back\\slash", "bad\rdir", "bad\rdir/inner", "evil\nname", "good"]
    );
    assert_eq!(report.details["files"], 4);
    assert_eq!(report.summary, "4 files, 1 dir, 5 B");
    let target = tmp.path().join("t");
    restore(&source, &opts(Some(&target), false), entries, true)
        .await
        .unwrap();
    assert_eq!(snapshot(&src), snapshot(&target));

    // A single file with such a name too.
    let lone = tmp.path().join("lone\nfile");
    fs::write(&lone, "x").unwrap();
    let source = FileSource::new("lone", &lone).unwrap();
    let (entries, _) = capture(&source).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].path, "lone\nfile");
}

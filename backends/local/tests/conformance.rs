//! The sink conformance kit and local-specific behaviour of `LocalSink`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use coffer_core::testkit::temp_files;
use coffer_core::{ByteStream, Bytes, Error, ErrorKind, PutOptions, Registry, Sink, SinkExt};
use coffer_sink_local::LocalSink;
use futures::StreamExt;

/// Waits (briefly) for the writers of dropped puts to remove their temp
/// files: they notice the drop on their blocking thread.
async fn assert_no_temp_files_soon(dir: &Path) {
    for _ in 0..100 {
        if temp_files(dir).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("temp files left: {:?}", temp_files(dir));
}

fn failing_body(good: usize) -> ByteStream {
    futures::stream::iter(vec![
        Ok(Bytes::from(vec![1u8; good])),
        Err(Error::new(ErrorKind::Unexpected, "injected failure")),
    ])
    .boxed()
}

fn registry() -> Registry {
    let mut reg = Registry::new();
    coffer_sink_local::register(&mut reg);
    reg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("backups");
    let sink = LocalSink::new(&root);
    coffer_core::testkit::sink_suite(&sink).await;
    assert_no_temp_files_soon(dir.path()).await;
    assert!(sink.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn passes_the_conformance_suite_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    coffer_core::testkit::sink_suite(&LocalSink::new(dir.path())).await;
    assert_no_temp_files_soon(dir.path()).await;
}

#[tokio::test]
async fn a_failed_put_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let sink = LocalSink::new(dir.path());
    let err = sink
        .put("sub/x.coffer", failing_body(300 * 1024), PutOptions::create())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert!(err.to_string().contains("injected failure"), "{err}");
    // Removed before put returned, not eventually.
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
    assert!(!dir.path().join("sub/x.coffer").exists());
}

#[tokio::test]
async fn a_dropped_put_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let sink = LocalSink::new(dir.path());
    let body = futures::stream::iter(vec![Ok(Bytes::from(vec![7u8; 100_000]))])
        .chain(futures::stream::pending())
        .boxed();
    let put = sink.put("x", body, PutOptions::default());
    assert!(
        tokio::time::timeout(Duration::from_millis(200), put)
            .await
            .is_err()
    );
    assert_no_temp_files_soon(dir.path()).await;
    assert!(!dir.path().join("x").exists());
}

#[tokio::test]
async fn creates_the_root_private_and_objects_0600() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/b/backups");
    let sink = LocalSink::new(&root);
    assert!(
        sink.list("").await.unwrap().is_empty(),
        "a missing root lists as empty"
    );
    assert!(!root.exists(), "list creates nothing");
    sink.put_bytes("k/obj", Bytes::from_static(b"data"), PutOptions::create())
        .await
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("k")), 0o700);
    assert_eq!(mode(&root.join("k/obj")), 0o600);
}

#[tokio::test]
async fn a_parent_that_is_a_file_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let sink = LocalSink::new(dir.path());
    sink.put_bytes("a", Bytes::from_static(b"file"), PutOptions::default())
        .await
        .unwrap();
    let err = sink
        .put_bytes("a/b", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("is a file, not a directory"), "{err}");
    assert!(err.hint().is_some());
    assert_eq!(sink.get_bytes("a").await.unwrap(), "file");

    // A key that is a directory of other keys is not an object.
    let err = sink
        .put_bytes("dir/inner", Bytes::from_static(b"x"), PutOptions::default())
        .await;
    err.unwrap();
    let err = sink
        .put_bytes("dir", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
    assert_eq!(
        sink.get("dir").await.err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    sink.delete("dir").await.unwrap();

    // The root itself is a regular file.
    let file_root = dir.path().join("not-a-dir");
    std::fs::write(&file_root, "x").unwrap();
    let err = LocalSink::new(&file_root)
        .put_bytes("k", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(err.to_string().contains("is not a directory"), "{err}");
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn temp_files_are_not_listed_and_stale_ones_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let sink = LocalSink::new(dir.path());
    sink.put_bytes("s/real", Bytes::from_static(b"1"), PutOptions::default())
        .await
        .unwrap();
    std::fs::write(dir.path().join("s/.coffer-tmp-crashed"), "partial").unwrap();
    let keys: Vec<String> = sink.list("").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, ["s/real"]);
    assert_eq!(
        sink.cleanup_stale_temp(Duration::from_secs(3600)).await.unwrap(),
        0
    );
    assert_eq!(sink.cleanup_stale_temp(Duration::ZERO).await.unwrap(), 1);
    assert!(temp_files(dir.path()).is_empty());
    assert!(
        sink.put_bytes("s/.coffer-tmp-x", Bytes::new(), PutOptions::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn list_reports_size_and_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let sink = LocalSink::new(dir.path());
    sink.put_bytes("x/y.json", Bytes::from_static(b"12345"), PutOptions::default())
        .await
        .unwrap();
    let objs = sink.list("x/").await.unwrap();
    assert_eq!(objs.len(), 1);
    assert_eq!(objs[0].size, 5);
    let age = jiff::Timestamp::now().duration_since(objs[0].modified.unwrap());
    assert!(age.abs() < jiff::SignedDuration::from_secs(60), "{age:?}");
    assert!(sink.list("../").await.is_err());
    assert!(sink.list("/etc").await.is_err());
}

#[test]
fn url_forms() {
    let reg = registry();
    let cwd = std::env::current_dir().unwrap();
    let cases: &[(&str, PathBuf)] = &[
        ("file:///srv/backups", "/srv/backups".into()),
        ("file://localhost/srv/backups", "/srv/backups".into()),
        ("file:///srv/my%20backups", "/srv/my backups".into()),
        ("file:/srv/backups", "/srv/backups".into()),
        ("file:relative/dir", cwd.join("relative/dir")),
        ("file:my%20dir", cwd.join("my%20dir")),
        ("./backups", cwd.join("backups")),
        ("backups", cwd.join("backups")),
        ("/srv/b", "/srv/b".into()),
    ];
    for (url, path) in cases {
        let sink = LocalSink::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(sink.root(), path, "{url}");
        let via_registry = reg.sink_from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let info = via_registry.info();
        assert_eq!(info.scheme, "file");
        assert_eq!(Path::new(&info.location), path, "{url}");
        assert!(info.atomic_create);
    }
    for bad in ["file://otherhost/x", "file://", "file:", ""] {
        let err = LocalSink::from_url(bad)
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{bad}");
    }
}

#[test]
fn config_tables() {
    let reg = registry();
    let factory = reg.sink_factory("local").unwrap();
    let base = Path::new("/etc/coffer");
    let table = |s: &str| s.parse::<coffer_core::toml::Table>().unwrap();

    let sink = factory
        .from_config("disk", table(r#"path = "./backups""#), base)
        .unwrap();
    assert_eq!(sink.info().location, "/etc/coffer/backups");
    let sink = factory
        .from_config("disk", table(r#"path = "/srv/b""#), base)
        .unwrap();
    assert_eq!(sink.info().location, "/srv/b");

    for bad in [
        r#"path = "/x"
bucket = "y""#,
        "",
        r#"path = """#,
        "path = 3",
    ] {
        let err = factory.from_config("disk", table(bad), base).expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{bad}");
        assert!(err.to_string().contains("disk"), "{err}");
    }
}

//! The sink conformance kit on a real medium: a tmpfs mounted for the test
//! (as root; skipped otherwise, failed when CI=true), initialized with
//! `init_medium`; plus the media checks at the sink level.

use std::path::{Path, PathBuf};
use std::process::Command;

use coffer_core::{ErrorKind, PutOptions, Sink, SinkExt};
use coffer_sink_media::{MediaSink, MediaSinkConfig, init_medium};

struct Tmpfs {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("medium");
        std::fs::create_dir(&mount).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs { mount, _dir: dir });
        }
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("cannot mount a tmpfs (these tests run as root)");
        }
        eprintln!("skipping: cannot mount a tmpfs (not root?)");
        None
    }
    fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if !Command::new("umount")
            .arg(&self.mount)
            .status()
            .is_ok_and(|s| s.success())
        {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}

#[tokio::test]
async fn conformance_on_a_mounted_medium() {
    let Some(m) = Tmpfs::new("128m") else { return };
    init_medium(m.path(), "OFFSITE-A", Some("weekly")).unwrap();
    let sink = MediaSink::new(MediaSinkConfig::new(m.path()).with_labels(vec!["OFFSITE-A".into()]));
    coffer_core::testkit::sink_suite(&sink).await;
}

#[tokio::test]
async fn refuses_unmounted_wrong_and_full_media() {
    let plain = tempfile::tempdir().unwrap();
    let sink = MediaSink::new(MediaSinkConfig::new(plain.path()));
    let err = sink
        .put_bytes("x", "y".into(), PutOptions::create())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a mount point"), "{err}");
    assert!(sink.list("").await.is_err(), "reads are refused too");
    assert!(std::fs::read_dir(plain.path()).unwrap().next().is_none());

    let Some(m) = Tmpfs::new("8m") else { return };
    let blank = MediaSink::new(MediaSinkConfig::new(m.path()));
    let err = blank.list("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    init_medium(m.path(), "OFFSITE-B", None).unwrap();
    assert_eq!(
        init_medium(m.path(), "OFFSITE-B", None).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    let wrong = MediaSink::new(MediaSinkConfig::new(m.path()).with_set(Some("weekly".into())));
    assert!(
        wrong
            .list("")
            .await
            .unwrap_err()
            .to_string()
            .contains("does not accept")
    );
    let err = blank
        .put_bytes(
            "big",
            "tiny body".into(),
            PutOptions::create().with_size_hint(64 << 20),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
    assert!(err.hint().unwrap().contains("needed"), "{err:?}");
    assert!(blank.head("big").await.unwrap().is_none());
    // A put that fits is read back and listed.
    blank
        .put_bytes("ok", "fits".into(), PutOptions::create().with_size_hint(4))
        .await
        .unwrap();
    assert_eq!(blank.get_bytes("ok").await.unwrap(), "fits");
}

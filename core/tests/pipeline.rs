//! The backup pipeline and bundle reader against in-memory sinks: fan-out,
//! all-or-nothing on failures, and every integrity check of the reader,
//! including forged bundles built by hand.

use std::io::{Cursor, Read, Write};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use coffer_core::pipeline::{CheckOnly, read_bundle, run_backup};
use coffer_core::testkit::MemorySink;
use coffer_core::{
    Area, ByteStream, CaptureContext, Entry, EntryBody, EntrySender, ErrorKind, ObjectMeta, Progress,
    PutOptions, RestoreOptions, Restorer, Result, Sink, SinkExt, SinkInfo, Source, SourceInfo, SourceReport,
    format::Compression, format::Index, format::IndexEncryption, format::IndexObject, format::IndexSource,
    format::SnapshotId, keys::Encryption, keys::GeneratedKey, keys::Identities, keys::RecipientKey,
    ops::BackupRequest, ops::SinkTarget,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// A source of fixed in-memory files; optionally fails after `fail_after` entries.
#[derive(Debug)]
struct MemSource {
    name: String,
    files: Vec<(String, Vec<u8>)>,
    fail_after: Option<usize>,
}

impl MemSource {
    /// The area its files go to: `files`, or the plugin area named by a
    /// `vault:` prefix of the source name (a secret one).
    fn area(&self) -> Area {
        match self.name.strip_prefix("vault") {
            Some(_) => Area::new("vault", true).unwrap(),
            None => Area::Files,
        }
    }
}

#[async_trait]
impl Source for MemSource {
    fn info(&self) -> SourceInfo {
        SourceInfo::new("mem", &self.name, "memory", serde_json::json!({}))
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn capture(&self, _: &CaptureContext, out: EntrySender) -> Result<SourceReport> {
        for (i, (path, data)) in self.files.iter().enumerate() {
            if self.fail_after == Some(i) {
                return Err(coffer_core::Error::new(
                    ErrorKind::Unreachable,
                    "database went away",
                ));
            }
            // `dir/` is a directory, `link->target` a symlink.
            let (path, body) = if let Some(dir) = path.strip_suffix('/') {
                (dir, EntryBody::Dir)
            } else if let Some((link, target)) = path.split_once("->") {
                (
                    link,
                    EntryBody::Symlink {
                        target: target.to_string(),
                    },
                )
            } else {
                (
                    path.as_str(),
                    EntryBody::File {
                        size: data.len() as u64,
                        reader: Box::new(Cursor::new(data.clone())),
                    },
                )
            };
            out.send(Entry {
                area: self.area(),
                path: path.to_string(),
                mode: 0o644,
                mtime: 1_700_000_000,
                owner: None,
                stat: None,
                body,
            })
            .await?;
        }
        Ok(SourceReport {
            position: None,
            summary: format!("{} files", self.files.len()),
            details: serde_json::json!({}),
        })
    }
    async fn restore(&self, _: &RestoreOptions) -> Result<Box<dyn Restorer>> {
        unimplemented!("not used here")
    }
}

/// A sink that fails after receiving `limit` bytes.
#[derive(Debug)]
struct FailingSink {
    limit: usize,
}

#[async_trait]
impl Sink for FailingSink {
    fn info(&self) -> SinkInfo {
        SinkInfo::new("failing", "nowhere")
    }
    async fn put(&self, _: &str, mut body: ByteStream, _: PutOptions) -> Result<u64> {
        let mut n = 0;
        while let Some(c) = body.next().await {
            n += c?.len();
            if n > self.limit {
                return Err(coffer_core::Error::new(ErrorKind::Unreachable, "connection reset").temporary());
            }
        }
        Err(coffer_core::Error::new(
            ErrorKind::Unreachable,
            "connection reset",
        ))
    }
    async fn get(&self, _: &str) -> Result<ByteStream> {
        Err(coffer_core::Error::new(ErrorKind::NotFound, "none"))
    }
    async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>> {
        Ok(vec![])
    }
    async fn delete(&self, _: &str) -> Result<()> {
        Ok(())
    }
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn key() -> (GeneratedKey, Identities, tempfile::TempDir) {
    let k = GeneratedKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k");
    std::fs::write(&f, k.file_text()).unwrap();
    let mut ids = Identities::new();
    ids.add_file(&f).unwrap();
    (k, ids, dir)
}

fn request(k: &GeneratedKey, sources: Vec<Arc<dyn Source>>, sinks: Vec<SinkTarget>) -> BackupRequest {
    BackupRequest {
        job: "test".into(),
        sources,
        sinks,
        encryption: Encryption::Recipients(vec![RecipientKey::parse(&k.recipient()).unwrap()]),
        compression: Compression::Zstd(3),
        tags: vec![],
        time: None,
        threads: 2,
        signing_key: None,
        dedup_key: None,
        trusted: Default::default(),
    }
}

fn target(name: &str, sink: Arc<dyn Sink>, required: bool) -> SinkTarget {
    SinkTarget {
        name: name.into(),
        sink,
        required,
        format: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fan_out_writes_identical_verified_bundles() {
    let (k, ids, _d) = key();
    let files = vec![
        ("big.bin".to_string(), noise(5 << 20, 7)),
        ("dir/text.json".to_string(), b"{\"a\":1}\n".repeat(100_000)),
        ("empty".to_string(), vec![]),
    ];
    let src = Arc::new(MemSource {
        name: "mem".into(),
        files: files.clone(),
        fail_after: None,
    });
    let a = Arc::new(MemorySink::new());
    let b = Arc::new(MemorySink::new());
    let out = run_backup(
        request(
            &k,
            vec![src],
            vec![target("a", a.clone(), true), target("b", b.clone(), true)],
        ),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    assert!(out.required_ok());
    assert_eq!(out.entries, 3);
    let id = out.index.id.clone();
    let obj_a = a.get_bytes(&id.object_key()).await.unwrap();
    let obj_b = b.get_bytes(&id.object_key()).await.unwrap();
    assert_eq!(obj_a, obj_b);
    assert_eq!(hex::encode(Sha256::digest(&obj_a)), out.index.object.sha256);
    let index = Index::from_json(&a.get_bytes(&id.index_key()).await.unwrap(), &id.index_key()).unwrap();
    assert_eq!(index, out.index);

    let summary = read_bundle(&obj_a[..], &index, &ids, &mut CheckOnly).unwrap();
    assert_eq!(summary.files_checked, 3);
    assert_eq!(
        summary.manifest.total_bytes,
        files.iter().map(|f| f.1.len() as u64).sum::<u64>()
    );
    let sha_big = hex::encode(Sha256::digest(&files[0].1));
    assert!(
        summary
            .manifest
            .entries
            .iter()
            .any(|e| e.path == "files/mem/big.bin" && e.sha256 == sha_big)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_failing_half_way_leaves_nothing_on_any_sink() {
    let (k, _ids, _d) = key();
    let files = (0..5).map(|i| (format!("f{i}"), noise(1 << 20, i + 1))).collect();
    let src = Arc::new(MemSource {
        name: "mem".into(),
        files,
        fail_after: Some(3),
    });
    let a = Arc::new(MemorySink::new());
    let err = run_backup(
        request(&k, vec![src], vec![target("a", a.clone(), true)]),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains("database went away"), "{err}");
    assert!(a.keys().is_empty(), "left behind: {:?}", a.keys());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_sink_does_not_spoil_the_others() {
    let (k, ids, _d) = key();
    let files = vec![("big".to_string(), noise(6 << 20, 3))];
    let src = Arc::new(MemSource {
        name: "mem".into(),
        files,
        fail_after: None,
    });
    let good = Arc::new(MemorySink::new());
    let out = run_backup(
        request(
            &k,
            vec![src],
            vec![
                target("bad", Arc::new(FailingSink { limit: 2 << 20 }), false),
                target("good", good.clone(), true),
            ],
        ),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    assert!(out.required_ok(), "the failed sink was optional");
    assert!(out.sinks[0].result.is_err());
    assert!(out.sinks[1].result.is_ok());
    let obj = good.get_bytes(&out.index.id.object_key()).await.unwrap();
    read_bundle(&obj[..], &out.index, &ids, &mut CheckOnly).unwrap();

    // All sinks failing is an error.
    let src = Arc::new(MemSource {
        name: "mem".into(),
        files: vec![("x".into(), noise(3 << 20, 9))],
        fail_after: None,
    });
    let err = run_backup(
        request(
            &k,
            vec![src],
            vec![target("bad", Arc::new(FailingSink { limit: 1 << 20 }), true)],
        ),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("every sink failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sink_failing_at_once_ends_the_run_instead_of_hanging() {
    // Sinks that refuse before reading anything (a missing local sink),
    // and a source with more entries than the channels hold: the capture
    // must stop when the writer does, not wait on a full channel.
    let (k, _ids, _d) = key();
    let files: Vec<(String, Vec<u8>)> = (0..200).map(|i| (format!("f{i}"), noise(64 << 10, i))).collect();
    let src = Arc::new(MemSource {
        name: "mem".into(),
        files,
        fail_after: None,
    });
    let run = run_backup(
        request(
            &k,
            vec![src],
            vec![
                target("a", Arc::new(FailingSink { limit: 0 }), true),
                target("b", Arc::new(FailingSink { limit: 0 }), true),
            ],
        ),
        Arc::new(Progress::default()),
    );
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("the run hung")
        .unwrap_err();
    assert!(err.to_string().contains("every sink failed"), "{err}");
}

/// Builds a bundle by hand: `entries` as (path, type, data/link), encrypted
/// to `k`, with an index whose hash matches.
fn forge(
    k: &GeneratedKey,
    id: &SnapshotId,
    sources_id: &SnapshotId,
    entries: &[(&str, tar::EntryType, &[u8])],
) -> (Vec<u8>, Index) {
    let mut tar = tar::Builder::new(Vec::new());
    let sources = serde_json::json!({
        "id": sources_id.as_str(),
        "sources": [{"name": "cfg", "kind": "file", "description": "x", "origin": {}}],
    });
    let mut add = |path: &str, kind: tar::EntryType, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        if kind == tar::EntryType::Symlink {
            h.set_size(0);
            tar.append_link(&mut h, path, std::str::from_utf8(data).unwrap())
                .unwrap();
        } else {
            h.set_size(data.len() as u64);
            // Write the name raw so that `..` survives (append_data refuses it).
            let name = h.as_old_mut();
            name.name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            tar.append(&h, data).unwrap();
        }
    };
    add(
        "sources.json",
        tar::EntryType::Regular,
        sources.to_string().as_bytes(),
    );
    for (p, kind, data) in entries {
        add(p, *kind, data);
    }
    let plain = tar.into_inner().unwrap();
    let enc = Encryption::Recipients(vec![RecipientKey::parse(&k.recipient()).unwrap()]);
    let mut out = Vec::new();
    let mut w = enc.encrypt(&mut out).unwrap();
    w.write_all(&plain).unwrap();
    w.finish().unwrap();
    let index = Index {
        format: coffer_core::format::INDEX_FORMAT.into(),
        id: id.clone(),
        job: "forged".into(),
        created_at: jiff::Timestamp::now(),
        host: "h".into(),
        tags: vec![],
        coffer_version: "0".into(),
        sources: vec![IndexSource {
            name: "cfg".into(),
            kind: "file".into(),
            position: None,
        }],
        object: IndexObject {
            key: id.object_key(),
            size: out.len() as u64,
            sha256: hex::encode(Sha256::digest(&out)),
            plain_size: None,
        },
        compression: "none".into(),
        encryption: IndexEncryption {
            scheme: "age".into(),
            mode: "recipients".into(),
            recipients: vec![],
        },
        chunks: None,
    };
    (out, index)
}

#[test]
fn forged_bundles_are_refused() {
    let (k, ids, _d) = key();
    let id = SnapshotId::new(jiff::Timestamp::now());
    type Forged<'a> = Vec<(&'a str, tar::EntryType, &'a [u8])>;
    let cases: Vec<(&str, Forged)> = vec![
        (
            "dotdot",
            vec![("files/cfg/../../etc/passwd", tar::EntryType::Regular, b"x")],
        ),
        ("absolute", vec![("/etc/passwd", tar::EntryType::Regular, b"x")]),
        (
            "unknown source",
            vec![("files/other/a", tar::EntryType::Regular, b"x")],
        ),
        ("unknown area", vec![("bin/cfg/a", tar::EntryType::Regular, b"x")]),
        (
            "hard link",
            vec![("files/cfg/a", tar::EntryType::Link, b"/etc/shadow")],
        ),
        (
            "no manifest",
            vec![("files/cfg/a", tar::EntryType::Regular, b"x")],
        ),
    ];
    for (what, entries) in cases {
        let (bundle, index) = forge(&k, &id, &id, &entries);
        let err = read_bundle(&bundle[..], &index, &ids, &mut CheckOnly).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{what}: {err}");
    }
    // A bundle of another snapshot paired with this index.
    let other = SnapshotId::new(jiff::Timestamp::now());
    let (bundle, index) = forge(&k, &id, &other, &[]);
    let err = read_bundle(&bundle[..], &index, &ids, &mut CheckOnly).unwrap_err();
    assert!(err.to_string().contains("belongs to snapshot"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_ciphertext_fails_even_with_a_matching_index() {
    let (k, ids, _d) = key();
    let src = Arc::new(MemSource {
        name: "mem".into(),
        files: vec![("a".into(), noise(300_000, 5))],
        fail_after: None,
    });
    let sink = Arc::new(MemorySink::new());
    let out = run_backup(
        request(&k, vec![src], vec![target("s", sink.clone(), true)]),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let obj = sink.get_bytes(&out.index.id.object_key()).await.unwrap();
    // An attacker who can rewrite the index too: truncate at an age chunk boundary.
    let cut: Bytes = obj.slice(..obj.len() - 70_000);
    let mut index = out.index.clone();
    index.object.size = cut.len() as u64;
    index.object.sha256 = hex::encode(Sha256::digest(&cut));
    let err = read_bundle(&cut[..], &index, &ids, &mut CheckOnly).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Integrity), "{err:?}");
    // Reading the bytes of a good bundle twice gives the same result (no hidden state).
    let mut r = &obj[..];
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    read_bundle(&all[..], &out.index, &ids, &mut CheckOnly).unwrap();
}

/// Records what a bundle holds: (area, secret, path, mode, content).
#[derive(Default)]
struct Recorder(Vec<(Area, String, u32, Vec<u8>)>);

impl coffer_core::pipeline::BundleVisitor for Recorder {
    fn sources(&mut self, _: &coffer_core::format::SourcesFile) -> Result<()> {
        Ok(())
    }
    fn entry(&mut self, _: &str, e: coffer_core::RestoreEntry<'_>) -> Result<()> {
        let mut data = Vec::new();
        e.reader.read_to_end(&mut data).unwrap();
        self.0.push((e.area.clone(), e.path.to_string(), e.mode, data));
        Ok(())
    }
}

/// Backs up one [`MemSource`] named `name` with `files` to memory and
/// reads the bundle back through a [`Recorder`].
async fn back_up_and_read(
    name: &str,
    files: Vec<(String, Vec<u8>)>,
) -> (coffer_core::ops::BundleSummary, Recorder) {
    let (k, ids, _d) = key();
    let src = Arc::new(MemSource {
        name: name.into(),
        files,
        fail_after: None,
    });
    let sink = Arc::new(MemorySink::new());
    let out = run_backup(
        request(&k, vec![src], vec![target("a", sink.clone(), true)]),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let obj = sink.get_bytes(&out.index.id.object_key()).await.unwrap();
    let mut seen = Recorder::default();
    let summary = read_bundle(&obj[..], &out.index, &ids, &mut seen).unwrap();
    (summary, seen)
}

/// Files are hashed on a thread of their own on both sides, in order;
/// directories and links between them (before, between and after files,
/// and a file over one hashing block) must not shift which digest belongs
/// to which file.
#[tokio::test(flavor = "multi_thread")]
async fn files_between_directories_and_links_verify_and_read_back() {
    let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    let entries: Vec<(String, Vec<u8>)> = [
        ("d/", &b""[..]),
        ("d/l->../e/b", b""),
        ("d/a", &big[..]),
        ("e/", b""),
        ("e/b", b"BB"),
        ("e/empty", b""),
        ("f/", b""),
        ("f/m->d", b""),
    ]
    .iter()
    .map(|(p, d)| (p.to_string(), d.to_vec()))
    .collect();
    let (summary, seen) = back_up_and_read("mixed", entries).await;
    assert_eq!(summary.files_checked, 3);
    let sums: Vec<(&str, u64)> = summary
        .manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e.size))
        .collect();
    assert_eq!(
        sums,
        [
            ("files/mixed/d/a", 2_500_000),
            ("files/mixed/e/b", 2),
            ("files/mixed/e/empty", 0)
        ]
    );
    let data = |p: &str| seen.0.iter().find(|e| e.1 == p).map(|e| e.3.clone()).unwrap();
    assert!(data("d/a") == big);
    assert_eq!(data("e/b"), b"BB");
    assert_eq!(seen.0.len(), 8, "every entry reached the visitor");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_declared_area_round_trips_and_a_secret_one_is_private() {
    // A plugin declares its own bundle folder without any change to core.
    let vault = Area::new("vault", true).unwrap();
    assert_eq!(vault.dir(), "vault");
    assert!(vault.is_secret());
    assert_eq!(Area::new("secrets", false).unwrap(), Area::Secrets);
    assert!(
        Area::new("secrets", false).unwrap().is_secret(),
        "a built-in keeps its secrecy"
    );
    for bad in ["", "Vault", "a/b", "..", "-x", "manifest.json", &"x".repeat(33)] {
        let e = Area::new(bad, false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{bad}");
    }

    let files = vec![("root-token".to_string(), b"hvs.s3cr3t".to_vec())];
    let (summary, seen) = back_up_and_read("vault-main", files).await;
    assert_eq!(summary.files_checked, 1);
    assert!(
        summary
            .manifest
            .entries
            .iter()
            .any(|e| e.path == "vault/vault-main/root-token")
    );
    // The source said 0644; a secret area stores 0600 whatever it says.
    assert_eq!(seen.0.len(), 1);
    let (area, path, mode, data) = &seen.0[0];
    assert_eq!(area, &vault);
    assert_eq!(
        (path.as_str(), mode & 0o777, data.as_slice()),
        ("root-token", 0o600, &b"hvs.s3cr3t"[..])
    );
}

/// A kind whose deep check counts entries against the manifest's summary
/// (`N files`), or refuses everything.
struct MemKind {
    refuse: bool,
}

struct CountCheck {
    seen: u64,
    refuse: bool,
}

impl coffer_core::EntryCheck for CountCheck {
    fn entry(&mut self, _: coffer_core::RestoreEntry<'_>) -> Result<()> {
        self.seen += 1;
        Ok(())
    }
    fn finish(self: Box<Self>, manifest: &coffer_core::format::ManifestSource) -> Result<()> {
        if self.refuse || manifest.report.summary != format!("{} files", self.seen) {
            return Err(coffer_core::Error::new(
                ErrorKind::Integrity,
                "entry count differs",
            ));
        }
        Ok(())
    }
}

impl coffer_core::SourceFactory for MemKind {
    fn kind(&self) -> &'static str {
        "mem"
    }
    fn from_config(
        &self,
        _: &str,
        _: coffer_core::toml::Table,
        _: &std::path::Path,
    ) -> Result<Arc<dyn Source>> {
        unimplemented!("not used here")
    }
    fn from_spec(&self, _: &str, _: &str) -> Result<Arc<dyn Source>> {
        unimplemented!("not used here")
    }
    fn from_origin(&self, _: &str, _: &serde_json::Value) -> Result<Arc<dyn Source>> {
        unimplemented!("not used here")
    }
    fn entry_check(&self) -> Option<Box<dyn coffer_core::EntryCheck>> {
        Some(Box::new(CountCheck {
            seen: 0,
            refuse: self.refuse,
        }))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_deep_runs_the_entry_check_a_kind_declares() {
    use coffer_core::ops::{Pick, VerifyRequest, verify_sink};
    let (k, ids, _d) = key();
    let src = Arc::new(MemSource {
        name: "m".into(),
        files: vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
        fail_after: None,
    });
    let sink = Arc::new(MemorySink::new());
    run_backup(
        request(&k, vec![src], vec![target("a", sink.clone(), true)]),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let trusted = coffer_core::keys::TrustedSigners::default();
    let ids = Arc::new(ids);
    for refuse in [false, true] {
        let mut registry = coffer_core::Registry::new();
        registry.register_source(Arc::new(MemKind { refuse }));
        let req = VerifyRequest {
            pick: Pick::One("latest".into()),
            identities: Some(ids.clone()),
            trusted: &trusted,
            registry: &registry,
            progress: Arc::new(Progress::default()),
        };
        let mut seen = Vec::new();
        let done = verify_sink("a", sink.as_ref(), &req, &mut |r, e| {
            seen.push((r.ok, e.map(|e| e.kind())))
        })
        .await
        .unwrap();
        assert_eq!(done.results.len(), 1);
        if refuse {
            assert_eq!(seen, [(false, Some(ErrorKind::Integrity))]);
            let msg = &done.results[0].error.as_ref().unwrap().message;
            assert!(
                msg.contains("source `m`") && msg.contains("entry count differs"),
                "{msg}"
            );
        } else {
            assert_eq!(seen, [(true, None)]);
            assert_eq!(done.results[0].files_checked, Some(2));
        }
    }
}

/// A sink that takes 1 MiB a second (a slow link), else a memory sink.
#[derive(Debug)]
struct SlowSink(MemorySink);

#[async_trait]
impl Sink for SlowSink {
    fn info(&self) -> SinkInfo {
        SinkInfo::new("slow", "a slow link")
    }
    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<u64> {
        let slow = body
            .then(|chunk| async move {
                if let Ok(c) = &chunk {
                    tokio::time::sleep(std::time::Duration::from_secs_f64(
                        c.len() as f64 / (1 << 20) as f64,
                    ))
                    .await;
                }
                chunk
            })
            .boxed();
        self.0.put(key, slow, opts).await
    }
    async fn get(&self, key: &str) -> Result<ByteStream> {
        self.0.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.0.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.0.delete(key).await
    }
}

/// A backup of a 48 MiB file in `format` to a local sink alone, then to a
/// local sink beside an optional one that writes at 1 MiB/s (48 s for the
/// whole file): the second run's outcome and sinks, and both wall times.
struct BesideSlow {
    out: coffer_core::ops::BackupOutcome,
    local: Arc<MemorySink>,
    slow: Arc<SlowSink>,
    local_only: std::time::Duration,
    with_slow: std::time::Duration,
}

async fn beside_a_slow_optional_sink(
    k: &GeneratedKey,
    format: coffer_core::chunked::SnapshotFormat,
) -> BesideSlow {
    let files = vec![("big.bin".to_string(), noise(48 << 20, 11))];
    let src = || {
        Arc::new(MemSource {
            name: "mem".into(),
            files: files.clone(),
            fail_after: None,
        }) as Arc<dyn Source>
    };
    let dedup = Arc::new(coffer_core::chunked::DedupKey::generate());
    let run = |sinks: Vec<SinkTarget>| {
        let mut req = request(k, vec![src()], sinks);
        req.dedup_key = Some(dedup.clone());
        run_backup(req, Arc::new(Progress::default()))
    };
    let with_format = |name: &str, sink: Arc<dyn Sink>, required: bool| SinkTarget {
        format,
        ..target(name, sink, required)
    };
    let started = std::time::Instant::now();
    run(vec![with_format("local", Arc::new(MemorySink::new()), true)])
        .await
        .unwrap();
    let local_only = started.elapsed();
    let local = Arc::new(MemorySink::new());
    let slow = Arc::new(SlowSink(MemorySink::new()));
    let started = std::time::Instant::now();
    let out = run(vec![
        with_format("local", local.clone(), true),
        with_format("slow", slow.clone(), false),
    ])
    .await
    .unwrap();
    BesideSlow {
        out,
        local,
        slow,
        local_only,
        with_slow: started.elapsed(),
    }
}

/// The error of the run's slow optional sink, which failed, while every
/// required sink stored the snapshot.
fn slow_sink_error(out: &coffer_core::ops::BackupOutcome) -> String {
    assert!(out.required_ok());
    let failed = out.sinks.iter().find(|s| s.name == "slow").unwrap();
    failed.result.as_ref().unwrap_err().to_string()
}

/// An optional sink that writes at 1 MiB/s never paces the others: once it
/// is a bounded buffer behind it is dropped from the run (its put fails,
/// nothing is stored there), and the run takes about as long as without
/// it (a 48 MiB object would take 48 s through it).
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_optional_sink_is_dropped_instead_of_pacing_the_run() {
    let (k, ids, _d) = key();
    let BesideSlow {
        out,
        local,
        slow,
        local_only,
        with_slow,
    } = beside_a_slow_optional_sink(&k, Default::default()).await;
    let err = slow_sink_error(&out);
    assert!(err.contains("fell more than"), "{err}");
    assert!(
        slow.0.keys().is_empty(),
        "a partial object on the slow sink: {:?}",
        slow.0.keys()
    );
    // Within 1.2x of the local-only run (plus 0.2 s for a debug build's
    // noise on a shared machine): it did not wait for 48 s of slow writes.
    assert!(
        with_slow.as_secs_f64() <= local_only.as_secs_f64() * 1.2 + 0.2,
        "local only {local_only:?}, beside a slow optional sink {with_slow:?}"
    );
    let obj = local.get_bytes(&out.index.id.object_key()).await.unwrap();
    read_bundle(&obj[..], &out.index, &ids, &mut CheckOnly).unwrap();
}

/// The same for a chunked optional sink: once its packer is a bounded
/// number of chunks behind, it is dropped (no chunk list or index is
/// stored there) and the chunked run beside it is not paced by it.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_optional_chunked_sink_is_dropped_instead_of_pacing_the_run() {
    let (k, _ids, _d) = key();
    let BesideSlow {
        out,
        local,
        slow,
        local_only,
        with_slow,
    } = beside_a_slow_optional_sink(&k, coffer_core::chunked::SnapshotFormat::Chunked).await;
    let err = slow_sink_error(&out);
    assert!(err.contains("chunks behind"), "{err}");
    // No snapshot there: no index and no chunk list (packs it stored
    // before it was dropped are the next prune's to remove).
    assert!(
        !slow
            .0
            .keys()
            .iter()
            .any(|k| k.ends_with(".json") || k.ends_with(coffer_core::chunked::CHUNKS_SUFFIX)),
        "a snapshot on the slow sink: {:?}",
        slow.0.keys()
    );
    assert!(
        with_slow.as_secs_f64() <= local_only.as_secs_f64() * 1.2 + 0.3,
        "local only {local_only:?}, beside a slow optional chunked sink {with_slow:?}"
    );
    coffer_core::chunked::verify_chunks(local.as_ref(), &out.index, None)
        .await
        .unwrap();
}

/// What the restorers of [`KindSource`]s were given: (kind, its options).
type SeenOptions = Arc<std::sync::Mutex<Vec<(String, std::collections::BTreeMap<String, String>)>>>;

/// A source of one file, of its own kind; its restorer notes the options
/// it reads.
#[derive(Debug)]
struct KindSource {
    kind: &'static str,
    seen: SeenOptions,
}

struct Discard;

impl Restorer for Discard {
    fn entry(&mut self, _: coffer_core::RestoreEntry<'_>) -> Result<()> {
        Ok(())
    }
    fn finish(self: Box<Self>, _: bool) -> Result<coffer_core::RestoreReport> {
        Ok(Default::default())
    }
}

#[async_trait]
impl Source for KindSource {
    fn info(&self) -> SourceInfo {
        SourceInfo::new(self.kind, self.kind, "memory", serde_json::json!({}))
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn capture(&self, _: &CaptureContext, out: EntrySender) -> Result<SourceReport> {
        out.send(Entry {
            area: Area::Files,
            path: "f".into(),
            mode: 0o644,
            mtime: 1_700_000_000,
            owner: None,
            stat: None,
            body: EntryBody::File {
                size: 1,
                reader: Box::new(Cursor::new(b"x".to_vec())),
            },
        })
        .await?;
        Ok(SourceReport::default())
    }
    async fn restore(&self, opts: &RestoreOptions) -> Result<Box<dyn Restorer>> {
        let own = opts.own().clone();
        assert!(
            opts.kinds().all(|k| k == self.kind),
            "{}'s restorer sees another kind's options: {:?}",
            self.kind,
            opts.params
        );
        self.seen.lock().unwrap().push((self.kind.to_string(), own));
        Ok(Box::new(Discard))
    }
}

/// Restore options are keyed by kind: each restorer reads its own kind's
/// and never another's (a drill's `ns-*` options for MongoDB never reach a
/// file restorer), even where two kinds name an option alike.
#[tokio::test(flavor = "multi_thread")]
async fn each_restorer_reads_only_its_own_kinds_options() {
    let (k, ids, _d) = key();
    let seen = SeenOptions::default();
    let sources: Vec<Arc<dyn Source>> = ["alpha", "beta", "gamma"]
        .into_iter()
        .map(|kind| {
            Arc::new(KindSource {
                kind,
                seen: seen.clone(),
            }) as Arc<dyn Source>
        })
        .collect();
    let by_name: std::collections::HashMap<String, Arc<dyn Source>> = sources
        .iter()
        .map(|s| (s.info().name.clone(), s.clone()))
        .collect();
    let sink = Arc::new(MemorySink::new());
    let out = run_backup(
        request(&k, sources, vec![target("a", sink.clone(), true)]),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();

    let mut opts = RestoreOptions::default();
    opts.params.insert("alpha", "drop", "true");
    opts.params.insert("alpha", "ns-from", "*.*");
    opts.params.insert("beta", "drop", "false");
    let input = coffer_core::pipeline::RestoreInput::open(
        sink.as_ref(),
        &out.index,
        None,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let resolve: coffer_core::pipeline::SourceResolver =
        Box::new(move |rec: &coffer_core::format::SourceRecord| Ok(by_name.get(&rec.name).cloned()));
    let (index, handle) = (out.index.clone(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || {
        coffer_core::pipeline::restore_bundle(input, &index, &ids, resolve, opts, handle)
    })
    .await
    .unwrap()
    .unwrap();

    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let text = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        seen,
        vec![
            ("alpha".into(), text(&[("drop", "true"), ("ns-from", "*.*")])),
            ("beta".into(), text(&[("drop", "false")])),
            ("gamma".into(), text(&[])),
        ]
    );
}

//! Conformance kit: the cases every [`Sink`] and [`Source`] plugin must
//! pass, plus [`MemorySink`], an in-memory sink for tests.
//!
//! Compiled only with the `testkit` cargo feature. A plugin crate adds
//! `coffer-core = { workspace = true, features = ["testkit"] }` to its
//! dev-dependencies and runs the suites from an integration test:
//!
//! ```no_run
//! # async fn demo(sink: &dyn coffer_core::Sink, source: &dyn coffer_core::Source) {
//! use coffer_core::testkit::{sink_suite, source_suite};
//!
//! sink_suite(sink).await;
//! let target = tempfile::tempdir().unwrap();
//! let entries = source_suite(source, &target.path().join("restore")).await;
//! assert!(!entries.is_empty());
//! # }
//! ```
//!
//! The suites panic, naming the failed case, on the first violation of the
//! trait contracts. [`sink_suite`] works under a random `testkit-<hex>/`
//! prefix so it can run against a shared bucket, and deletes what it wrote
//! even when a case fails. File bodies and restorers run on blocking
//! threads (`spawn_blocking`), as in production.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::stream::{self, StreamExt, TryStreamExt};
use jiff::Timestamp;

use crate::error::{Error, ErrorKind, Result};
use crate::sink::{ByteStream, ObjectMeta, PutMode, PutOptions, Sink, SinkExt, SinkInfo, validate_key};
use crate::source::{
    Area, CaptureContext, EntryBody, EntrySender, RestoreEntry, RestoreEntryKind, RestoreOptions,
    RestoreReport, Restorer, Source, check_relative_path,
};

// ---------------------------------------------------------------------------
// Sink suite
// ---------------------------------------------------------------------------

/// How long the "dropped put" case lets a put run before dropping it.
const DROP_AFTER: Duration = Duration::from_millis(500);

/// Every file under `dir` (recursively) named like a put's temporary file
/// ([`crate::fsutil::TEMP_PREFIX`]): what a file-based sink must not leave
/// behind.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else if e
                .file_name()
                .to_string_lossy()
                .starts_with(crate::fsutil::TEMP_PREFIX)
            {
                out.push(e.path());
            }
        }
    }
    out
}

/// Runs every sink conformance case against `sink`, panicking with the name
/// of the first case that fails.
///
/// Cases: invalid keys are rejected; empty and multi-MiB objects round-trip;
/// odd key names (spaces, unicode); prefix listing; missing keys and
/// deletes; a body that fails half-way, or a put dropped half-way, leaves
/// nothing new visible and keeps an existing object intact;
/// [`PutMode::Create`] and [`PutMode::Overwrite`]; concurrent puts;
/// read-after-write listing; and, when [`SinkInfo::atomic_create`] is set,
/// racing create-only puts of one key.
///
/// Everything is written under a fresh `testkit-<random>/` prefix, which is
/// deleted at the end, also when a case panics.
pub async fn sink_suite(sink: &dyn Sink) {
    sink_suite_skipping(sink, &[]).await
}

/// [`sink_suite`] without the cases named in `skip` (e.g. `"odd key
/// names"`), for a test server with a known bug outside the plugin; the
/// caller says why next to the call. Every other case runs as usual.
pub async fn sink_suite_skipping(sink: &dyn Sink, skip: &[&str]) {
    let base = format!("testkit-{:016x}/", rand::random::<u64>());
    let outcome = AssertUnwindSafe(run_sink_cases(sink, &base, skip))
        .catch_unwind()
        .await;
    let cleanup = cleanup_prefix(sink, &base).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    if let Err(e) = cleanup {
        panic!("sink_suite: case `cleanup`: {e:?}");
    }
    let left = list(sink, "cleanup", &base).await;
    assert!(
        left.is_empty(),
        "sink_suite: case `cleanup`: objects left after deleting them all: {left:?}"
    );
}

async fn run_sink_cases(sink: &dyn Sink, base: &str, skip: &[&str]) {
    case_invalid_keys(sink, base).await;
    case_empty_object(sink, base).await;
    case_large_object(sink, base).await;
    if skip.contains(&"odd key names") {
        eprintln!("sink_suite: case `odd key names` skipped by the caller");
    } else {
        case_odd_keys(sink, base).await;
    }
    case_prefix_listing(sink, base).await;
    case_missing_and_delete(sink, base).await;
    case_failed_stream(sink, base).await;
    case_failed_stream_keeps_existing(sink, base).await;
    case_dropped_put(sink, base).await;
    case_create_mode(sink, base).await;
    case_overwrite_mode(sink, base).await;
    case_concurrent_puts(sink, base).await;
    if sink.info().atomic_create {
        case_racing_creates(sink, base).await;
    }
    case_list_after_put(sink, base).await;
}

async fn cleanup_prefix(sink: &dyn Sink, base: &str) -> Result<()> {
    for obj in sink.list(base).await? {
        sink.delete(&obj.key).await?;
    }
    Ok(())
}

async fn case_invalid_keys(sink: &dyn Sink, _base: &str) {
    const CASE: &str = "invalid keys are rejected";
    for key in ["../x", "/abs", "a/../../x", "", "a//b", "trailing/"] {
        let res = sink.put(key, body_of(b"nope", 2), PutOptions::default()).await;
        assert!(res.is_err(), "sink_suite: case `{CASE}`: put({key:?}) succeeded");
        assert!(
            sink.get(key).await.is_err(),
            "sink_suite: case `{CASE}`: get({key:?}) succeeded"
        );
        assert!(
            sink.delete(key).await.is_err(),
            "sink_suite: case `{CASE}`: delete({key:?}) succeeded"
        );
    }
}

async fn case_empty_object(sink: &dyn Sink, base: &str) {
    const CASE: &str = "empty object";
    let key = format!("{base}empty");
    let n = expect_ok(
        CASE,
        sink.put(&key, stream::empty().boxed(), PutOptions::default())
            .await,
    );
    assert_eq!(
        n, 0,
        "sink_suite: case `{CASE}`: put returned {n} bytes for an empty body"
    );
    assert_content(sink, CASE, &key, b"").await;
    assert_listed(sink, CASE, &key, 0).await;
}

async fn case_large_object(sink: &dyn Sink, base: &str) {
    const CASE: &str = "multi-MiB object streamed in chunks";
    let key = format!("{base}large/5mib.coffer");
    let data = pattern(5 * 1024 * 1024 + 17, 1);
    let n = expect_ok(
        CASE,
        sink.put(&key, body_of(&data, 64 * 1024 + 3), PutOptions::default())
            .await,
    );
    assert_eq!(
        n,
        data.len() as u64,
        "sink_suite: case `{CASE}`: put returned the wrong size"
    );
    let got = get_all(sink, CASE, &key).await;
    assert!(
        got == data,
        "sink_suite: case `{CASE}`: get returned {} bytes that differ from the {} bytes put",
        got.len(),
        data.len()
    );
    assert_listed(sink, CASE, &key, data.len() as u64).await;
}

async fn case_odd_keys(sink: &dyn Sink, base: &str) {
    const CASE: &str = "odd key names";
    let keys = [
        "dir with space/ünïcødé 名前.json",
        "sp ace",
        "sym+bols=1,2;x@y!~(z)'q'.bin",
        "percent%20not-decoded",
        "deep/a/b/c/d/e.txt",
        ".dotfile",
    ];
    for (i, k) in keys.iter().enumerate() {
        let key = format!("{base}odd/{k}");
        let data = format!("content of {k}").into_bytes();
        expect_ok(
            CASE,
            sink.put(&key, body_of(&data, 5), PutOptions::default()).await,
        );
        assert_content(sink, CASE, &key, &data).await;
        let listed = list(sink, CASE, &format!("{base}odd/")).await;
        assert_eq!(
            listed.len(),
            i + 1,
            "sink_suite: case `{CASE}`: after putting {key:?}, list shows {listed:?}"
        );
        assert_listed(sink, CASE, &key, data.len() as u64).await;
    }
}

async fn case_prefix_listing(sink: &dyn Sink, base: &str) {
    const CASE: &str = "prefix listing";
    let p = format!("{base}prefix/");
    let objects: BTreeMap<String, u64> = [
        ("a/1", 1u64),
        ("a/2", 22),
        ("a/sub/3", 333),
        ("a/sub/deeper/4", 4444),
        ("ab/5", 5),
        ("b/6", 6),
        ("top", 7),
    ]
    .into_iter()
    .map(|(k, n)| (format!("{p}{k}"), n))
    .collect();
    for (key, size) in &objects {
        let data = pattern(*size as usize, 7);
        expect_ok(
            CASE,
            sink.put(key, body_of(&data, 100), PutOptions::default()).await,
        );
    }
    let expect = |filter: &str| -> BTreeMap<String, u64> {
        objects
            .iter()
            .filter(|(k, _)| k.starts_with(filter))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    for filter in [
        format!("{p}a/"),
        format!("{p}a"),
        format!("{p}a/sub/"),
        format!("{p}b/"),
        format!("{p}top"),
        p.clone(),
    ] {
        let got: BTreeMap<String, u64> = list(sink, CASE, &filter)
            .await
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        assert_eq!(
            got,
            expect(&filter),
            "sink_suite: case `{CASE}`: list({filter:?})"
        );
    }
    let none = list(sink, CASE, &format!("{p}nothing-here/")).await;
    assert!(
        none.is_empty(),
        "sink_suite: case `{CASE}`: list of an empty prefix gave {none:?}"
    );
    // `""` lists everything, recursively (other objects of a shared bucket too).
    let all: BTreeMap<String, u64> = list(sink, CASE, "")
        .await
        .into_iter()
        .filter(|o| o.key.starts_with(&p))
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(
        all, objects,
        "sink_suite: case `{CASE}`: list(\"\") must list every object"
    );
}

async fn case_missing_and_delete(sink: &dyn Sink, base: &str) {
    const CASE: &str = "missing keys and delete";
    let missing = format!("{base}missing/never-written");
    assert_not_found(sink, CASE, &missing).await;
    if let Err(e) = sink.delete(&missing).await {
        panic!("sink_suite: case `{CASE}`: delete of a missing key failed: {e:?}");
    }
    let key = format!("{base}missing/deleted");
    expect_ok(
        CASE,
        sink.put_bytes(&key, Bytes::from_static(b"bye"), PutOptions::default())
            .await,
    );
    assert_content(sink, CASE, &key, b"bye").await;
    expect_ok(CASE, sink.delete(&key).await);
    assert_not_found(sink, CASE, &key).await;
    assert_not_listed(sink, CASE, &key).await;
    if let Err(e) = sink.delete(&key).await {
        panic!("sink_suite: case `{CASE}`: second delete of the same key failed: {e:?}");
    }
}

async fn case_failed_stream(sink: &dyn Sink, base: &str) {
    const CASE: &str = "body failing half-way leaves nothing";
    let before = list_keys_under(sink, CASE, base).await;
    for mode in [PutMode::Overwrite, PutMode::Create] {
        let key = format!("{base}failed/{mode:?}.coffer");
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        let res = sink
            .put(&key, failing_body(&pattern(300 * 1024, 3), 64 * 1024), opts)
            .await;
        assert!(
            res.is_err(),
            "sink_suite: case `{CASE}`: put with a failing body returned {res:?}"
        );
        assert_not_found(sink, CASE, &key).await;
        assert_not_listed(sink, CASE, &key).await;
    }
    let after = list_keys_under(sink, CASE, base).await;
    assert_eq!(
        before, after,
        "sink_suite: case `{CASE}`: failed puts left stray objects"
    );
}

async fn case_failed_stream_keeps_existing(sink: &dyn Sink, base: &str) {
    const CASE: &str = "body failing half-way keeps the existing object";
    let key = format!("{base}failed-existing/obj");
    let old = pattern(70 * 1024, 11);
    expect_ok(
        CASE,
        sink.put(&key, body_of(&old, 16 * 1024), PutOptions::default())
            .await,
    );
    let res = sink
        .put(
            &key,
            failing_body(&pattern(200 * 1024, 12), 32 * 1024),
            PutOptions::default(),
        )
        .await;
    assert!(
        res.is_err(),
        "sink_suite: case `{CASE}`: put with a failing body returned {res:?}"
    );
    assert_content(sink, CASE, &key, &old).await;
    assert_listed(sink, CASE, &key, old.len() as u64).await;
}

async fn case_dropped_put(sink: &dyn Sink, base: &str) {
    const CASE: &str = "put dropped half-way leaves nothing";
    let before = list_keys_under(sink, CASE, base).await;
    let key = format!("{base}dropped/new");
    let res = tokio::time::timeout(
        DROP_AFTER,
        sink.put(
            &key,
            hanging_body(&pattern(200 * 1024, 4), 64 * 1024),
            PutOptions::default(),
        ),
    )
    .await;
    assert!(
        res.is_err(),
        "sink_suite: case `{CASE}`: put returned {res:?} before its body ended"
    );
    assert_not_found(sink, CASE, &key).await;
    assert_not_listed(sink, CASE, &key).await;

    let existing = format!("{base}dropped/existing");
    let old = b"old content".to_vec();
    expect_ok(
        CASE,
        sink.put(&existing, body_of(&old, 4), PutOptions::default()).await,
    );
    let res = tokio::time::timeout(
        DROP_AFTER,
        sink.put(
            &existing,
            hanging_body(&pattern(200 * 1024, 5), 64 * 1024),
            PutOptions::default(),
        ),
    )
    .await;
    assert!(
        res.is_err(),
        "sink_suite: case `{CASE}`: put returned {res:?} before its body ended"
    );
    assert_content(sink, CASE, &existing, &old).await;

    let mut expected = before;
    expected.insert(existing);
    let after = list_keys_under(sink, CASE, base).await;
    assert_eq!(
        expected, after,
        "sink_suite: case `{CASE}`: dropped puts left stray objects"
    );
}

async fn case_create_mode(sink: &dyn Sink, base: &str) {
    const CASE: &str = "PutMode::Create";
    let key = format!("{base}create/index.json");
    let n = expect_ok(
        CASE,
        sink.put(&key, body_of(b"first", 2), PutOptions::create()).await,
    );
    assert_eq!(n, 5, "sink_suite: case `{CASE}`: put returned the wrong size");
    assert_content(sink, CASE, &key, b"first").await;
    match sink
        .put(&key, body_of(b"second, longer", 3), PutOptions::create())
        .await
    {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        other => panic!("sink_suite: case `{CASE}`: create over an existing key gave {other:?}"),
    }
    assert_content(sink, CASE, &key, b"first").await;
    assert_listed(sink, CASE, &key, 5).await;
    // Create-only succeeds again once the key is gone.
    expect_ok(CASE, sink.delete(&key).await);
    expect_ok(
        CASE,
        sink.put(&key, body_of(b"third", 2), PutOptions::create()).await,
    );
    assert_content(sink, CASE, &key, b"third").await;
}

async fn case_overwrite_mode(sink: &dyn Sink, base: &str) {
    const CASE: &str = "PutMode::Overwrite";
    let key = format!("{base}overwrite/lock");
    let long = pattern(100 * 1024, 8);
    expect_ok(
        CASE,
        sink.put(&key, body_of(&long, 10_000), PutOptions::default())
            .await,
    );
    assert_content(sink, CASE, &key, &long).await;
    expect_ok(
        CASE,
        sink.put(&key, body_of(b"short", 2), PutOptions::default()).await,
    );
    assert_content(sink, CASE, &key, b"short").await;
    assert_listed(sink, CASE, &key, 5).await;
    expect_ok(
        CASE,
        sink.put(&key, body_of(&long, 7_000), PutOptions::default()).await,
    );
    assert_content(sink, CASE, &key, &long).await;
    assert_listed(sink, CASE, &key, long.len() as u64).await;
}

async fn case_concurrent_puts(sink: &dyn Sink, base: &str) {
    const CASE: &str = "concurrent puts";
    let p = format!("{base}concurrent/");
    let items: Vec<(String, Vec<u8>)> = (0..8u8)
        .map(|i| (format!("{p}{i}.coffer"), pattern(256 * 1024 + i as usize, 20 + i)))
        .collect();
    let puts = items
        .iter()
        .map(|(key, data)| sink.put(key, body_of(data, 32 * 1024), PutOptions::create()));
    for (res, (key, _)) in futures::future::join_all(puts).await.into_iter().zip(&items) {
        if let Err(e) = res {
            panic!("sink_suite: case `{CASE}`: put({key:?}) failed: {e:?}");
        }
    }
    let listed: BTreeMap<String, u64> = list(sink, CASE, &p)
        .await
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let expected: BTreeMap<String, u64> = items.iter().map(|(k, d)| (k.clone(), d.len() as u64)).collect();
    assert_eq!(
        listed, expected,
        "sink_suite: case `{CASE}`: list after concurrent puts"
    );
    for (key, data) in &items {
        assert_content(sink, CASE, key, data).await;
    }
}

async fn case_racing_creates(sink: &dyn Sink, base: &str) {
    const CASE: &str = "racing create-only puts of one key (atomic_create)";
    let key = format!("{base}race/snapshot.json");
    let bodies: Vec<Vec<u8>> = (0..4u8).map(|i| pattern(64 * 1024, 40 + i)).collect();
    let puts = bodies
        .iter()
        .map(|d| sink.put(&key, body_of(d, 8 * 1024), PutOptions::create()));
    let results = futures::future::join_all(puts).await;
    let mut winner = None;
    for (i, res) in results.iter().enumerate() {
        match res {
            Ok(_) => {
                assert!(
                    winner.is_none(),
                    "sink_suite: case `{CASE}`: two create-only puts succeeded"
                );
                winner = Some(i);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => panic!("sink_suite: case `{CASE}`: unexpected error {e:?}"),
        }
    }
    let Some(winner) = winner else {
        panic!("sink_suite: case `{CASE}`: no create-only put succeeded");
    };
    assert_content(sink, CASE, &key, &bodies[winner]).await;
}

async fn case_list_after_put(sink: &dyn Sink, base: &str) {
    const CASE: &str = "read-after-write listing";
    for i in 0..5 {
        let key = format!("{base}raw/{i}");
        expect_ok(
            CASE,
            sink.put_bytes(&key, Bytes::from(vec![b'x'; i]), PutOptions::create())
                .await,
        );
        assert_listed(sink, CASE, &key, i as u64).await;
        match sink.head(&key).await {
            Ok(Some(meta)) if meta.size == i as u64 => {}
            other => panic!("sink_suite: case `{CASE}`: head({key:?}) gave {other:?}"),
        }
    }
}

// --- sink helpers ----------------------------------------------------------

fn expect_ok<T>(case: &str, res: Result<T>) -> T {
    match res {
        Ok(v) => v,
        Err(e) => panic!("sink_suite: case `{case}`: unexpected error: {e:?}"),
    }
}

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(seed).wrapping_mul(0x0100_0000_01B3);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn chunks(data: &[u8], chunk: usize) -> Vec<Result<Bytes>> {
    data.chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

fn body_of(data: &[u8], chunk: usize) -> ByteStream {
    stream::iter(chunks(data, chunk)).boxed()
}

/// Yields the first half of `data`, then an error.
fn failing_body(data: &[u8], chunk: usize) -> ByteStream {
    let mut items = chunks(&data[..data.len() / 2], chunk);
    items.push(Err(Error::new(
        ErrorKind::Unexpected,
        "testkit: injected body failure",
    )));
    stream::iter(items).boxed()
}

/// Yields `data`, then never ends.
fn hanging_body(data: &[u8], chunk: usize) -> ByteStream {
    stream::iter(chunks(data, chunk)).chain(stream::pending()).boxed()
}

async fn get_all(sink: &dyn Sink, case: &str, key: &str) -> Vec<u8> {
    let stream = match sink.get(key).await {
        Ok(s) => s,
        Err(e) => panic!("sink_suite: case `{case}`: get({key:?}) failed: {e:?}"),
    };
    match stream.try_collect::<Vec<Bytes>>().await {
        Ok(parts) => parts.concat(),
        Err(e) => panic!("sink_suite: case `{case}`: reading {key:?} failed: {e:?}"),
    }
}

async fn assert_content(sink: &dyn Sink, case: &str, key: &str, expected: &[u8]) {
    let got = get_all(sink, case, key).await;
    if got != expected {
        let show = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(40)]).into_owned();
        panic!(
            "sink_suite: case `{case}`: get({key:?}) returned {} bytes ({:?}…), expected {} bytes ({:?}…)",
            got.len(),
            show(&got),
            expected.len(),
            show(expected)
        );
    }
}

async fn assert_not_found(sink: &dyn Sink, case: &str, key: &str) {
    match sink.get(key).await {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => panic!("sink_suite: case `{case}`: get({key:?}) should be NotFound, got {e:?}"),
        Ok(s) => {
            let n = s.try_collect::<Vec<Bytes>>().await.map(|v| v.concat().len());
            panic!(
                "sink_suite: case `{case}`: get({key:?}) should be NotFound, but an object exists ({n:?} bytes)"
            )
        }
    }
}

async fn list(sink: &dyn Sink, case: &str, prefix: &str) -> Vec<ObjectMeta> {
    let objects = match sink.list(prefix).await {
        Ok(v) => v,
        Err(e) => panic!("sink_suite: case `{case}`: list({prefix:?}) failed: {e:?}"),
    };
    let mut seen = BTreeSet::new();
    for o in &objects {
        assert!(
            o.key.starts_with(prefix),
            "sink_suite: case `{case}`: list({prefix:?}) returned {:?} outside the prefix",
            o.key
        );
        assert!(
            seen.insert(o.key.as_str()),
            "sink_suite: case `{case}`: list({prefix:?}) returned {:?} twice",
            o.key
        );
    }
    objects
}

async fn list_keys_under(sink: &dyn Sink, case: &str, prefix: &str) -> BTreeSet<String> {
    list(sink, case, prefix)
        .await
        .into_iter()
        .map(|o| o.key)
        .collect()
}

async fn assert_listed(sink: &dyn Sink, case: &str, key: &str, size: u64) {
    let parent = key
        .rsplit_once('/')
        .map(|(p, _)| format!("{p}/"))
        .unwrap_or_default();
    let objects = list(sink, case, &parent).await;
    match objects.iter().find(|o| o.key == key) {
        Some(o) => assert_eq!(
            o.size, size,
            "sink_suite: case `{case}`: list({parent:?}) reports the wrong size for {key:?}"
        ),
        None => panic!("sink_suite: case `{case}`: {key:?} is missing from list({parent:?}): {objects:?}"),
    }
}

async fn assert_not_listed(sink: &dyn Sink, case: &str, key: &str) {
    let parent = key
        .rsplit_once('/')
        .map(|(p, _)| format!("{p}/"))
        .unwrap_or_default();
    let objects = list(sink, case, &parent).await;
    assert!(
        !objects.iter().any(|o| o.key == key),
        "sink_suite: case `{case}`: {key:?} is listed but should not exist: {objects:?}"
    );
}

/// A test server a kit case may stop and start again.
pub trait ServerControl: Send {
    /// Stops the server at once (SIGKILL).
    fn kill(&mut self);
    /// Called while the server is down, after the interrupted put failed:
    /// the plugin's own checks of what it left (a temp file, no object).
    fn while_down(&mut self) {}
    /// Starts the server again, ready for the sink (a bucket created …).
    fn restart(&mut self);
}

/// Case `server killed mid-upload`, for remote sinks: a slow upload of
/// 40 MiB (in `chunk`-byte chunks, one each `pace`) is cut by killing the
/// server after `kill_after`; the put must fail within `bound` with
/// [`ErrorKind::Unreachable`], a hint, and nothing visible; once the server
/// is back a new put of the same key succeeds and lists its size. Returns
/// the interrupted put's error for the plugin's own assertions.
pub async fn server_killed_mid_upload(
    sink: std::sync::Arc<dyn Sink>,
    server: &mut dyn ServerControl,
    chunk: usize,
    pace: Duration,
    kill_after: Duration,
    bound: Duration,
) -> Error {
    let data = pattern(40 * 1024 * 1024, 7);
    let slow = body_of(&data, chunk)
        .then(move |c| async move {
            tokio::time::sleep(pace).await;
            c
        })
        .boxed();
    let started = std::time::Instant::now();
    let put = tokio::spawn({
        let sink = sink.clone();
        async move { sink.put("k.coffer", slow, PutOptions::create()).await }
    });
    tokio::time::sleep(kill_after).await;
    server.kill();
    let err = match put.await.expect("the put task") {
        Ok(n) => {
            panic!("server killed mid-upload: the put succeeded ({n} bytes) although the server was killed")
        }
        Err(e) => e,
    };
    let took = started.elapsed();
    assert!(
        took < bound,
        "server killed mid-upload: the put failed only after {took:?}"
    );
    assert_eq!(
        err.kind(),
        ErrorKind::Unreachable,
        "server killed mid-upload: {err:?}"
    );
    assert!(
        err.hint().is_some(),
        "server killed mid-upload: no hint in {err:?}"
    );
    server.while_down();
    server.restart();
    let listed = sink.list("").await.expect("list after the restart");
    assert!(
        listed.is_empty(),
        "server killed mid-upload: a partial object is visible: {listed:?}"
    );
    let small = pattern(2 * 1024 * 1024, 8);
    let n = sink
        .put("k.coffer", body_of(&small, chunk), PutOptions::create())
        .await
        .expect("a new put after the restart");
    assert_eq!(n, small.len() as u64);
    let head = sink
        .head("k.coffer")
        .await
        .expect("head")
        .expect("the new object");
    assert_eq!(
        head.size, n,
        "server killed mid-upload: the rerun's object has the wrong size"
    );
    err
}

// ---------------------------------------------------------------------------
// Source suite
// ---------------------------------------------------------------------------

/// One entry as captured by [`source_suite`], with its body read into
/// memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedEntry {
    /// The bundle folder.
    pub area: Area,
    /// Path relative to `<area>/<source>/`.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// File (with its size), directory or symlink.
    pub kind: RestoreEntryKind,
    /// The whole content of a file entry; empty for others.
    pub data: Vec<u8>,
}

/// Where a [`source_suite_with`] restores to, observed independently of
/// the restorer: a directory read back from disk, collections read back
/// from a server. The suite checks that a dry run and an aborted restore
/// leave the target as it was, and that a committed restore leaves it
/// holding exactly what was captured.
#[async_trait]
pub trait RestoreObserver: Send + Sync {
    /// The options that point the source's restore at this target.
    fn options(&self, dry_run: bool) -> RestoreOptions;

    /// Everything the target holds now, by name (a path, a collection),
    /// as comparable bytes.
    async fn observe(&self) -> std::result::Result<BTreeMap<String, Vec<u8>>, String>;

    /// What the target must hold once `entries` were restored, in the form
    /// of [`RestoreObserver::observe`].
    fn expected(&self, entries: &[CapturedEntry]) -> BTreeMap<String, Vec<u8>>;

    /// Whether two captures of unchanged data carry the same mtimes (files
    /// do; a database dump is stamped with its own time).
    fn stable_mtimes(&self) -> bool {
        true
    }
}

/// How [`DirObserver`] (and other observers with folders) shows a
/// directory: the aborted-restore case lets those stay.
pub const DIR_MARK: &[u8] = b"dir";

/// A directory target: files as `file:` and their content, symlinks as
/// `link:` and their target, directories as [`DIR_MARK`].
#[derive(Debug, Clone)]
pub struct DirObserver {
    /// The directory restored into.
    pub root: PathBuf,
}

#[async_trait]
impl RestoreObserver for DirObserver {
    fn options(&self, dry_run: bool) -> RestoreOptions {
        RestoreOptions {
            target: Some(self.root.clone()),
            dry_run,
            ..RestoreOptions::default()
        }
    }

    async fn observe(&self) -> std::result::Result<BTreeMap<String, Vec<u8>>, String> {
        let mut out = BTreeMap::new();
        for (path, ft) in list_tree(&self.root) {
            let rel = path
                .strip_prefix(&self.root)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned();
            let value = if ft.is_symlink() {
                let t = std::fs::read_link(&path).map_err(|e| e.to_string())?;
                format!("link:{}", t.display()).into_bytes()
            } else if ft.is_dir() {
                DIR_MARK.to_vec()
            } else {
                let mut v = b"file:".to_vec();
                v.extend(std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?);
                v
            };
            out.insert(rel, value);
        }
        Ok(out)
    }

    fn expected(&self, entries: &[CapturedEntry]) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for e in entries {
            // Every parent of an entry exists as a directory.
            let mut parent = Path::new(&e.path).parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                out.entry(p.to_string_lossy().into_owned())
                    .or_insert_with(|| DIR_MARK.to_vec());
                parent = p.parent();
            }
            let value = match &e.kind {
                RestoreEntryKind::File { .. } => [&b"file:"[..], &e.data].concat(),
                RestoreEntryKind::Dir => DIR_MARK.to_vec(),
                RestoreEntryKind::Symlink { target } => format!("link:{target}").into_bytes(),
            };
            out.insert(e.path.clone(), value);
        }
        out
    }
}

/// Runs the source conformance cases against `source`, restoring into the
/// directory `target` (see [`source_suite_with`] and [`DirObserver`]),
/// panicking with the name of the first case that fails, and returns the
/// captured entries for the plugin's own assertions.
///
/// `target` must not exist or be an empty directory; it is left holding
/// the committed restore.
pub async fn source_suite(source: &dyn Source, target: &Path) -> Vec<CapturedEntry> {
    source_suite_with(
        source,
        &DirObserver {
            root: target.to_path_buf(),
        },
    )
    .await
}

/// Runs the source conformance cases against `source`, restoring where
/// `observer` points, and returns the captured entries.
///
/// Cases: `check()` passes; `capture()` succeeds while its entries are
/// drained concurrently, each file body yields exactly its `size`; paths
/// are unique, pass [`check_relative_path`], and secrets are mode 0600; a
/// second capture is identical (mtimes too, unless the observer says the
/// source stamps its entries with the capture time); the target starts
/// empty; a dry-run restore changes nothing and reports what it would do;
/// a restore aborted with `finish(false)` leaves the target as it was; a
/// committed restore reports its actions and leaves the target holding
/// exactly what was captured.
pub async fn source_suite_with(source: &dyn Source, observer: &dyn RestoreObserver) -> Vec<CapturedEntry> {
    let suite = SourceSuite {
        name: source.info().name,
        source,
        observer,
    };
    if !suite.observe().await.is_empty() {
        suite.fail(
            "empty target",
            "the restore target must be empty before the suite".into(),
        );
    }
    if let Err(e) = source.check().await {
        suite.fail("check", format!("check() failed: {e:?}"));
    }
    let entries = match capture_all(source).await {
        Ok(v) => v,
        Err(msg) => suite.fail("capture", msg),
    };
    suite.check_entries(&entries);
    suite.stable_capture(&entries).await;
    suite.dry_run(&entries).await;
    suite.aborted_restore(&entries).await;
    suite.committed_restore(&entries).await;
    entries
}

/// The source under test and where its restores land.
struct SourceSuite<'a> {
    name: String,
    source: &'a dyn Source,
    observer: &'a dyn RestoreObserver,
}

impl SourceSuite<'_> {
    fn fail(&self, case: &str, msg: String) -> ! {
        panic!("source_suite({}): case `{case}`: {msg}", self.name)
    }

    async fn observe(&self) -> BTreeMap<String, Vec<u8>> {
        match self.observer.observe().await {
            Ok(v) => v,
            Err(e) => self.fail("observe", e),
        }
    }

    /// Paths are safe and unique; secret files are 0600.
    fn check_entries(&self, entries: &[CapturedEntry]) {
        let mut seen = BTreeSet::new();
        for e in entries {
            if let Err(err) = check_relative_path(&e.path) {
                self.fail(
                    "capture paths",
                    format!("{:?} is not a safe relative path: {err}", e.path),
                );
            }
            if !seen.insert((e.area.clone(), e.path.as_str())) {
                self.fail(
                    "capture paths",
                    format!("{}/{} is captured twice", e.area.dir(), e.path),
                );
            }
            if e.area.is_secret()
                && matches!(e.kind, RestoreEntryKind::File { .. })
                && e.mode & 0o777 != 0o600
            {
                self.fail(
                    "secrets mode",
                    format!("secret {:?} has mode {:o}, not 0600", e.path, e.mode),
                );
            }
        }
    }

    /// A second capture is identical (mtimes too, unless the observer says
    /// the source stamps them with the capture time).
    async fn stable_capture(&self, entries: &[CapturedEntry]) {
        let again = match capture_all(self.source).await {
            Ok(v) => v,
            Err(msg) => self.fail("second capture", msg),
        };
        let comparable = |v: &[CapturedEntry]| -> Vec<CapturedEntry> {
            sorted(v)
                .into_iter()
                .map(|e| CapturedEntry {
                    mtime: if self.observer.stable_mtimes() { e.mtime } else { 0 },
                    ..e.clone()
                })
                .collect()
        };
        if comparable(entries) != comparable(&again) {
            let paths = |v: &[CapturedEntry]| {
                v.iter()
                    .map(|e| format!("{}/{}", e.area.dir(), e.path))
                    .collect::<Vec<_>>()
            };
            self.fail(
                "stable capture",
                format!(
                    "two captures differ (paths {:?} vs {:?}, or content/mode/mtime)",
                    paths(entries),
                    paths(&again)
                ),
            );
        }
    }

    /// A dry run plans, reports and changes nothing.
    async fn dry_run(&self, entries: &[CapturedEntry]) {
        let report = match restore_all(self.source, &self.observer.options(true), entries, false).await {
            Ok(r) => r,
            Err(msg) => self.fail("dry-run restore", msg),
        };
        let now = self.observe().await;
        if !now.is_empty() {
            self.fail(
                "dry-run restore",
                format!(
                    "a dry run changed the target: {:?}",
                    now.keys().collect::<Vec<_>>()
                ),
            );
        }
        if !entries.is_empty() && report.actions.is_empty() {
            self.fail("dry-run restore", "a dry run reported no planned action".into());
        }
    }

    /// `finish(false)` removes what was staged (directories a restorer
    /// made to stage into may stay).
    async fn aborted_restore(&self, entries: &[CapturedEntry]) {
        if let Err(msg) = restore_all(self.source, &self.observer.options(false), entries, false).await {
            self.fail("aborted restore", msg);
        }
        let left: Vec<String> = self
            .observe()
            .await
            .into_iter()
            .filter(|(_, v)| v != DIR_MARK)
            .map(|(k, _)| k)
            .collect();
        if !left.is_empty() {
            self.fail(
                "aborted restore",
                format!("finish(false) left data behind: {left:?}"),
            );
        }
    }

    /// `finish(true)` reports its actions and leaves exactly what was
    /// captured.
    async fn committed_restore(&self, entries: &[CapturedEntry]) {
        let report = match restore_all(self.source, &self.observer.options(false), entries, true).await {
            Ok(r) => r,
            Err(msg) => self.fail("committed restore", msg),
        };
        if !entries.is_empty() && report.actions.is_empty() {
            self.fail("committed restore", "finish(true) reported no action".into());
        }
        let restored = self.observe().await;
        let expected = self.observer.expected(entries);
        if restored != expected {
            let differ: Vec<&String> = restored
                .keys()
                .chain(expected.keys())
                .filter(|k| restored.get(*k) != expected.get(*k))
                .collect();
            self.fail(
                "restored equals captured",
                format!("the target differs from the capture at {differ:?}"),
            );
        }
    }
}

fn sorted(entries: &[CapturedEntry]) -> Vec<&CapturedEntry> {
    let mut v: Vec<&CapturedEntry> = entries.iter().collect();
    v.sort_by(|a, b| (&a.area, &a.path).cmp(&(&b.area, &b.path)));
    v
}

/// Runs one capture, draining its channel concurrently and reading every
/// file body on a blocking thread.
async fn capture_all(source: &dyn Source) -> std::result::Result<Vec<CapturedEntry>, String> {
    let (tx, mut rx) = EntrySender::channel(8);
    let ctx = CaptureContext::new("testkit");
    let capture = source.capture(&ctx, tx);
    let drain = async move {
        let mut out = Vec::new();
        while let Some(entry) = rx.recv().await {
            let (kind, data) = match entry.body {
                EntryBody::File { size, reader } => {
                    let path = entry.path.clone();
                    let data = tokio::task::spawn_blocking(move || read_body(reader, size, &path))
                        .await
                        .map_err(|e| format!("reading a body panicked: {e}"))??;
                    (RestoreEntryKind::File { size }, data)
                }
                EntryBody::Dir => (RestoreEntryKind::Dir, Vec::new()),
                EntryBody::Symlink { target } => (RestoreEntryKind::Symlink { target }, Vec::new()),
            };
            out.push(CapturedEntry {
                area: entry.area,
                path: entry.path,
                mode: entry.mode,
                mtime: entry.mtime,
                kind,
                data,
            });
        }
        Ok::<_, String>(out)
    };
    let (report, entries) = tokio::join!(capture, drain);
    if let Err(e) = report {
        return Err(format!("capture() failed: {e:?}"));
    }
    entries
}

fn read_body(reader: Box<dyn Read + Send>, size: u64, path: &str) -> std::result::Result<Vec<u8>, String> {
    let mut data = Vec::new();
    // One byte more than announced, to notice readers that yield too much.
    let mut limited = reader.take(size.saturating_add(1));
    limited
        .read_to_end(&mut data)
        .map_err(|e| format!("reading the body of {path:?} failed: {e}"))?;
    if data.len() as u64 != size {
        return Err(format!(
            "the body of {path:?} yields {}{} bytes but the entry says {size}",
            data.len(),
            if data.len() as u64 > size { "+" } else { "" }
        ));
    }
    Ok(data)
}

/// Feeds every entry to a fresh restorer on a blocking thread, then
/// finishes it with `commit`.
async fn restore_all(
    source: &dyn Source,
    opts: &RestoreOptions,
    entries: &[CapturedEntry],
    commit: bool,
) -> std::result::Result<RestoreReport, String> {
    // As core hands them over: narrowed to the source's kind.
    let restorer: Box<dyn Restorer> = source
        .restore(&opts.for_kind(source.info().kind))
        .await
        .map_err(|e| format!("restore() failed: {e:?}"))?;
    let entries = entries.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut restorer = restorer;
        for e in &entries {
            let mut reader = std::io::Cursor::new(&e.data[..]);
            let entry = RestoreEntry {
                area: e.area.clone(),
                path: &e.path,
                mode: e.mode,
                mtime: e.mtime,
                owner: None,
                kind: e.kind.clone(),
                reader: &mut reader,
            };
            restorer
                .entry(entry)
                .map_err(|err| format!("Restorer::entry({:?}) failed: {err:?}", e.path))?;
        }
        restorer
            .finish(commit)
            .map_err(|err| format!("Restorer::finish({commit}) failed: {err:?}"))
    })
    .await
    .map_err(|e| format!("the restorer panicked: {e}"))?
}

/// Every path under `root` (recursively), without following symlinks.
fn list_tree(root: &Path) -> Vec<(PathBuf, std::fs::FileType)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for entry in rd.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(entry.path());
            }
            out.push((entry.path(), ft));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// MemorySink
// ---------------------------------------------------------------------------

/// An in-memory [`Sink`] for tests: all-or-nothing puts (the body is
/// buffered, then inserted under a lock), atomic [`PutMode::Create`].
#[derive(Debug, Default)]
pub struct MemorySink {
    objects: Mutex<BTreeMap<String, (Bytes, Timestamp)>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// The keys stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, Timestamp)>> {
        // A panic in another test thread must not hide this sink's content.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn exists_error(key: &str) -> Error {
        Error::new(ErrorKind::AlreadyExists, "object already exists").with_context("key", key)
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn info(&self) -> SinkInfo {
        SinkInfo::new("memory", "memory").with_atomic_create(true)
    }

    async fn put(&self, key: &str, mut body: ByteStream, opts: PutOptions) -> Result<u64> {
        validate_key(key)?;
        if opts.mode == PutMode::Create && self.lock().contains_key(key) {
            return Err(Self::exists_error(key));
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk?);
        }
        let size = buf.len() as u64;
        let mut objects = self.lock();
        if opts.mode == PutMode::Create && objects.contains_key(key) {
            return Err(Self::exists_error(key));
        }
        objects.insert(key.to_string(), (buf.freeze(), Timestamp::now()));
        Ok(size)
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        validate_key(key)?;
        let Some((data, _)) = self.lock().get(key).cloned() else {
            return Err(Error::new(ErrorKind::NotFound, "no such object").with_context("key", key));
        };
        // Several chunks, as a real sink would stream them.
        let parts: Vec<Result<Bytes>> = (0..data.len())
            .step_by(64 * 1024)
            .map(|i| Ok(data.slice(i..data.len().min(i + 64 * 1024))))
            .collect();
        Ok(stream::iter(parts).boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        if prefix.split('/').any(|s| s == "..") || prefix.starts_with('/') {
            return Err(
                Error::new(ErrorKind::ConfigInvalid, "invalid list prefix").with_context("prefix", prefix)
            );
        }
        Ok(self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (data, modified))| ObjectMeta {
                key: k.clone(),
                size: data.len() as u64,
                modified: Some(*modified),
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.lock().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_sink_passes_the_suite() {
        let sink = MemorySink::new();
        sink_suite(&sink).await;
        assert!(sink.keys().is_empty(), "the suite cleans up: {:?}", sink.keys());
    }

    /// Stores chunks as they arrive: a failing body leaves a partial object.
    #[derive(Debug, Default)]
    struct LeakySink(MemorySink);

    #[async_trait]
    impl Sink for LeakySink {
        fn info(&self) -> SinkInfo {
            self.0.info()
        }
        async fn put(&self, key: &str, mut body: ByteStream, opts: PutOptions) -> Result<u64> {
            validate_key(key)?;
            if opts.mode == PutMode::Create && self.0.lock().contains_key(key) {
                return Err(MemorySink::exists_error(key));
            }
            let mut buf = BytesMut::new();
            while let Some(chunk) = body.next().await {
                buf.extend_from_slice(&chunk?);
                self.0
                    .lock()
                    .insert(key.to_string(), (buf.clone().freeze(), Timestamp::now()));
            }
            self.0
                .lock()
                .insert(key.to_string(), (buf.clone().freeze(), Timestamp::now()));
            Ok(buf.len() as u64)
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

    #[tokio::test]
    #[should_panic(expected = "body failing half-way leaves nothing")]
    async fn suite_catches_a_non_atomic_put() {
        let sink = LeakySink::default();
        sink_suite(&sink).await;
    }

    #[tokio::test]
    async fn suite_cleans_up_after_a_failed_case() {
        let sink = std::sync::Arc::new(LeakySink::default());
        let s = sink.clone();
        let res = tokio::spawn(async move { sink_suite(&*s).await }).await;
        assert!(res.is_err());
        assert!(sink.0.keys().is_empty(), "left: {:?}", sink.0.keys());
    }

    /// A source of two in-memory entries whose restorer writes them under
    /// the target on commit.
    #[derive(Debug)]
    struct TinySource {
        /// Writes in `entry()` instead of staging: violates the contract.
        eager: bool,
    }

    struct TinyRestorer {
        target: PathBuf,
        dry_run: bool,
        eager: bool,
        staged: Vec<(String, Vec<u8>)>,
    }

    #[async_trait]
    impl Source for TinySource {
        fn info(&self) -> crate::SourceInfo {
            crate::SourceInfo::new("tiny", "tiny", "tiny test source", serde_json::Value::Null)
        }
        async fn check(&self) -> Result<()> {
            Ok(())
        }
        async fn capture(&self, _ctx: &CaptureContext, out: EntrySender) -> Result<crate::SourceReport> {
            for (area, path, mode, data) in [
                (Area::Files, "conf/app.yaml", 0o644, &b"a: 1\n"[..]),
                (Area::Secrets, "token", 0o600, b"s3cr3t"),
            ] {
                let body = EntryBody::File {
                    size: data.len() as u64,
                    reader: Box::new(data),
                };
                out.send(crate::Entry {
                    area,
                    path: path.into(),
                    mode,
                    mtime: 1_700_000_000,
                    owner: None,
                    stat: None,
                    body,
                })
                .await?;
            }
            Ok(crate::SourceReport::default())
        }
        async fn restore(&self, opts: &RestoreOptions) -> Result<Box<dyn Restorer>> {
            Ok(Box::new(TinyRestorer {
                target: opts.target.clone().expect("target"),
                dry_run: opts.dry_run,
                eager: self.eager,
                staged: Vec::new(),
            }))
        }
    }

    impl Restorer for TinyRestorer {
        fn entry(&mut self, entry: RestoreEntry<'_>) -> Result<()> {
            let mut data = Vec::new();
            entry.reader.read_to_end(&mut data)?;
            if self.eager && !self.dry_run {
                std::fs::create_dir_all(&self.target)?;
                std::fs::write(self.target.join(entry.path.replace('/', "_")), &data)?;
            }
            self.staged.push((entry.path.to_string(), data));
            Ok(())
        }
        fn finish(self: Box<Self>, commit: bool) -> Result<RestoreReport> {
            let mut report = RestoreReport::default();
            for (path, data) in &self.staged {
                if commit && !self.dry_run {
                    let dest = self.target.join(path);
                    std::fs::create_dir_all(dest.parent().unwrap())?;
                    std::fs::write(&dest, data)?;
                }
                report.actions.push(crate::RestoreAction {
                    action: "create".into(),
                    target: path.clone(),
                });
            }
            Ok(report)
        }
    }

    #[tokio::test]
    async fn tiny_source_passes_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("restore");
        let entries = source_suite(&TinySource { eager: false }, &target).await;
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].data, b"s3cr3t");
        assert_eq!(std::fs::read(target.join("token")).unwrap(), b"s3cr3t");
    }

    #[tokio::test]
    #[should_panic(expected = "aborted restore")]
    async fn suite_catches_a_restorer_that_writes_before_commit() {
        let dir = tempfile::tempdir().unwrap();
        source_suite(&TinySource { eager: true }, &dir.path().join("restore")).await;
    }

    #[test]
    fn read_body_checks_the_size() {
        let ok = read_body(Box::new(&b"abc"[..]), 3, "x").unwrap();
        assert_eq!(ok, b"abc");
        assert!(
            read_body(Box::new(&b"ab"[..]), 3, "x")
                .unwrap_err()
                .contains("yields 2 bytes")
        );
        assert!(
            read_body(Box::new(&b"abcd"[..]), 3, "x")
                .unwrap_err()
                .contains("yields 4+ bytes")
        );
    }
}

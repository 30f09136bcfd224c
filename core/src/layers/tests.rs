//! The layers against a sink that fails or hangs on demand.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::StreamExt;

use super::*;
use crate::error::{Error, ErrorKind, Result};
use crate::sink::{ByteStream, ObjectMeta, PutOptions, Sink, SinkInfo};
use crate::sink::{PutMode, SinkExt};
use futures::TryStreamExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// An in-memory sink whose next `fail` operations fail with a
/// temporary error (after consuming `consume` chunks of a put body),
/// or that hangs when `hang` is set.
#[derive(Debug, Default)]
struct FlakySink {
    objects: Mutex<BTreeMap<String, Bytes>>,
    fail: AtomicU32,
    permanent: bool,
    consume: usize,
    hang: bool,
    calls: AtomicU32,
    /// The next puts store their object, then fail as if the reply was lost.
    lose_replies: AtomicU32,
}

impl FlakySink {
    fn failing(n: u32) -> Self {
        FlakySink {
            fail: AtomicU32::new(n),
            ..Default::default()
        }
    }

    fn trip(&self) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let left = self.fail.load(Ordering::SeqCst);
        if left > 0 {
            self.fail.store(left - 1, Ordering::SeqCst);
            let e = Error::new(ErrorKind::Unreachable, "connection reset");
            return Err(if self.permanent { e } else { e.temporary() });
        }
        Ok(())
    }

    async fn hang(&self) {
        if self.hang {
            futures::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl Sink for FlakySink {
    fn info(&self) -> SinkInfo {
        SinkInfo::new("flaky", "memory")
    }
    async fn put(&self, key: &str, mut body: ByteStream, opts: PutOptions) -> Result<u64> {
        self.hang().await;
        let mut buf = Vec::new();
        for _ in 0..self.consume {
            if let Some(c) = body.next().await {
                buf.extend_from_slice(&c?);
            }
        }
        self.trip()?;
        while let Some(c) = body.next().await {
            buf.extend_from_slice(&c?);
        }
        let mut o = lock(&self.objects);
        if opts.mode == PutMode::Create && o.contains_key(key) {
            return Err(Error::new(ErrorKind::AlreadyExists, "exists"));
        }
        let n = buf.len() as u64;
        o.insert(key.into(), buf.into());
        let lost = self.lose_replies.load(Ordering::SeqCst);
        if lost > 0 {
            self.lose_replies.store(lost - 1, Ordering::SeqCst);
            return Err(Error::new(ErrorKind::Unreachable, "connection reset").temporary());
        }
        Ok(n)
    }
    async fn get(&self, key: &str) -> Result<ByteStream> {
        self.hang().await;
        self.trip()?;
        let data = lock(&self.objects)
            .get(key)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such object"))?;
        Ok(futures::stream::iter([Ok(data)]).boxed())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.hang().await;
        self.trip()?;
        Ok(lock(&self.objects)
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
                modified: None,
            })
            .collect())
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.hang().await;
        self.trip()?;
        lock(&self.objects).remove(key);
        Ok(())
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy::default().with_backoff(Duration::from_millis(1), Duration::from_millis(4))
}

fn chunks(n: usize, size: usize) -> ByteStream {
    futures::stream::iter((0..n).map(move |i| Ok(Bytes::from(vec![i as u8; size])))).boxed()
}

#[tokio::test]
async fn retries_temporary_failures_of_every_operation() {
    let inner = Arc::new(FlakySink::failing(2));
    let sink = RetrySink::new(inner.clone(), fast());
    sink.put_bytes("a", "hello".into(), PutOptions::create())
        .await
        .unwrap();
    assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    for op in 0..3 {
        inner.fail.store(2, Ordering::SeqCst);
        match op {
            0 => assert_eq!(sink.get_bytes("a").await.unwrap(), "hello"),
            1 => assert_eq!(sink.list("").await.unwrap().len(), 1),
            _ => sink.delete("a").await.unwrap(),
        }
    }
    assert!(lock(&inner.objects).is_empty());
}

#[tokio::test]
async fn a_create_whose_reply_was_lost_succeeds_only_if_its_own_bytes_landed() {
    // The first attempt stores the object, but its reply is lost: the
    // retry finds this put's own bytes, so the put succeeded.
    let inner = Arc::new(FlakySink {
        lose_replies: AtomicU32::new(1),
        ..Default::default()
    });
    let sink = RetrySink::new(inner.clone(), fast());
    assert_eq!(
        sink.put_bytes("locks/x.json", "mine".into(), PutOptions::create())
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        inner.calls.load(Ordering::SeqCst),
        3,
        "two put attempts, one read back"
    );
    assert_eq!(sink.get_bytes("locks/x.json").await.unwrap(), "mine");
    // The first attempt fails before storing and another writer's
    // object is there on the retry: still a conflict.
    let inner = Arc::new(FlakySink::failing(1));
    lock(&inner.objects).insert("locks/y.json".into(), Bytes::from_static(b"theirs"));
    let sink = RetrySink::new(inner.clone(), fast());
    let err = sink
        .put_bytes("locks/y.json", "mine".into(), PutOptions::create())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(sink.get_bytes("locks/y.json").await.unwrap(), "theirs");
}

#[tokio::test]
async fn gives_up_after_max_retries_and_says_so() {
    let inner = Arc::new(FlakySink::failing(10));
    let sink = RetrySink::new(inner.clone(), fast().with_max_retries(2));
    let err = sink.list("").await.unwrap_err();
    assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    assert!(err.is_temporary());
    assert!(err.to_string().contains("attempts"), "{err}");
}

#[tokio::test]
async fn never_retries_permanent_errors() {
    let inner = Arc::new(FlakySink {
        fail: AtomicU32::new(5),
        permanent: true,
        ..Default::default()
    });
    let sink = RetrySink::new(inner.clone(), fast());
    assert!(sink.delete("x").await.is_err());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    // AlreadyExists is final.
    let inner = Arc::new(FlakySink::default());
    let sink = RetrySink::new(inner.clone(), fast());
    assert_eq!(
        sink.put_bytes("k", "v".into(), PutOptions::create())
            .await
            .unwrap(),
        1
    );
    let err = sink
        .put_bytes("k", "w".into(), PutOptions::create())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn stops_retrying_after_max_elapsed() {
    let inner = Arc::new(FlakySink::failing(100));
    let policy = RetryPolicy::default()
        .with_max_retries(100)
        .with_backoff(Duration::from_millis(20), Duration::from_millis(20))
        .with_max_elapsed(Duration::from_millis(100));
    let started = Instant::now();
    assert!(RetrySink::new(inner.clone(), policy).list("").await.is_err());
    assert!(started.elapsed() < Duration::from_secs(1));
    let calls = inner.calls.load(Ordering::SeqCst);
    assert!((2..=11).contains(&calls), "{calls}");
}

#[tokio::test]
async fn streaming_put_is_replayed_within_the_replay_limit() {
    // Fails after consuming 3 of 8 chunks of 1 KiB: replayed from memory.
    let inner = Arc::new(FlakySink {
        fail: AtomicU32::new(1),
        consume: 3,
        ..Default::default()
    });
    let sink = RetrySink::new(inner.clone(), fast());
    assert_eq!(
        sink.put("k", chunks(8, 1024), PutOptions::create())
            .await
            .unwrap(),
        8192
    );
    let stored = lock(&inner.objects)["k"].clone();
    let expected: Vec<u8> = (0..8u8).flat_map(|i| vec![i; 1024]).collect();
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn streaming_put_past_the_replay_limit_is_not_retried() {
    let inner = Arc::new(FlakySink {
        fail: AtomicU32::new(1),
        consume: 3,
        ..Default::default()
    });
    let sink = RetrySink::new(inner.clone(), fast().with_replay_limit(2048));
    let err = sink
        .put("k", chunks(8, 1024), PutOptions::create())
        .await
        .unwrap_err();
    assert!(err.is_temporary());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    assert!(lock(&inner.objects).is_empty());
}

#[tokio::test]
async fn a_failing_body_is_never_retried() {
    let inner = Arc::new(FlakySink::default());
    let sink = RetrySink::new(inner.clone(), fast());
    let body = futures::stream::iter([
        Ok(Bytes::from_static(b"abc")),
        Err(Error::new(ErrorKind::Unreachable, "upstream dropped").temporary()),
    ])
    .boxed();
    assert!(sink.put("k", body, PutOptions::create()).await.is_err());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1, "one attempt only");
    assert!(lock(&inner.objects).is_empty());
}

#[tokio::test]
async fn timeouts_bound_hanging_operations() {
    let inner = Arc::new(FlakySink {
        hang: true,
        ..Default::default()
    });
    let policy = TimeoutPolicy::new(Duration::from_millis(50), Duration::from_millis(80));
    let sink = TimeoutSink::new(inner, policy);
    let started = Instant::now();
    let err = sink.list("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable);
    assert!(
        err.is_temporary() && err.to_string().contains("timed out"),
        "{err}"
    );
    assert!(sink.delete("k").await.is_err());
    assert!(sink.get("k").await.is_err());
    let err = sink
        .put("k", chunks(1, 1), PutOptions::create())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no progress"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_slow_body_is_not_a_stalled_sink() {
    // The body waits 3× the stall bound between chunks; the sink takes
    // each chunk at once, so the put succeeds.
    let inner = Arc::new(FlakySink::default());
    let sink = TimeoutSink::new(
        inner.clone(),
        TimeoutPolicy::new(Duration::from_millis(30), Duration::from_millis(30)),
    );
    let body = futures::stream::iter(0..3u8)
        .then(|i| async move {
            tokio::time::sleep(Duration::from_millis(90)).await;
            Ok(Bytes::from(vec![i; 10]))
        })
        .boxed();
    assert_eq!(sink.put("k", body, PutOptions::create()).await.unwrap(), 30);
}

#[tokio::test]
async fn a_stalled_get_stream_fails() {
    #[derive(Debug)]
    struct Trickle;
    #[async_trait]
    impl Sink for Trickle {
        fn info(&self) -> SinkInfo {
            SinkInfo::new("trickle", "x")
        }
        async fn put(&self, _: &str, _: ByteStream, _: PutOptions) -> Result<u64> {
            Ok(0)
        }
        async fn get(&self, _: &str) -> Result<ByteStream> {
            let first = futures::stream::iter([Ok(Bytes::from_static(b"a"))]);
            Ok(first.chain(futures::stream::pending()).boxed())
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>> {
            Ok(vec![])
        }
        async fn delete(&self, _: &str) -> Result<()> {
            Ok(())
        }
    }
    let sink = TimeoutSink::new(
        Arc::new(Trickle),
        TimeoutPolicy::new(Duration::from_secs(1), Duration::from_millis(50)),
    );
    let items: Vec<Result<Bytes>> = sink.get("k").await.unwrap().collect().await;
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    let err = items[1].as_ref().unwrap_err();
    assert!(err.to_string().contains("no data"), "{err}");
    assert!(
        sink.get("k")
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .is_err()
    );
}

#[cfg(feature = "testkit")]
#[tokio::test]
async fn wrapped_memory_sink_passes_the_suite() {
    let inner = Arc::new(crate::testkit::MemorySink::new());
    let timeout = Arc::new(TimeoutSink::new(inner.clone(), TimeoutPolicy::default()));
    let sink = RetrySink::new(timeout, fast());
    crate::testkit::sink_suite(&sink).await;
    assert!(inner.keys().is_empty());
}

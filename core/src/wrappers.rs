//! Wrappers around any [`Sink`]: [`RetrySink`] retries operations that
//! failed with a temporary error, [`TimeoutSink`] bounds how long an
//! operation may hang. Remote plugins (S3, SFTP) wrap their sinks as
//! `RetrySink(TimeoutSink(sink))`, so a timed-out attempt is retried.
//!
//! ```
//! # #[cfg(feature = "testkit")] {
//! use std::sync::Arc;
//! use coffer_core::{RetryPolicy, RetrySink, TimeoutPolicy, TimeoutSink};
//!
//! let sink = Arc::new(coffer_core::testkit::MemorySink::new());
//! let wrapped = RetrySink::new(
//!     Arc::new(TimeoutSink::new(sink, TimeoutPolicy::default())),
//!     RetryPolicy::default(),
//! );
//! # let _ = wrapped; }
//! ```
//!
//! Both use Tokio timers only; no work here blocks the reactor.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{Stream, StreamExt};
use rand::Rng;

use crate::error::{Error, ErrorKind, Result};
use crate::sink::{ByteStream, ObjectMeta, PutOptions, Sink, SinkInfo};

// ---------------------------------------------------------------------------
// Retry
// ---------------------------------------------------------------------------

/// How [`RetrySink`] retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// Backoff before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Upper bound of one backoff.
    pub max_backoff: Duration,
    /// No retry starts later than this after the first attempt started, so
    /// a sink that is down fails within a bounded time.
    pub max_elapsed: Duration,
    /// A put body is kept in memory up to this many bytes so that the put
    /// can be replayed; a put that fails after more of its body was
    /// consumed is not retried (a stream cannot be rewound).
    pub replay_limit: usize,
}

impl Default for RetryPolicy {
    /// 3 retries, backoff 250 ms doubling up to 4 s (with jitter), no retry
    /// after 30 s, replay buffer 1 MiB.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            max_elapsed: Duration::from_secs(30),
            replay_limit: 1 << 20,
        }
    }
}

impl RetryPolicy {
    /// Sets [`RetryPolicy::max_retries`].
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Sets the initial and maximum backoff.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Sets [`RetryPolicy::max_elapsed`].
    pub fn with_max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = d;
        self
    }

    /// Sets [`RetryPolicy::replay_limit`].
    pub fn with_replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// The backoff before retry number `retry` (0-based): exponential,
    /// capped, with "equal jitter" (half fixed, half random) so that many
    /// clients failing together do not retry in lockstep.
    pub fn backoff(&self, retry: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        let half = base / 2;
        let jitter_nanos = rand::rng().random_range(0..=half.as_nanos().min(u64::MAX as u128) as u64);
        half + Duration::from_nanos(jitter_nanos)
    }
}

/// Retries the operations of a sink that fail with a temporary error
/// ([`Error::is_temporary`]), with exponential backoff and jitter.
///
/// # Behavior
/// - Only temporary errors are retried; `NotFound`, `AlreadyExists`,
///   permission and configuration errors return at once.
/// - `list` and `delete` are retried as a whole; `get` is retried until the
///   stream is open (an error in the middle of the returned stream is not
///   retried: the caller has consumed part of it).
/// - `put` is retried when its body can be replayed: the body is buffered
///   up to [`RetryPolicy::replay_limit`] as the inner sink consumes it, so a
///   put of small bytes (indexes, locks, signatures) or a streaming put
///   that failed before it consumed more than that is retried with the
///   same bytes. A put that failed later, or whose body itself yielded an
///   error, is not retried. A retried create-only put that finds the key
///   present reads it back: if it holds exactly this put's bytes, an
///   earlier attempt landed (its reply was lost) and the put succeeds;
///   otherwise it reports `AlreadyExists`.
/// - No retry starts after [`RetryPolicy::max_elapsed`]; the error of the
///   last attempt is returned, saying how many attempts were made.
#[derive(Debug, Clone)]
pub struct RetrySink {
    inner: Arc<dyn Sink>,
    policy: RetryPolicy,
}

impl RetrySink {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Sink>, policy: RetryPolicy) -> Self {
        RetrySink { inner, policy }
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &Arc<dyn Sink> {
        &self.inner
    }

    /// Whether `key` holds exactly `body` (read with retries; any failure
    /// to read it counts as no).
    async fn landed(&self, key: &str, body: &[u8]) -> bool {
        let read = self
            .run("get", key, || async {
                let r = match self.inner.get(key).await {
                    Ok(s) => futures::TryStreamExt::try_collect::<Vec<Bytes>>(s).await,
                    Err(e) => Err(e),
                };
                (r, true)
            })
            .await;
        matches!(read, Ok(chunks) if chunks.concat() == body)
    }

    /// Runs `op` until it succeeds, fails for good, or the policy is spent.
    /// `replayable` says whether another attempt is possible at all.
    async fn run<T, F, Fut>(&self, what: &str, key: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = (Result<T>, bool)>,
    {
        let started = Instant::now();
        let mut retry = 0u32;
        loop {
            let (result, replayable) = op().await;
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !err.is_temporary() || !replayable || retry >= self.policy.max_retries {
                return Err(annotate(err, retry));
            }
            let backoff = self.policy.backoff(retry);
            if started.elapsed() + backoff > self.policy.max_elapsed {
                return Err(annotate(err, retry));
            }
            tracing::warn!(
                sink = %self.inner.info(),
                op = what,
                key,
                attempt = retry + 1,
                backoff_ms = backoff.as_millis() as u64,
                "temporary failure, retrying: {err}"
            );
            tokio::time::sleep(backoff).await;
            retry += 1;
        }
    }
}

fn annotate(err: Error, retries: u32) -> Error {
    if retries == 0 {
        err
    } else {
        err.with_context("attempts", retries + 1)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Sink for RetrySink {
    fn info(&self) -> SinkInfo {
        self.inner.info()
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<u64> {
        let replay = Arc::new(Mutex::new(Replay::new(body, self.policy.replay_limit)));
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let result = self
            .run("put", key, || {
                let replay = replay.clone();
                let opts = opts.clone();
                attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    let body = ReplayBody {
                        shared: replay.clone(),
                        next: 0,
                    }
                    .boxed();
                    let result = self.inner.put(key, body, opts).await;
                    let replayable = lock(&replay).replayable();
                    (result, replayable)
                }
            })
            .await;
        match result {
            // A retried create-only put finding the key present: the failed
            // attempt may have landed after all (its reply was lost). If the
            // object holds exactly the bytes of this put, it is this put's.
            Err(e)
                if e.kind() == ErrorKind::AlreadyExists
                    && opts.mode == crate::sink::PutMode::Create
                    && attempts.load(std::sync::atomic::Ordering::SeqCst) > 1 =>
            {
                let body = lock(&replay).complete_body();
                match body {
                    Some(body) if self.landed(key, &body).await => Ok(body.len() as u64),
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        self.run("get", key, || async { (self.inner.get(key).await, true) })
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.run("list", prefix, || async { (self.inner.list(prefix).await, true) })
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.run("delete", key, || async { (self.inner.delete(key).await, true) })
            .await
    }

    async fn init(&self) -> Result<()> {
        self.inner.init().await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The body of a retried put, shared by its attempts.
struct Replay {
    body: ByteStream,
    /// Chunks consumed so far, while their total is within `limit`.
    seen: Vec<Bytes>,
    seen_len: usize,
    limit: usize,
    /// More than `limit` bytes were consumed: `seen` is incomplete.
    overflowed: bool,
    /// The body yielded an error: that is no sink failure, never retry.
    body_failed: bool,
    ended: bool,
}

impl Replay {
    fn new(body: ByteStream, limit: usize) -> Self {
        Replay {
            body,
            seen: Vec::new(),
            seen_len: 0,
            limit,
            overflowed: false,
            body_failed: false,
            ended: false,
        }
    }

    fn replayable(&self) -> bool {
        !self.overflowed && !self.body_failed
    }

    /// The whole body, if every byte of it was consumed and kept.
    fn complete_body(&self) -> Option<Vec<u8>> {
        (self.ended && self.replayable()).then(|| self.seen.concat())
    }
}

/// One attempt's view of a [`Replay`]: first the chunks earlier attempts
/// consumed, then the rest of the original body.
struct ReplayBody {
    shared: Arc<Mutex<Replay>>,
    next: usize,
}

impl Stream for ReplayBody {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let shared = self.shared.clone();
        let mut r = lock(&shared);
        // After an overflow `seen` is empty and only the attempt that
        // overflowed it runs (`RetrySink::run` starts no other).
        if self.next < r.seen.len() {
            let chunk = r.seen[self.next].clone();
            self.next += 1;
            return Poll::Ready(Some(Ok(chunk)));
        }
        if r.ended {
            return Poll::Ready(None);
        }
        match r.body.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                r.seen_len += chunk.len();
                if r.seen_len > r.limit {
                    r.overflowed = true;
                    r.seen = Vec::new();
                } else {
                    r.seen.push(chunk.clone());
                    self.next += 1;
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                r.body_failed = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                r.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

// ---------------------------------------------------------------------------
// Timeout
// ---------------------------------------------------------------------------

/// How long [`TimeoutSink`] lets an operation hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimeoutPolicy {
    /// Bound of `list`, `delete`, and of `get` until its stream is open.
    pub operation: Duration,
    /// Longest time a stream may make no progress: a `get` stream yielding
    /// no chunk, or a `put` whose sink neither takes the next chunk of its
    /// body nor returns.
    pub stall: Duration,
}

impl Default for TimeoutPolicy {
    /// 60 s per operation, 120 s without progress in a stream.
    fn default() -> Self {
        TimeoutPolicy {
            operation: Duration::from_secs(60),
            stall: Duration::from_secs(120),
        }
    }
}

impl TimeoutPolicy {
    /// Sets both bounds.
    pub fn new(operation: Duration, stall: Duration) -> Self {
        TimeoutPolicy { operation, stall }
    }
}

/// Bounds how long each operation of a sink may hang; a timed-out
/// operation fails with a temporary [`ErrorKind::Unreachable`] error (so
/// [`RetrySink`] around it may retry).
///
/// # Behavior
/// - `list`, `delete` and the opening of `get` must finish within
///   [`TimeoutPolicy::operation`].
/// - A `get` stream fails when no chunk arrives for
///   [`TimeoutPolicy::stall`].
/// - A `put` has no total bound (bundles are large): it fails when the
///   sink goes [`TimeoutPolicy::stall`] without taking the next chunk of
///   its body (or without returning after the body ended). Time the sink
///   spends waiting for the body (a slow source upstream) does not count.
///   The timed-out put future is dropped, which by the Sink contract
///   leaves nothing visible.
#[derive(Debug, Clone)]
pub struct TimeoutSink {
    inner: Arc<dyn Sink>,
    policy: TimeoutPolicy,
}

impl TimeoutSink {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Sink>, policy: TimeoutPolicy) -> Self {
        TimeoutSink { inner, policy }
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &Arc<dyn Sink> {
        &self.inner
    }

    fn timeout_error(&self, op: &str, key: &str, after: Duration, what: &str) -> Error {
        Error::new(
            ErrorKind::Unreachable,
            format!("{op} timed out: {what} for {}", human(after)),
        )
        .with_context("sink", self.inner.info())
        .with_context("key", key)
        .with_hint("check that the server is up and the network works; a re-run resumes cleanly")
        .temporary()
    }

    async fn bounded<T>(
        &self,
        op: &str,
        key: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.policy.operation, fut).await {
            Ok(r) => r,
            Err(_) => Err(self.timeout_error(op, key, self.policy.operation, "no answer")),
        }
    }
}

fn human(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Sink for TimeoutSink {
    fn info(&self) -> SinkInfo {
        self.inner.info()
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<u64> {
        let stall = self.policy.stall;
        // `Some(t)`: since `t` the sink holds the turn (it got a chunk, or
        // the body ended, or it has not asked for the first one yet).
        // `None`: the sink is waiting for the body.
        let clock = Arc::new(Mutex::new(Some(Instant::now())));
        let body = StallClockBody {
            body,
            clock: clock.clone(),
        }
        .boxed();
        let put = self.inner.put(key, body, opts);
        tokio::pin!(put);
        loop {
            let since = *lock(&clock);
            let wake = match since {
                Some(t) => t + stall,
                None => Instant::now() + stall,
            };
            tokio::select! {
                r = &mut put => return r,
                _ = tokio::time::sleep_until(wake.into()) => {
                    if let Some(t) = *lock(&clock)
                        && t.elapsed() >= stall
                    {
                        return Err(self.timeout_error("put", key, stall, "no progress"));
                    }
                }
            }
        }
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        let stream = self.bounded("get", key, self.inner.get(key)).await?;
        let timeout = self.timeout_error("get", key, self.policy.stall, "no data");
        Ok(StallGuardStream {
            inner: stream,
            stall: self.policy.stall,
            sleep: Box::pin(tokio::time::sleep(self.policy.stall)),
            error: Some(timeout),
        }
        .boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.bounded("list", prefix, self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.bounded("delete", key, self.inner.delete(key)).await
    }

    async fn init(&self) -> Result<()> {
        self.inner.init().await
    }
}

/// A put body that records whose turn it is (see [`TimeoutSink::put`]).
struct StallClockBody {
    body: ByteStream,
    clock: Arc<Mutex<Option<Instant>>>,
}

impl Stream for StallClockBody {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.body.poll_next_unpin(cx);
        *lock(&self.clock) = match polled {
            Poll::Pending => None,
            Poll::Ready(_) => Some(Instant::now()),
        };
        polled
    }
}

/// A get stream that fails when no chunk arrives for `stall`.
struct StallGuardStream {
    inner: ByteStream,
    stall: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    error: Option<Error>,
}

impl Stream for StallGuardStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.error.is_none() {
            return Poll::Ready(None); // timed out before: the stream is over
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(item) => {
                let next = tokio::time::Instant::now() + self.stall;
                self.sleep.as_mut().reset(next);
                Poll::Ready(item)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(self.error.take().map(Err)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}

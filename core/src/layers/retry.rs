//! [`RetrySink`]: whole operations retried on temporary errors.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{Stream, StreamExt};
use rand::Rng;

use super::lock;
use crate::error::{Error, ErrorKind, Result};
use crate::sink::{ByteStream, ObjectMeta, PutOptions, Sink, SinkInfo};

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

    async fn open_local(&self, key: &str) -> Result<Option<std::fs::File>> {
        self.inner.open_local(key).await
    }
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

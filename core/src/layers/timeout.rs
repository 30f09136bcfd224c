//! [`TimeoutSink`]: an operation, or a stalled stream, bounded in time.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{Stream, StreamExt};

use super::lock;
use crate::error::{Error, ErrorKind, Result};
use crate::sink::{ByteStream, ObjectMeta, PutOptions, Sink, SinkInfo};

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

    async fn open_local(&self, key: &str) -> Result<Option<std::fs::File>> {
        self.inner.open_local(key).await
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

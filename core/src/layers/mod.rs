//! Layers around any [`Sink`](crate::Sink): [`RetrySink`] retries
//! operations that failed with a temporary error, [`TimeoutSink`] bounds
//! how long an operation may hang. The [`Registry`](crate::Registry)
//! layers every sink that declares itself remote
//! ([`SinkInfo::remote_bound`](crate::SinkInfo::remote_bound)) as
//! `RetrySink(TimeoutSink(sink))`, so a timed-out attempt is retried.
//!
//! ```
//! # #[cfg(feature = "testkit")] {
//! use std::sync::Arc;
//! use coffer_core::pipeline::{RetryPolicy, RetrySink, TimeoutPolicy, TimeoutSink};
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

mod retry;
mod timeout;

pub use retry::{RetryPolicy, RetrySink};
pub use timeout::{TimeoutPolicy, TimeoutSink};

/// A poisoned lock still holds usable data (counters, a clock).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;

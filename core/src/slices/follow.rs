//! The follower: reads a source's change log and writes it to every sink
//! of the job as slices, resuming from the sinks (never from local state).
//!
//! A source that keeps a change log (MongoDB's oplog) offers it through
//! [`ChangeLog`]; [`follow`] runs until cancelled:
//!
//! 1. takes the lease on every sink (one writer per chain), removes slice
//!    objects a killed follower left without an index, and copies slices
//!    that some sinks hold and others lack (a kill between two sinks);
//! 2. resumes after the newest slice: the log's first entry must be that
//!    slice's last one (same position and term). If the log no longer
//!    holds it (rolled over) or holds another (rolled back after a
//!    failover), the break is recorded as a gap on the first slice of a new
//!    chain, which starts at the log's newest entry;
//! 3. cuts a slice every `interval` or `size` bytes, whichever comes
//!    first, and writes it to every sink (object, signature, index last).
//!    A slice a required sink did not store is kept and written again: the
//!    follower never moves past entries that are not archived. On cancel
//!    it writes the open slice, then gives the lease up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::lease::{self, Lease};
use super::{ChainStart, LogMark, LogPos, SliceIndex, list_slices, new_index, put_slice, seal};
use crate::crypto::Encryption;
use crate::error::{Error, ErrorKind, Result};
use crate::signing::SigningKey;
use crate::sink::{Sink, SinkExt};
use crate::source::CancelFlag;

/// One entry read from a change log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Its position and term.
    pub mark: LogMark,
    /// Whether it concerns the source (kept in the slice); others (other
    /// databases, no-ops) only advance the archived position.
    pub wanted: bool,
    /// The entry as stored (MongoDB: one BSON document).
    pub bytes: Vec<u8>,
    /// Other entries may share its position (the entries of one
    /// transaction): a slice never ends after it until a later position
    /// was read.
    pub grouped: bool,
}

/// Where a change log stands.
#[derive(Debug, Clone, Default)]
pub struct LogWindow {
    /// Its oldest entry.
    pub oldest: Option<LogPos>,
    /// Its newest entry.
    pub newest: Option<LogMark>,
    /// The newest entry a majority of the replica set holds, where the
    /// server reports it.
    pub majority: Option<LogPos>,
}

/// What opening a log after an entry found.
pub enum Resume {
    /// The entry is there: entries after it follow.
    Tail(Box<dyn LogTail>),
    /// The entry is not there (rolled over, or another entry holds its
    /// position after a rollback), with why.
    Lost(String),
}

/// A source's change log, as a follower reads it.
#[async_trait]
pub trait ChangeLog: Send + Sync {
    /// Where the log stands now (cheap: asked at every slice; the oldest
    /// entry may be a minute old).
    async fn window(&self) -> Result<LogWindow>;

    /// The log's newest entry now, exactly (where a new chain starts).
    async fn newest(&self) -> Result<Option<LogMark>>;

    /// Opens the log after `after`, checking `after` itself is its first
    /// entry.
    async fn open(&self, after: LogMark) -> Result<Resume>;

    /// How many entries the log holds after `after` up to and including
    /// `upto` (all of them, whatever they concern).
    async fn count(&self, after: LogPos, upto: LogPos) -> Result<u64>;

    /// The entries after `after` up to and including `upto`, read again
    /// (when a tail is found to have missed some).
    async fn range(&self, after: LogPos, upto: LogPos) -> Result<Vec<LogEntry>>;
}

/// Entries after a position, as they are written.
#[async_trait]
pub trait LogTail: Send {
    /// The next entries, in log order; waits up to `wait` for one and
    /// returns none if nothing came.
    async fn next(&mut self, wait: Duration) -> Result<Vec<LogEntry>>;
}

/// What to do when the chain breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnGap {
    /// Start a new chain and ask for a base snapshot.
    Backup,
    /// Stop with an error.
    Stop,
}

/// A sink a follower writes to.
#[derive(Clone)]
pub struct FollowSink {
    /// Its name.
    pub name: String,
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// Whether a slice must be stored there before the follower moves on.
    pub required: bool,
}

/// What a follower is asked to do.
pub struct FollowRequest {
    /// Job.
    pub job: String,
    /// The followed source's name.
    pub source: String,
    /// Its change log.
    pub log: Box<dyn ChangeLog>,
    /// Where slices go.
    pub sinks: Vec<FollowSink>,
    /// The job's quorum: a slice is archived once this many sinks stored
    /// it (whichever); without it, once every required sink did.
    pub quorum: Option<usize>,
    /// Recipients.
    pub encryption: Encryption,
    /// Signs each slice's index when set.
    pub signing_key: Option<Arc<SigningKey>>,
    /// A slice at least this often (while entries come).
    pub interval: Duration,
    /// A slice at least every this many bytes of entries.
    pub size: usize,
    /// On a break of the chain.
    pub on_gap: OnGap,
    /// A lease older than this belongs to a dead follower.
    pub lease_stale: Duration,
    /// Stops the follower (the open slice is written first).
    pub cancel: CancelFlag,
}

/// What a follower reports as it goes.
#[derive(Debug)]
pub enum FollowEvent {
    /// It resumed after an archived entry, or started a chain.
    Started {
        /// The entry it follows.
        after: LogMark,
        /// Set when a new chain starts.
        chain_start: Option<ChainStart>,
    },
    /// The chain broke: a new one starts (a base snapshot is needed for
    /// times after it, unless `on-gap = "stop"`).
    Gap {
        /// Last entry archived before.
        after: LogMark,
        /// Why.
        reason: String,
        /// Where the new chain starts.
        restart: LogMark,
    },
    /// A slice was written; `failed` names the sinks that did not store
    /// it (optional ones, or required ones it is retried on).
    Slice {
        /// Its index.
        index: Box<SliceIndex>,
        /// Sinks that failed, with the error.
        failed: Vec<(String, String)>,
    },
    /// A slice could not be stored on a required sink; retried.
    Retrying {
        /// The error.
        error: Error,
    },
    /// The log could not be read (the server unreachable or not
    /// answering): the follower starts again from what the sinks hold
    /// after `wait`, as a restarted process would.
    Reconnecting {
        /// The error.
        error: Error,
        /// The pause before the next attempt.
        wait: Duration,
    },
    /// The log's state, after each slice.
    Window(LogWindow),
    /// The tail missed entries of a slice's range: the range was read
    /// again.
    Reread {
        /// How many were missing.
        missed: u64,
    },
    /// A sink that could not be reached at start is left out of this run
    /// (optional, or beyond the quorum).
    SinkSkipped {
        /// The sink.
        sink: String,
        /// Why.
        error: String,
    },
    /// Sinks repaired at start: slices copied from another sink.
    Repaired {
        /// How many slice copies were made.
        copied: usize,
    },
}

/// Receives the follower's events (metrics, logs, a base backup on a
/// new chain).
pub trait FollowObserver: Send + Sync {
    /// One event.
    fn event(&self, event: &FollowEvent);
}

/// Runs a follower until `req.cancel` is raised (or a fatal error).
pub async fn follow(mut req: FollowRequest, observer: &dyn FollowObserver) -> Result<()> {
    if req.sinks.is_empty() {
        return Err(crate::config_error(
            "the job has no sinks to write oplog slices to",
        ));
    }
    let mut leases = Vec::new();
    let mut skipped = Vec::new();
    let mut failure = None;
    for s in &req.sinks {
        match lease::acquire(s.sink.as_ref(), &req.job, &req.source, req.lease_stale).await {
            Ok(l) => leases.push((s.sink.clone(), l)),
            // An optional sink (or, with a quorum, any) that cannot be
            // reached is left out of this run; another follower's lease
            // never is.
            Err(e) if e.kind() != ErrorKind::AlreadyExists && (req.quorum.is_some() || !s.required) => {
                observer.event(&FollowEvent::SinkSkipped {
                    sink: s.name.clone(),
                    error: e.to_string(),
                });
                skipped.push(s.name.clone());
            }
            Err(e) => {
                failure = Some(e.with_context("sink", &s.name));
                break;
            }
        }
    }
    req.sinks.retain(|s| !skipped.contains(&s.name));
    if failure.is_none() && (req.sinks.is_empty() || req.quorum.is_some_and(|q| req.sinks.len() < q)) {
        failure = Some(
            Error::new(
                ErrorKind::Unreachable,
                format!(
                    "too few sinks of job `{}` can be reached to archive its oplog (left out: {})",
                    req.job,
                    skipped.join(", ")
                ),
            )
            .with_hint("check the sinks named above, then start the follower again"),
        );
    }
    let result = match failure {
        Some(e) => Err(e),
        None => run_reconnecting(&req, observer, &mut leases).await,
    };
    for (sink, l) in leases {
        l.release(sink.as_ref()).await;
    }
    result
}

/// The longest pause between two attempts of [`run_reconnecting`].
const RECONNECT_MAX: Duration = Duration::from_secs(60);

/// [`run`], started again while its log cannot be reached (a server
/// restarting, stalled or cut off): from what the sinks hold, as a
/// restarted process would, so nothing is read twice or lost (an oplog
/// that rolled over meanwhile is a recorded gap). The pause doubles from
/// one second up to [`RECONNECT_MAX`] while attempts fail within a minute
/// of each other; SIGTERM ends it at once. Any other error ends the run.
async fn run_reconnecting(
    req: &FollowRequest,
    observer: &dyn FollowObserver,
    leases: &mut [(Arc<dyn Sink>, Lease)],
) -> Result<()> {
    let mut wait = Duration::from_secs(1);
    loop {
        let began = Instant::now();
        match run(req, observer, leases).await {
            Err(error) if error.kind() == ErrorKind::Unreachable && !req.cancel.is_cancelled() => {
                if began.elapsed() > RECONNECT_MAX {
                    wait = Duration::from_secs(1);
                }
                observer.event(&FollowEvent::Reconnecting { error, wait });
                let until = Instant::now() + wait;
                while Instant::now() < until && !req.cancel.is_cancelled() {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                if req.cancel.is_cancelled() {
                    return Ok(());
                }
                wait = (wait * 2).min(RECONNECT_MAX);
            }
            other => return other,
        }
    }
}

async fn run(
    req: &FollowRequest,
    observer: &dyn FollowObserver,
    leases: &mut [(Arc<dyn Sink>, Lease)],
) -> Result<()> {
    let newest = repair(req, observer).await?;
    let (mut tail, mut prev, mut chain_start) = start(req, observer, newest).await?;
    let mut open = OpenSlice::default();
    let mut last_cut = Instant::now();
    let mut stopping = false;
    // A tail can miss an entry written while its cursor opened (see
    // `complete`): the first slices after it opened are checked.
    let mut unchecked_cuts: u32 = 2;
    loop {
        if req.cancel.is_cancelled() {
            stopping = true;
        }
        // While slices cannot be stored, reading stops at a bound (the
        // cursor waits; a long outage becomes a recorded gap, never
        // unbounded memory).
        if !stopping && open.bytes.len() < req.size.saturating_mul(4).max(64 << 20) {
            for e in tail.next(Duration::from_millis(250)).await? {
                open.push(e);
            }
        } else if !stopping {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let due = last_cut.elapsed() >= req.interval || open.bytes.len() >= req.size || stopping;
        if due && open.read > 0 {
            let window = req.log.window().await.ok();
            let limit = window.as_ref().and_then(|w| w.majority);
            if let Some(slice) = open.take(limit) {
                let slice = match unchecked_cuts {
                    0 => slice,
                    _ => complete(req, observer, prev, slice).await?,
                };
                match write(req, observer, prev, chain_start.clone(), slice).await {
                    Ok(last) => {
                        prev = last;
                        chain_start = None;
                        unchecked_cuts = unchecked_cuts.saturating_sub(1);
                    }
                    Err((slice, e)) if !stopping => {
                        observer.event(&FollowEvent::Retrying { error: e });
                        open.put_back(slice);
                    }
                    Err((_, e)) => return Err(e),
                }
            }
            if let Some(w) = window {
                observer.event(&FollowEvent::Window(w));
            }
            refresh(leases).await?;
            last_cut = Instant::now();
        } else if due {
            refresh(leases).await?;
            if let Ok(w) = req.log.window().await {
                observer.event(&FollowEvent::Window(w));
            }
            last_cut = Instant::now();
        }
        if stopping {
            // What is left (entries above the majority point, which may
            // still be rolled back, or a transaction still growing) is
            // read again by the next follower.
            return Ok(());
        }
    }
}

/// Refreshes the leases: another follower that took one over stops this
/// one; a sink that cannot be reached now is left to the slice writes
/// (required, optional, quorum) and tried again at the next slice.
async fn refresh(leases: &mut [(Arc<dyn Sink>, Lease)]) -> Result<()> {
    for (sink, l) in leases.iter_mut() {
        if let Err(e) = l.refresh(sink.as_ref()).await {
            if e.kind() == ErrorKind::AlreadyExists {
                return Err(e);
            }
            tracing::warn!("cannot refresh the follower's lease on a sink: {e}");
        }
    }
    Ok(())
}

/// Entries read since the last slice.
#[derive(Default)]
struct OpenSlice {
    entries: Vec<LogEntry>,
    bytes: Vec<u8>,
    read: u64,
}

/// A slice cut from the open one.
struct Cut {
    entries: Vec<LogEntry>,
}

impl OpenSlice {
    fn push(&mut self, e: LogEntry) {
        if e.wanted {
            self.bytes.extend_from_slice(&e.bytes);
        }
        self.read += 1;
        self.entries.push(e);
    }

    /// The entries up to `limit` (all without one), if any.
    fn take(&mut self, limit: Option<LogPos>) -> Option<Cut> {
        let mut n = match limit {
            Some(l) => self.entries.iter().take_while(|e| e.mark.ts <= l).count(),
            None => self.entries.len(),
        };
        // Entries sharing a position (a transaction's) never straddle two
        // slices: a slice ends after a whole group, and a group that may
        // still grow (its last entry read so far is the newest) waits.
        if n > 0 {
            let last = &self.entries[n - 1];
            let split = n < self.entries.len() && self.entries[n].mark.ts == last.mark.ts;
            let open = n == self.entries.len() && last.grouped;
            if split || open {
                let ts = last.mark.ts;
                while n > 0 && self.entries[n - 1].mark.ts == ts {
                    n -= 1;
                }
            }
        }
        if n == 0 {
            return None;
        }
        let rest = self.entries.split_off(n);
        let cut = std::mem::replace(&mut self.entries, rest);
        self.bytes = self
            .entries
            .iter()
            .filter(|e| e.wanted)
            .flat_map(|e| e.bytes.iter().copied())
            .collect();
        self.read = self.entries.len() as u64;
        Some(Cut { entries: cut })
    }

    fn put_back(&mut self, cut: Cut) {
        let mut all = cut.entries;
        all.append(&mut self.entries);
        *self = OpenSlice::default();
        for e in all {
            self.bytes
                .extend(e.wanted.then_some(&e.bytes).into_iter().flatten());
            self.read += 1;
            self.entries.push(e);
        }
    }
}

/// Checks a cut holds every entry the log has in its range (a tail can
/// miss one written while its cursor opened, on some servers); when it
/// does not, reads the range again.
async fn complete(
    req: &FollowRequest,
    observer: &dyn FollowObserver,
    prev: LogMark,
    cut: Cut,
) -> Result<Cut> {
    let last = cut.entries[cut.entries.len() - 1].mark.ts;
    let have = cut.entries.len() as u64;
    let count = req.log.count(prev.ts, last).await?;
    if count == have {
        return Ok(cut);
    }
    let entries = req.log.range(prev.ts, last).await?;
    observer.event(&FollowEvent::Reread {
        missed: count.saturating_sub(have),
    });
    if entries.len() as u64 != count || entries.last().map(|e| e.mark.ts) != Some(last) {
        return Err(Error::new(
            ErrorKind::Unexpected,
            format!(
                "the oplog changed while its range after {} was read again",
                prev.ts
            ),
        )
        .with_hint("start the follower again"));
    }
    Ok(Cut { entries })
}

/// Seals a cut and writes it to every sink; returns its last entry, or
/// gives the cut back when a required sink did not store it.
async fn write(
    req: &FollowRequest,
    observer: &dyn FollowObserver,
    prev: LogMark,
    chain_start: Option<ChainStart>,
    cut: Cut,
) -> std::result::Result<LogMark, (Cut, Error)> {
    let plain: Vec<u8> = cut
        .entries
        .iter()
        .filter(|e| e.wanted)
        .flat_map(|e| e.bytes.iter().copied())
        .collect();
    let object = match seal(&plain, &req.encryption) {
        Ok(o) => o,
        Err(e) => return Err((cut, e)),
    };
    let first = cut.entries[0].mark.ts;
    let last = cut.entries[cut.entries.len() - 1].mark;
    let stored = cut.entries.iter().filter(|e| e.wanted).count() as u64;
    let index = new_index(
        &req.job,
        &req.source,
        prev,
        chain_start,
        first,
        last,
        stored,
        cut.entries.len() as u64,
        plain.len() as u64,
        &object,
        &req.encryption,
    );
    let object = Bytes::from(object);
    let puts = req.sinks.iter().map(|s| {
        let (index, object) = (&index, object.clone());
        async move { put_slice(s.sink.as_ref(), index, object, req.signing_key.as_deref()).await }
    });
    let results = futures::future::join_all(puts).await;
    let mut failed = Vec::new();
    let mut required_failed = None;
    let mut first_error = None;
    let mut stored = 0;
    for (s, r) in req.sinks.iter().zip(results) {
        match r {
            Ok(()) => stored += 1,
            Err(e) => {
                failed.push((s.name.clone(), e.to_string()));
                let e = e.with_context("sink", &s.name);
                if s.required && required_failed.is_none() {
                    required_failed = Some(e);
                } else if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    // As for a backup: with a quorum, enough sinks (whichever) suffice;
    // else every required one. A sink that missed a slice gets it copied
    // when the follower starts next.
    let short = match req.quorum {
        Some(q) if stored < q => required_failed.or(first_error),
        Some(_) => None,
        None => required_failed,
    };
    if let Some(e) = short {
        return Err((cut, e));
    }
    observer.event(&FollowEvent::Slice {
        index: Box::new(index),
        failed,
    });
    Ok(last)
}

/// Cleans every sink: slice objects without an index (a killed follower's)
/// are removed; slices some sinks hold and others lack are copied. Returns
/// the newest slice's index over all sinks.
async fn repair(req: &FollowRequest, observer: &dyn FollowObserver) -> Result<Option<SliceIndex>> {
    let prefix = super::slice_prefix(&req.job, &req.source);
    let mut per_sink = Vec::new();
    for s in &req.sinks {
        let (slices, bad) = list_slices(s.sink.as_ref(), &req.job, &req.source).await?;
        if let Some((key, e)) = bad.into_iter().next() {
            return Err(e
                .with_context("sink", &s.name)
                .with_hint(format!("an oplog slice index is damaged: move `{key}` and its .slice/.sig aside, then start the follower again")));
        }
        let indexed: std::collections::HashSet<String> =
            slices.iter().map(|x| x.index.object.key.clone()).collect();
        for o in s.sink.list(&prefix).await? {
            let stem = o
                .key
                .strip_suffix(".slice")
                .or_else(|| o.key.strip_suffix(".sig"));
            if let Some(stem) = stem
                && !indexed.contains(&format!("{stem}.slice"))
            {
                s.sink.delete(&o.key).await?;
            }
        }
        per_sink.push(slices);
    }
    let mut all: std::collections::BTreeMap<LogPos, (usize, SliceIndex)> = Default::default();
    for (n, slices) in per_sink.iter().enumerate() {
        for s in slices {
            all.entry(s.index.last.ts).or_insert((n, s.index.clone()));
        }
    }
    let mut copied = 0;
    for (n, s) in req.sinks.iter().enumerate() {
        let have: std::collections::HashSet<LogPos> = per_sink[n].iter().map(|x| x.index.last.ts).collect();
        for (pos, (from, index)) in &all {
            if have.contains(pos) {
                continue;
            }
            let src = req.sinks[*from].sink.as_ref();
            let object = src.get_bytes(&index.object.key).await?;
            let sig = match src.get_bytes(&index.signature_key()).await {
                Ok(b) => Some(b),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            let json = src.get_bytes(&index.index_key()).await?;
            let opts = crate::sink::PutOptions::default();
            s.sink.put_bytes(&index.object.key, object, opts.clone()).await?;
            if let Some(sig) = sig {
                s.sink
                    .put_bytes(&index.signature_key(), sig, opts.clone())
                    .await?;
            }
            s.sink.put_bytes(&index.index_key(), json, opts).await?;
            copied += 1;
        }
    }
    if copied > 0 {
        observer.event(&FollowEvent::Repaired { copied });
    }
    Ok(all.into_values().next_back().map(|(_, i)| i))
}

/// Opens the log after the newest slice, or starts a chain.
async fn start(
    req: &FollowRequest,
    observer: &dyn FollowObserver,
    newest: Option<SliceIndex>,
) -> Result<(Box<dyn LogTail>, LogMark, Option<ChainStart>)> {
    let gap = match newest {
        Some(index) => match req.log.open(index.last).await? {
            Resume::Tail(tail) => {
                observer.event(&FollowEvent::Started {
                    after: index.last,
                    chain_start: None,
                });
                return Ok((tail, index.last, None));
            }
            Resume::Lost(reason) => Some((index.last, reason)),
        },
        None => None,
    };
    let newest = req.log.newest().await?.ok_or_else(|| {
        Error::new(ErrorKind::NotFound, "the change log is empty: nothing to follow from")
            .with_hint("write to the database once (or enable the server's no-op heartbeat), then start the follower again")
    })?;
    let chain_start = match gap {
        Some((after, reason)) => {
            observer.event(&FollowEvent::Gap {
                after,
                reason: reason.clone(),
                restart: newest,
            });
            if req.on_gap == OnGap::Stop {
                return Err(Error::new(
                    ErrorKind::Integrity,
                    format!("the oplog chain broke after {after}: {reason}"),
                )
                .with_hint("point-in-time recovery after this break needs a new base: take a backup, then start the follower (or set `on-gap = \"backup\"`)"));
            }
            ChainStart {
                gap_after: Some(after),
                reason,
            }
        }
        None => ChainStart {
            gap_after: None,
            reason: "the follower started with nothing archived".into(),
        },
    };
    match req.log.open(newest).await? {
        Resume::Tail(tail) => {
            observer.event(&FollowEvent::Started {
                after: newest,
                chain_start: Some(chain_start.clone()),
            });
            Ok((tail, newest, Some(chain_start)))
        }
        Resume::Lost(reason) => Err(Error::new(
            ErrorKind::Unexpected,
            format!("the change log's newest entry {newest} vanished before it could be read: {reason}"),
        )
        .with_hint("start the follower again")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(t: u32, i: u32, grouped: bool) -> LogEntry {
        LogEntry {
            mark: LogMark {
                ts: LogPos { t, i },
                term: None,
            },
            wanted: true,
            bytes: vec![t as u8],
            grouped,
        }
    }

    fn open_with(entries: Vec<LogEntry>) -> OpenSlice {
        let mut o = OpenSlice::default();
        for x in entries {
            o.push(x);
        }
        o
    }

    fn positions(c: &Cut) -> Vec<(u32, u32)> {
        c.entries.iter().map(|e| (e.mark.ts.t, e.mark.ts.i)).collect()
    }

    #[test]
    fn a_transaction_group_is_never_cut() {
        // The newest group may still grow: it waits.
        let mut o = open_with(vec![e(1, 1, false), e(2, 1, true), e(2, 1, true)]);
        let c = o.take(None).unwrap();
        assert_eq!(positions(&c), [(1, 1)]);
        assert_eq!(o.read, 2);
        // Once a later position was read, the group goes whole.
        o.push(e(3, 1, false));
        assert_eq!(positions(&o.take(None).unwrap()), [(2, 1), (2, 1), (3, 1)]);
        // A majority point inside a group keeps the whole group back.
        let mut o = open_with(vec![e(1, 1, false), e(2, 1, true), e(2, 1, true), e(3, 1, false)]);
        let limit = Some(LogPos { t: 2, i: 1 });
        assert_eq!(positions(&o.take(limit).unwrap()), [(1, 1), (2, 1), (2, 1)]);
        let mut o = open_with(vec![e(2, 1, true), e(2, 1, true)]);
        assert!(o.take(None).is_none(), "nothing whole to cut yet");
        assert_eq!(o.read, 2);
    }
}

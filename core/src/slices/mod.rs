//! Change-log slices: the continuous half of point-in-time recovery.
//!
//! A follower (`coffer oplog follow`) reads a source's change log (MongoDB's
//! `local.oplog.rs`) and stores it in **slices**: each slice is the log's
//! entries after the previous slice's last one, concatenated (for MongoDB:
//! BSON documents, exactly the `oplog.bson` layout), compressed and
//! age-encrypted to the job's recipients, beside a public [`SliceIndex`].
//!
//! On a sink, under `oplog/<job>/<source>/`:
//!
//! ```text
//! <T>-<I>.slice   age(zstd(entries))   T, I: the last entry's position, zero-padded
//! <T>-<I>.sig     signature of the index bytes (when the job signs)
//! <T>-<I>.json    SliceIndex, written last: its presence means complete
//! ```
//!
//! Keys sort in log order. Each index records the entry it follows
//! (`prev`: position and term), its first and last positions, counts and the
//! ciphertext SHA-256, so whether a chain is unbroken is checked without a
//! key ([`segments`]). A chain starts where the follower started with nothing
//! to resume, or after a break it recorded (`gap`): the log no longer held
//! the entry it had to resume after (rolled over) or held a different one
//! (rolled back after a failover).
//!
//! The decrypted slices of a chain, concatenated in key order, are the log
//! from the chain's start: `age -d … | zstd -d` per slice, then `cat`.

pub mod export;
pub mod follow;
pub mod pitr;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bundle::{IndexEncryption, IndexObject, hostname};
use crate::crypto::{Encryption, Identities};
use crate::error::{Error, ErrorKind, Result};
use crate::signing::{SignatureState, SigningKey, check_signature};
use crate::sink::{PutOptions, Sink, SinkExt};

/// Folder of every job's slices on a sink.
pub const SLICES_PREFIX: &str = "oplog/";
/// `format` of a [`SliceIndex`].
pub const SLICE_FORMAT: &str = "coffer-slice-1";
const OBJECT_SUFFIX: &str = ".slice";
const INDEX_SUFFIX: &str = ".json";
const SIG_SUFFIX: &str = ".sig";
/// Bound on a slice's plaintext when it is opened (a forged index cannot
/// make a restore allocate more).
pub const MAX_SLICE_PLAIN: u64 = 1 << 30;

/// A position in a change log: seconds and ordinal within the second
/// (MongoDB's oplog `ts`, `Timestamp(t, i)`). Orders as the log does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct LogPos {
    /// Seconds since the Unix epoch.
    pub t: u32,
    /// Ordinal within the second.
    pub i: u32,
}

impl LogPos {
    /// The position of the last entry that can be in second `t`.
    pub fn end_of_second(t: u32) -> LogPos {
        LogPos { t, i: u32::MAX }
    }

    /// Its second as a time.
    pub fn time(self) -> Timestamp {
        Timestamp::from_second(i64::from(self.t)).unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

impl fmt::Display for LogPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.t, self.i)
    }
}

impl FromStr for LogPos {
    type Err = Error;

    fn from_str(s: &str) -> Result<LogPos> {
        let bad = || {
            crate::config_error(format!("`{s}` is not a log position"))
                .with_hint("write SECONDS:ORDINAL, e.g. 1764979200:3 (the oplog's Timestamp(t, i))")
        };
        let (t, i) = s.split_once(':').ok_or_else(bad)?;
        Ok(LogPos {
            t: t.parse().map_err(|_| bad())?,
            i: i.parse().map_err(|_| bad())?,
        })
    }
}

/// A log entry's position and the term (election) that wrote it: after a
/// failover an entry at the same position can be a different one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogMark {
    /// Position.
    pub ts: LogPos,
    /// Term, where the log records one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<i64>,
}

impl fmt::Display for LogMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.term {
            Some(t) => write!(f, "{} (term {t})", self.ts),
            None => write!(f, "{}", self.ts),
        }
    }
}

/// Why a chain starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChainStart {
    /// The last entry archived before the break (none for a first chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_after: Option<LogMark>,
    /// What broke the chain, for humans.
    pub reason: String,
}

/// The public index of one slice (`<T>-<I>.json`): no secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SliceIndex {
    /// [`SLICE_FORMAT`].
    pub format: String,
    /// Job whose source is followed.
    pub job: String,
    /// The source (its name in the job).
    pub source: String,
    /// The entry this slice follows: the previous slice's `last`, or
    /// where the chain starts.
    pub prev: LogMark,
    /// Set on the first slice of a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_start: Option<ChainStart>,
    /// First entry read.
    pub first: LogPos,
    /// Last entry read: the log is archived up to and including it.
    pub last: LogMark,
    /// Entries stored (those of the source's databases).
    pub entries: u64,
    /// Entries read (stored, other namespaces, no-ops).
    pub read: u64,
    /// When the slice was written.
    pub created_at: Timestamp,
    /// Host of the follower.
    pub host: String,
    /// coffer version that wrote it.
    pub coffer_version: String,
    /// The ciphertext object.
    pub object: IndexObject,
    /// Always `zstd`.
    pub compression: String,
    /// Encryption.
    pub encryption: IndexEncryption,
}

impl SliceIndex {
    /// Canonical JSON bytes (what is signed).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("slice index serializes");
        v.push(b'\n');
        v
    }

    /// Parses an index read from `key`, checking it names its own object.
    pub fn from_json(bytes: &[u8], key: &str) -> Result<SliceIndex> {
        let index: SliceIndex = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(ErrorKind::Integrity, format!("unreadable oplog slice index: {e}"))
                .with_context("key", key)
        })?;
        if index.format != SLICE_FORMAT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("unknown slice format `{}`", index.format),
            )
            .with_context("key", key));
        }
        let base = key.strip_suffix(INDEX_SUFFIX).unwrap_or(key);
        if index.object.key != format!("{base}{OBJECT_SUFFIX}")
            || index.last.ts < index.first
            || index.first <= index.prev.ts
        {
            return Err(Error::new(
                ErrorKind::Integrity,
                "oplog slice index does not match its key or is out of order",
            )
            .with_context("key", key)
            .with_hint("the slice index was changed or forged; restore to a time before it"));
        }
        Ok(index)
    }

    /// `oplog/<job>/<source>/<T>-<I>` of a slice ending at `last`.
    pub fn stem(job: &str, source: &str, last: LogPos) -> String {
        format!("{}{:010}-{:010}", slice_prefix(job, source), last.t, last.i)
    }

    /// Key of the index.
    pub fn index_key(&self) -> String {
        format!(
            "{}{INDEX_SUFFIX}",
            Self::stem(&self.job, &self.source, self.last.ts)
        )
    }

    /// Key of the signature.
    pub fn signature_key(&self) -> String {
        format!(
            "{}{SIG_SUFFIX}",
            Self::stem(&self.job, &self.source, self.last.ts)
        )
    }

    /// Whether `pos` lies in what this slice covers: after `prev`, up to
    /// and including `last`.
    pub fn covers(&self, pos: LogPos) -> bool {
        self.prev.ts < pos && pos <= self.last.ts
    }
}

/// `oplog/<job>/<source>/`.
pub fn slice_prefix(job: &str, source: &str) -> String {
    format!("{SLICES_PREFIX}{job}/{source}/")
}

/// The object key a slice ending at `last` has.
pub fn object_key(job: &str, source: &str, last: LogPos) -> String {
    format!("{}{OBJECT_SUFFIX}", SliceIndex::stem(job, source, last))
}

/// Compresses and encrypts a slice's entries; returns the ciphertext.
pub fn seal(entries: &[u8], encryption: &Encryption) -> Result<Vec<u8>> {
    let compressed =
        zstd::bulk::compress(entries, 3).map_err(|e| Error::io("compressing an oplog slice", e))?;
    let mut out = Vec::with_capacity(compressed.len() + 256);
    let mut w = encryption.encrypt(&mut out)?;
    std::io::Write::write_all(&mut w, &compressed).map_err(|e| Error::io("encrypting an oplog slice", e))?;
    w.finish()
        .map_err(|e| Error::io("encrypting an oplog slice", e))?;
    Ok(out)
}

/// The index of a slice about to be written, its object sealed.
#[allow(clippy::too_many_arguments)]
pub fn new_index(
    job: &str,
    source: &str,
    prev: LogMark,
    chain_start: Option<ChainStart>,
    first: LogPos,
    last: LogMark,
    entries: u64,
    read: u64,
    plain_size: u64,
    object: &[u8],
    encryption: &Encryption,
) -> SliceIndex {
    let (mode, recipients) = encryption.describe();
    SliceIndex {
        format: SLICE_FORMAT.into(),
        job: job.into(),
        source: source.into(),
        prev,
        chain_start,
        first,
        last,
        entries,
        read,
        created_at: Timestamp::now(),
        host: hostname(),
        coffer_version: env!("CARGO_PKG_VERSION").into(),
        object: IndexObject {
            key: object_key(job, source, last.ts),
            size: object.len() as u64,
            sha256: hex::encode(Sha256::digest(object)),
            plain_size: Some(plain_size),
        },
        compression: "zstd".into(),
        encryption: IndexEncryption {
            scheme: "age".into(),
            mode,
            recipients,
        },
    }
}

/// Checks a slice's ciphertext against its index, then decrypts and
/// decompresses it: the entries, concatenated.
pub fn open(index: &SliceIndex, object: &[u8], identities: &Identities) -> Result<Vec<u8>> {
    let damaged = |what: String| {
        Error::new(ErrorKind::Integrity, what)
            .with_context("key", &index.object.key)
            .with_hint("the slice was damaged or replaced on the sink: copy it from another sink, or restore to a time before it")
    };
    if object.len() as u64 != index.object.size {
        return Err(damaged(format!(
            "oplog slice is {} bytes, its index says {}",
            object.len(),
            index.object.size
        )));
    }
    if hex::encode(Sha256::digest(object)) != index.object.sha256 {
        return Err(damaged(
            "oplog slice does not match the SHA-256 of its index".into(),
        ));
    }
    let plain_limit = index
        .object
        .plain_size
        .unwrap_or(MAX_SLICE_PLAIN)
        .min(MAX_SLICE_PLAIN);
    let mut r = identities.decrypt(object)?;
    let mut compressed = Vec::new();
    std::io::Read::read_to_end(&mut r, &mut compressed)
        .map_err(|e| damaged(format!("cannot decrypt the oplog slice: {e}")))?;
    let plain = zstd::bulk::decompress(&compressed, plain_limit as usize)
        .map_err(|e| damaged(format!("cannot decompress the oplog slice: {e}")))?;
    if Some(plain.len() as u64) != index.object.plain_size {
        return Err(damaged(
            "oplog slice holds another size than its index says".into(),
        ));
    }
    Ok(plain)
}

/// One slice found on a sink, with what its signature says.
#[derive(Debug, Clone)]
pub struct StoredSlice {
    /// Its index.
    pub index: SliceIndex,
    /// Its signature.
    pub signature: SignatureState,
}

/// The slices of `job`'s `source` on `sink`, in log order; indexes that
/// cannot be read are returned apart (key, error), and show as breaks.
pub async fn list_slices(
    sink: &dyn Sink,
    job: &str,
    source: &str,
) -> Result<(Vec<StoredSlice>, Vec<(String, Error)>)> {
    let prefix = slice_prefix(job, source);
    let objects = sink.list(&prefix).await?;
    let sigs: std::collections::HashSet<&str> = objects
        .iter()
        .filter(|o| o.key.ends_with(SIG_SUFFIX))
        .map(|o| o.key.as_str())
        .collect();
    let mut keys: Vec<&str> = objects
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| k.ends_with(INDEX_SUFFIX) && !k[prefix.len()..].contains('/') && !k.contains("/lease-"))
        .collect();
    keys.sort_unstable();
    let sigs = &sigs;
    let reads = keys.iter().map(|key| async move {
        let bytes = sink.get_bytes(key).await?;
        let sig_key = format!("{}{SIG_SUFFIX}", key.strip_suffix(INDEX_SUFFIX).unwrap_or(key));
        let sig = match sigs.contains(sig_key.as_str()) {
            true => Some(sink.get_bytes(&sig_key).await?),
            false => None,
        };
        let index = SliceIndex::from_json(&bytes, key)?;
        if index.job != job || index.source != source {
            return Err(Error::new(
                ErrorKind::Integrity,
                "oplog slice index names another job or source",
            )
            .with_context("key", *key));
        }
        Ok(StoredSlice {
            signature: check_signature(&bytes, sig.as_deref()),
            index,
        })
    });
    let mut slices = Vec::new();
    let mut bad = Vec::new();
    for (key, r) in keys.iter().zip(futures::future::join_all(reads).await) {
        match r {
            Ok(s) => slices.push(s),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => bad.push((key.to_string(), e)),
        }
    }
    slices.sort_by_key(|s| s.index.last.ts);
    Ok((slices, bad))
}

/// Writes a slice to `sink`: the object, the signature, then the index.
pub async fn put_slice(
    sink: &dyn Sink,
    index: &SliceIndex,
    object: Bytes,
    signing: Option<&SigningKey>,
) -> Result<()> {
    let json = index.to_json();
    sink.put_bytes(&index.object.key, object, PutOptions::default())
        .await?;
    if let Some(key) = signing {
        let sig = key.sign_index(&json);
        sink.put_bytes(
            &index.signature_key(),
            sig.to_json().into(),
            PutOptions::default(),
        )
        .await?;
    }
    sink.put_bytes(&index.index_key(), json.into(), PutOptions::default())
        .await?;
    Ok(())
}

/// Deletes a slice from `sink`: the index first (so a half-deleted slice
/// is not listed), then the signature and the object.
pub async fn delete_slice(sink: &dyn Sink, index: &SliceIndex) -> Result<()> {
    sink.delete(&index.index_key()).await?;
    sink.delete(&index.signature_key()).await?;
    sink.delete(&index.object.key).await?;
    Ok(())
}

/// What breaks the chain before a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Break {
    /// The follower recorded it: the log no longer held (or held another)
    /// entry after `after`.
    Gap {
        /// Last entry archived before the break.
        after: Option<LogMark>,
        /// Why.
        reason: String,
    },
    /// A slice is missing or unreadable: the segment's first slice does
    /// not follow the previous one.
    Missing {
        /// Last entry of the previous slice.
        after: LogMark,
        /// The entry the next slice follows.
        next_follows: LogMark,
    },
}

/// A run of slices where each follows the one before.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Segment {
    /// The entry its first slice follows: the log is archived after it.
    pub from: LogMark,
    /// Its last slice's last entry.
    pub to: LogMark,
    /// Indexes into the slice list.
    pub slices: std::ops::Range<usize>,
    /// What comes before it (none: the sink's first chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_break: Option<Break>,
}

impl Segment {
    /// Whether the segment covers `(base, target]` unbroken: it starts at
    /// or before `base` and reaches `target`.
    pub fn covers(&self, base: LogPos, target: LogPos) -> bool {
        self.from.ts <= base && target <= self.to.ts
    }
}

/// Splits slices (in log order) into unbroken segments.
pub fn segments(slices: &[SliceIndex]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for (n, s) in slices.iter().enumerate() {
        let links = out
            .last()
            .is_some_and(|seg| seg.to == s.prev && s.chain_start.is_none());
        if links {
            let seg = out.last_mut().expect("checked");
            seg.to = s.last;
            seg.slices.end = n + 1;
            continue;
        }
        let after_break = match (&s.chain_start, out.last()) {
            (Some(start), _) => Some(Break::Gap {
                after: start.gap_after,
                reason: start.reason.clone(),
            })
            .filter(|_| start.gap_after.is_some() || n > 0),
            (None, Some(prev)) => Some(Break::Missing {
                after: prev.to,
                next_follows: s.prev,
            }),
            (None, None) => None,
        };
        out.push(Segment {
            from: s.prev,
            to: s.last,
            slices: n..n + 1,
            after_break,
        });
    }
    out
}

/// The slices of `segment` needed to go from `base` to `target`: those
/// holding an entry in `(base, target]`.
pub fn needed(slices: &[SliceIndex], segment: &Segment, base: LogPos, target: LogPos) -> Vec<usize> {
    segment
        .slices
        .clone()
        .filter(|&n| slices[n].last.ts > base && slices[n].prev.ts < target)
        .collect()
}

/// The lease of a follower on a job's source: only one follower writes a
/// chain. A lease is `oplog/<job>/<source>/lease-<generation>.json`,
/// created create-only and refreshed by its holder; one older than the
/// stale time is ignored.
pub mod lease {
    use std::time::Duration;

    use super::*;

    /// What a lease records.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct LeaseInfo {
        /// Host of the follower.
        pub host: String,
        /// Its process id.
        pub pid: u32,
        /// When it was taken.
        pub taken: Timestamp,
        /// When it was last refreshed.
        pub refreshed: Timestamp,
    }

    /// A held lease.
    #[derive(Debug)]
    pub struct Lease {
        key: String,
        info: LeaseInfo,
    }

    fn generation(prefix: &str, key: &str) -> Option<u64> {
        key.strip_prefix(prefix)?
            .strip_prefix("lease-")?
            .strip_suffix(".json")?
            .parse()
            .ok()
    }

    /// Whether the lease's holder was a process on this host that is gone
    /// (killed): its lease is stale at once.
    fn dead_here(info: &LeaseInfo) -> bool {
        if info.host != hostname() || info.pid == std::process::id() {
            return false;
        }
        let Ok(pid) = i32::try_from(info.pid) else {
            return false;
        };
        // A killed process not yet reaped is a zombie: dead too.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some((_, rest)) = stat.rsplit_once(')')
        {
            return rest.trim_start().starts_with('Z');
        }
        // SAFETY: signal 0 only checks whether the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }

    /// Takes the lease on `sink`, or fails naming the live holder (a
    /// holder on this host whose process is gone is not live).
    pub async fn acquire(sink: &dyn Sink, job: &str, source: &str, stale: Duration) -> Result<Lease> {
        let prefix = slice_prefix(job, source);
        let mut leases = Vec::new();
        for o in sink.list(&format!("{prefix}lease-")).await? {
            if let Some(g) = generation(&prefix, &o.key) {
                leases.push((g, o.key));
            }
        }
        leases.sort();
        if let Some((_, key)) = leases.last() {
            let info: Option<LeaseInfo> = match sink.get_bytes(key).await {
                Ok(b) => serde_json::from_slice(&b).ok(),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            if let Some(info) = info {
                let age = Timestamp::now().duration_since(info.refreshed);
                if age.as_secs() >= 0 && (age.as_secs() as u64) < stale.as_secs() && !dead_here(&info) {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "another follower holds the oplog lease of job `{job}` source `{source}`: pid {} on {} (refreshed {}s ago)",
                            info.pid,
                            info.host,
                            age.as_secs()
                        ),
                    )
                    .with_context("lease", key)
                    .with_hint(format!(
                        "only one follower writes a chain: stop the other one, or wait {}s after it died for its lease to go stale",
                        stale.as_secs()
                    )));
                }
            }
        }
        let next = leases.last().map_or(1, |(g, _)| g + 1);
        let key = format!("{prefix}lease-{next:012}.json");
        let now = Timestamp::now();
        let info = LeaseInfo {
            host: hostname(),
            pid: std::process::id(),
            taken: now,
            refreshed: now,
        };
        let bytes = serde_json::to_vec(&info).expect("lease serializes");
        sink.put_bytes(&key, bytes.into(), PutOptions::create())
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => Error::new(
                    ErrorKind::AlreadyExists,
                    format!("another follower took the oplog lease of job `{job}` source `{source}` at the same moment"),
                )
                .with_hint("only one follower writes a chain: stop the other one"),
                _ => e,
            })?;
        for (_, old) in &leases {
            let _ = sink.delete(old).await;
        }
        Ok(Lease { key, info })
    }

    impl Lease {
        /// Refreshes the lease; fails when another follower took it over.
        pub async fn refresh(&mut self, sink: &dyn Sink) -> Result<()> {
            let prefix = self.key.rsplit_once('/').map_or("", |(p, _)| p).to_string() + "/";
            let newer = sink
                .list(&format!("{prefix}lease-"))
                .await?
                .into_iter()
                .filter_map(|o| generation(&prefix, &o.key))
                .any(|g| Some(g) > generation(&prefix, &self.key));
            if newer {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    "another follower took over the oplog lease (this one was presumed dead)",
                )
                .with_context("lease", &self.key)
                .with_hint("run one follower per job; this one stops so the chain has one writer"));
            }
            self.info.refreshed = Timestamp::now();
            let bytes = serde_json::to_vec(&self.info).expect("lease serializes");
            sink.put_bytes(&self.key, bytes.into(), PutOptions::default())
                .await?;
            Ok(())
        }

        /// Gives the lease up.
        pub async fn release(self, sink: &dyn Sink) {
            let _ = sink.delete(&self.key).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(t: u32, i: u32) -> LogMark {
        LogMark {
            ts: LogPos { t, i },
            term: Some(1),
        }
    }

    fn slice(prev: LogMark, last: LogMark, start: Option<ChainStart>) -> SliceIndex {
        let enc = Encryption::Recipients(vec![]);
        let mut s = new_index("j", "db", prev, start, last.ts, last, 1, 1, 0, b"", &enc);
        s.first = LogPos {
            t: prev.ts.t,
            i: prev.ts.i + 1,
        };
        s
    }

    #[test]
    fn positions_parse_and_order() {
        let p: LogPos = "1764979200:3".parse().unwrap();
        assert_eq!(p, LogPos { t: 1764979200, i: 3 });
        assert!(p < LogPos::end_of_second(1764979200));
        assert!(LogPos::end_of_second(1764979200) < LogPos { t: 1764979201, i: 0 });
        for bad in ["", "12", "a:1", "1:-1", "1:2:3"] {
            assert!(bad.parse::<LogPos>().is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_split_at_gaps_and_missing_slices() {
        let start = || {
            Some(ChainStart {
                gap_after: None,
                reason: "first".into(),
            })
        };
        let a = slice(mark(10, 0), mark(20, 1), start());
        let b = slice(mark(20, 1), mark(30, 0), None);
        // c missing: d follows (40, 0)
        let d = slice(mark(40, 0), mark(50, 0), None);
        let e = slice(
            mark(60, 0),
            mark(70, 0),
            Some(ChainStart {
                gap_after: Some(mark(50, 0)),
                reason: "rolled over".into(),
            }),
        );
        let all = vec![a, b, d, e];
        let segs = segments(&all);
        assert_eq!(segs.len(), 3);
        assert_eq!(
            (segs[0].from, segs[0].to, segs[0].slices.clone()),
            (mark(10, 0), mark(30, 0), 0..2)
        );
        assert_eq!(segs[0].after_break, None);
        assert!(matches!(segs[1].after_break, Some(Break::Missing { .. })));
        assert!(matches!(segs[2].after_break, Some(Break::Gap { .. })));
        assert!(segs[0].covers(LogPos { t: 15, i: 0 }, LogPos { t: 30, i: 0 }));
        assert!(!segs[0].covers(LogPos { t: 15, i: 0 }, LogPos { t: 30, i: 1 }));
        assert_eq!(
            needed(&all, &segs[0], LogPos { t: 25, i: 0 }, LogPos { t: 26, i: 0 }),
            vec![1]
        );
        assert_eq!(
            needed(&all, &segs[0], LogPos { t: 15, i: 0 }, LogPos { t: 26, i: 0 }),
            vec![0, 1]
        );
        // A term change at the same position is a break too.
        let mut f = slice(mark(20, 1), mark(30, 0), None);
        f.prev.term = Some(2);
        let segs = segments(&[all[0].clone(), f]);
        assert_eq!(segs.len(), 2);
    }

    #[test]
    fn seal_and_open_round_trip_and_refuse_damage() {
        let key = crate::crypto::GeneratedKey::generate();
        let enc = Encryption::Recipients(vec![
            crate::crypto::RecipientKey::parse(&key.recipient()).unwrap(),
        ]);
        let mut ids = Identities::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, key.file_text()).unwrap();
        ids.add_file(&path).unwrap();
        let entries = b"entries entries entries".repeat(100);
        let object = seal(&entries, &enc).unwrap();
        let index = new_index(
            "j",
            "db",
            mark(1, 0),
            None,
            LogPos { t: 1, i: 1 },
            mark(2, 0),
            3,
            3,
            entries.len() as u64,
            &object,
            &enc,
        );
        assert_eq!(open(&index, &object, &ids).unwrap(), entries);
        let mut bad = object.clone();
        let n = bad.len() / 2;
        bad[n] ^= 1;
        assert_eq!(open(&index, &bad, &ids).unwrap_err().kind(), ErrorKind::Integrity);
        let json = index.to_json();
        let back = SliceIndex::from_json(&json, &index.index_key()).unwrap();
        assert_eq!(back, index);
        assert!(SliceIndex::from_json(&json, "oplog/j/db/0000000009-0000000000.json").is_err());
    }
}

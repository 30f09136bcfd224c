//! Sink locks: how backup, prune and copy runs on the same sink coordinate.
//!
//! For the prune/copy authors — the API, in short:
//!
//! ```text
//! let guard = coffer_core::pipeline::acquire_exclusive(sink.clone(), "prune").await?;   // prune
//! let guard = coffer_core::pipeline::acquire_shared(sink.clone(), "backup").await?;     // backup, copy
//! guard.ensure_held()?;          // before every delete: fails if the lock was lost/broken
//! guard.live_shared().await?;    // running backups/copies: never delete index-less objects then
//! guard.release().await;         // or just drop it (best-effort delete)
//! ```
//!
//! Prune must only ever delete snapshots that have an index: a running
//! backup's object has none yet, and backups hold shared locks that an
//! exclusive lock does not wait for.
//!
//! # Protocol
//!
//! Locks are small JSON objects ([`LockInfo`]) under `locks/` on the sink.
//! Their holder overwrites them every refresh interval (a background task);
//! a lock whose last refresh (the later of its `refreshed` field and the
//! sink's modification time) is older than the stale timeout is *stale*:
//! its holder is presumed dead and acquirers ignore it with a warning.
//!
//! - **Exclusive** (prune): `locks/exclusive-<generation>.json`, written
//!   with [`PutMode::Create`]. An acquirer lists the exclusive locks; if the
//!   newest generation is live the sink is locked; otherwise it creates the
//!   next generation. Create-only is atomic on sinks that support it, so of
//!   two acquirers that saw the same state exactly one wins. The winner then
//!   lists again and backs off if any *other* live exclusive lock appeared
//!   (an acquirer delayed across a whole run), so two holders never both
//!   proceed; it finally removes the stale generations below its own.
//! - **Shared** (backup, copy): `locks/shared-<random>.json`. Written first,
//!   then the acquirer checks for a live exclusive lock and, if there is
//!   one, removes its own and fails. Shared locks do not exclude each
//!   other, nor a running prune (which never deletes index-less objects).
//!
//! Defaults: refresh every [`DEFAULT_REFRESH`] (60 s), stale after
//! [`DEFAULT_STALE`] (10 minutes); `COFFER_LOCK_REFRESH_SECS` and
//! `COFFER_LOCK_STALE_SECS` override them. Hosts sharing a sink must have
//! clocks that agree to well within the stale timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::sink::{ObjectMeta, PutOptions, Sink, SinkExt};

/// Folder of the lock objects on a sink.
pub const LOCK_PREFIX: &str = "locks/";
/// Default refresh interval of a held lock.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);
/// Default age after which an unrefreshed lock is stale (10 × refresh).
pub const DEFAULT_STALE: Duration = Duration::from_secs(600);

/// Exclusive or shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockKind {
    /// One holder at a time (prune).
    Exclusive,
    /// Any number of holders, none while an exclusive lock is live (backup, copy).
    Shared,
}

/// The content of a lock object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct LockInfo {
    /// Exclusive or shared.
    pub kind: LockKind,
    /// The command holding it (`prune`, `backup`, `copy`).
    pub holder: String,
    /// Host of the holding process.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When the lock was taken.
    pub created: Timestamp,
    /// When it was last refreshed.
    pub refreshed: Timestamp,
    /// Random id of this lock.
    pub id: String,
    /// The kernel boot and PID namespace of the holder
    /// (`<boot_id>/<pid namespace>`): where this matches the reader's and
    /// the host is the same, `pid` is checked directly, so a lock of a
    /// dead process is stale at once. Absent in locks of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl LockInfo {
    /// "prune on host X pid N since T".
    pub fn describe(&self) -> String {
        format!(
            "{} on host {} pid {} since {}",
            self.holder,
            self.host,
            self.pid,
            self.created.strftime("%Y-%m-%d %H:%M:%SZ")
        )
    }
}

/// Timing of locks; [`LockOptions::from_env`] reads the overrides.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LockOptions {
    /// How often a held lock is rewritten.
    pub refresh: Duration,
    /// Age after which a lock is stale.
    pub stale: Duration,
    /// How long to wait for a conflicting lock to go away (`None`: fail at once).
    pub wait: Option<Duration>,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            refresh: DEFAULT_REFRESH,
            stale: DEFAULT_STALE,
            wait: None,
        }
    }
}

impl LockOptions {
    /// Defaults, overridden by `COFFER_LOCK_REFRESH_SECS` and
    /// `COFFER_LOCK_STALE_SECS` (whole seconds; the stale timeout defaults
    /// to 10 × the refresh interval when only that is set).
    pub fn from_env() -> Result<LockOptions> {
        let read = |name: &str| -> Result<Option<Duration>> {
            match std::env::var(name) {
                Ok(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(Duration::from_secs(n))),
                    _ => Err(crate::config_error(format!(
                        "{name}=`{v}` is not a positive number of seconds"
                    ))),
                },
                Err(_) => Ok(None),
            }
        };
        let refresh = read("COFFER_LOCK_REFRESH_SECS")?;
        let stale = read("COFFER_LOCK_STALE_SECS")?;
        let mut o = LockOptions::default();
        if let Some(r) = refresh {
            o.refresh = r;
            o.stale = r * 10;
        }
        if let Some(s) = stale {
            o.stale = s;
        }
        if o.stale <= o.refresh {
            return Err(crate::config_error(format!(
                "the lock stale timeout ({}s) must be longer than the refresh interval ({}s)",
                o.stale.as_secs(),
                o.refresh.as_secs()
            ))
            .with_hint("set COFFER_LOCK_STALE_SECS to about 10 × COFFER_LOCK_REFRESH_SECS"));
        }
        Ok(o)
    }

    /// Sets how long to wait for a conflicting lock.
    pub fn with_wait(mut self, wait: Option<Duration>) -> Self {
        self.wait = wait;
        self
    }

    /// Sets the refresh interval and stale timeout.
    pub fn with_timing(mut self, refresh: Duration, stale: Duration) -> Self {
        self.refresh = refresh;
        self.stale = stale;
        self
    }
}

/// A lock found on a sink.
#[derive(Debug, Clone)]
pub struct LockStatus {
    /// Its key.
    pub key: String,
    /// Its content (`None` if unreadable: treated as live until stale by
    /// its modification time).
    pub info: Option<LockInfo>,
    /// Whether it is stale.
    pub stale: bool,
}

impl LockStatus {
    /// Who holds it, for messages.
    pub fn describe(&self) -> String {
        match &self.info {
            Some(i) => i.describe(),
            None => format!("an unreadable lock object {}", self.key),
        }
    }
}

fn exclusive_generation(key: &str) -> Option<u64> {
    key.strip_prefix(LOCK_PREFIX)?
        .strip_prefix("exclusive-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

fn is_shared(key: &str) -> bool {
    key.strip_prefix(LOCK_PREFIX)
        .is_some_and(|k| k.starts_with("shared-") && k.ends_with(".json"))
}

/// Every lock on `sink`, with whether it is stale (by `opts.stale`).
pub async fn list_locks(sink: &dyn Sink, opts: &LockOptions) -> Result<Vec<LockStatus>> {
    let objects = sink.list(LOCK_PREFIX).await?;
    let now = Timestamp::now();
    let mut out = Vec::new();
    for o in objects {
        if exclusive_generation(&o.key).is_none() && !is_shared(&o.key) {
            continue;
        }
        let info = match sink.get_bytes(&o.key).await {
            Ok(b) => serde_json::from_slice::<LockInfo>(&b).ok(),
            Err(e) if e.kind() == ErrorKind::NotFound => continue, // released meanwhile
            Err(e) => return Err(e),
        };
        let stale = is_stale(&o, info.as_ref(), now, opts.stale);
        out.push(LockStatus {
            key: o.key,
            info,
            stale,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn is_stale(meta: &ObjectMeta, info: Option<&LockInfo>, now: Timestamp, stale: Duration) -> bool {
    if info.is_some_and(holder_is_dead) {
        return true;
    }
    // The later of the holder's clock and the sink's: never call a lock
    // stale because one of the two clocks lags.
    let last = [info.map(|i| i.refreshed), meta.modified]
        .into_iter()
        .flatten()
        .max();
    match last {
        Some(t) => now.duration_since(t).unsigned_abs() > stale && now > t,
        None => false,
    }
}

/// A held lock. Refreshed in the background until released or dropped;
/// dropping deletes the lock (best effort, blocking briefly).
#[derive(Debug)]
pub struct LockGuard {
    sink: Arc<dyn Sink>,
    key: String,
    info: LockInfo,
    opts: LockOptions,
    lost: Arc<AtomicBool>,
    refresher: Option<Refresher>,
    released: bool,
}

/// The background task that rewrites a held lock.
#[derive(Debug)]
struct Refresher {
    /// Dropping (or sending on) it asks the task to stop between writes.
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl LockGuard {
    /// The lock's content as written.
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Its key on the sink.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Fails if the lock was lost: removed by `coffer unlock --force`, or
    /// not refreshed in time (then another process may have taken it).
    /// Call it before every destructive step.
    pub fn ensure_held(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("lost the sink lock {} while running", self.key),
            )
            .with_context("sink", self.sink.info())
            .with_hint("another process broke or took over the lock; stopped before changing anything more — run the command again"));
        }
        Ok(())
    }

    /// Live shared locks other than this one: backups or copies running now.
    pub async fn live_shared(&self) -> Result<Vec<LockStatus>> {
        Ok(list_locks(self.sink.as_ref(), &self.opts)
            .await?
            .into_iter()
            .filter(|l| !l.stale && l.key != self.key && is_shared(&l.key))
            .collect())
    }

    /// Stops refreshing and deletes the lock.
    ///
    /// Waits for a refresh write already under way to end first: a write
    /// that landed after the delete would leave a live-looking lock behind.
    pub async fn release(mut self) {
        if let Some(r) = self.refresher.take() {
            drop(r.stop);
            let abort = r.task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(30), r.task)
                .await
                .is_err()
            {
                tracing::warn!(
                    "a refresh of the lock {} hung; deleting the lock anyway",
                    self.key
                );
                abort.abort();
            }
        }
        self.released = true;
        if let Err(e) = self.sink.delete(&self.key).await {
            tracing::warn!(
                "could not remove the lock {}: {e}; it goes stale on its own",
                self.key
            );
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let refresher = self.refresher.take();
        if self.released {
            return;
        }
        // The runtime may be shutting down (Ctrl-C), so delete on a thread
        // of its own with a small runtime, and wait for it briefly.
        let sink = self.sink.clone();
        let key = self.key.clone();
        let t = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(10), sink.delete(&key)).await;
            });
        });
        let _ = t.join();
        // A refresh write under way may land after that delete: once the
        // refresher has stopped, delete again (where the runtime lives on;
        // a lock left by a process that exited is stale at once on this
        // host anyway).
        if let Some(r) = refresher {
            drop(r.stop);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let (sink, key) = (self.sink.clone(), self.key.clone());
                handle.spawn(async move {
                    let _ = r.task.await;
                    let _ = sink.delete(&key).await;
                });
            }
        }
    }
}

fn new_info(kind: LockKind, holder: &str) -> LockInfo {
    let now = Timestamp::now();
    LockInfo {
        kind,
        holder: holder.to_string(),
        host: crate::bundle::hostname(),
        pid: std::process::id(),
        created: now,
        refreshed: now,
        id: format!("{:016x}", rand::random::<u64>()),
        scope: crate::fsutil::process_scope(),
    }
}

/// Whether the holder of `info` is known to be gone: it ran on this host,
/// in this boot and PID namespace, and no process has its PID. A holder
/// elsewhere (or of an older version, without a scope) is never judged
/// here: its lock goes stale by time.
fn holder_is_dead(info: &LockInfo) -> bool {
    let same_scope = info.scope.is_some() && info.scope == crate::fsutil::process_scope();
    info.host == crate::bundle::hostname() && same_scope && crate::fsutil::pid_is_gone(info.pid)
}

fn lock_bytes(info: &LockInfo) -> Bytes {
    let mut v = serde_json::to_vec_pretty(info).expect("lock serializes");
    v.push(b'\n');
    Bytes::from(v)
}

fn locked_error(sink: &dyn Sink, holder: &LockStatus) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("sink is locked by {}", holder.describe()),
    )
    .with_context("sink", sink.info())
    .with_context("lock", &holder.key)
    .temporary()
    .with_hint("wait for it to finish and run the command again; if that process is gone, `coffer unlock --sink S` removes a stale lock and `coffer unlock --force` a live one")
}

/// Whether `err` says the sink is locked by another run (as opposed to a
/// failure to read or write the lock objects).
pub fn is_lock_conflict(err: &Error) -> bool {
    err.context().iter().any(|(k, _)| *k == "lock")
}

fn warn_stale(l: &LockStatus) {
    tracing::warn!("ignoring the stale lock {} held by {}", l.key, l.describe());
    eprintln!(
        "warning: ignoring a stale lock held by {} ({}); `coffer unlock` removes it",
        l.describe(),
        l.key
    );
}

fn start(sink: Arc<dyn Sink>, key: String, info: LockInfo, opts: LockOptions) -> LockGuard {
    let lost = Arc::new(AtomicBool::new(false));
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let (sink, key, mut info, opts, lost) = (
            sink.clone(),
            key.clone(),
            info.clone(),
            opts.clone(),
            lost.clone(),
        );
        tokio::spawn(async move {
            let mut last_ok = std::time::Instant::now();
            loop {
                // Stops only here, between writes: a write is never cut
                // off half-way (its blocking part would go on regardless).
                tokio::select! {
                    _ = tokio::time::sleep(opts.refresh) => {}
                    _ = &mut stopped => return,
                }
                // Never resurrect a lock someone removed (`unlock --force`).
                match sink.head(&key).await {
                    Ok(None) => {
                        tracing::warn!("the lock {key} was removed by another process");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(Some(_)) => {}
                    Err(e) => tracing::warn!("checking the lock {key}: {e}"),
                }
                info.refreshed = Timestamp::now();
                match sink
                    .put_bytes(&key, lock_bytes(&info), PutOptions::default())
                    .await
                {
                    Ok(_) => last_ok = std::time::Instant::now(),
                    Err(e) => tracing::warn!("refreshing the lock {key}: {e}"),
                }
                if last_ok.elapsed() >= opts.stale {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
            }
        })
    };
    LockGuard {
        sink,
        key,
        info,
        opts,
        lost,
        refresher: Some(Refresher { stop, task }),
        released: false,
    }
}

/// Takes the sink's exclusive lock for `holder` (e.g. `prune`), with
/// [`LockOptions::from_env`].
pub async fn acquire_exclusive(sink: Arc<dyn Sink>, holder: &str) -> Result<LockGuard> {
    acquire_exclusive_with(sink, holder, &LockOptions::from_env()?).await
}

/// Takes a shared lock for `holder` (e.g. `backup`), with
/// [`LockOptions::from_env`].
pub async fn acquire_shared(sink: Arc<dyn Sink>, holder: &str) -> Result<LockGuard> {
    acquire_shared_with(sink, holder, &LockOptions::from_env()?).await
}

/// Retries `attempt` while it reports a conflict (a temporary error), up
/// to `opts.wait`.
async fn with_wait<F, Fut>(opts: &LockOptions, mut attempt: F) -> Result<LockGuard>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<LockGuard>>,
{
    let deadline = opts.wait.map(|w| std::time::Instant::now() + w);
    loop {
        match attempt().await {
            Err(e) if e.is_temporary() && deadline.is_some_and(|d| std::time::Instant::now() < d) => {
                tracing::info!("{e}; waiting");
                let jitter = Duration::from_millis(200 + rand::random::<u64>() % 800);
                tokio::time::sleep(jitter).await;
            }
            other => return other,
        }
    }
}

/// [`acquire_exclusive`] with explicit options.
pub async fn acquire_exclusive_with(
    sink: Arc<dyn Sink>,
    holder: &str,
    opts: &LockOptions,
) -> Result<LockGuard> {
    with_wait(opts, || try_exclusive(sink.clone(), holder, opts)).await
}

/// [`acquire_shared`] with explicit options.
pub async fn acquire_shared_with(sink: Arc<dyn Sink>, holder: &str, opts: &LockOptions) -> Result<LockGuard> {
    with_wait(opts, || try_shared(sink.clone(), holder, opts)).await
}

async fn try_exclusive(sink: Arc<dyn Sink>, holder: &str, opts: &LockOptions) -> Result<LockGuard> {
    let locks = list_locks(sink.as_ref(), opts).await?;
    let exclusive: Vec<&LockStatus> = locks
        .iter()
        .filter(|l| exclusive_generation(&l.key).is_some())
        .collect();
    if let Some(live) = exclusive.iter().find(|l| !l.stale) {
        return Err(locked_error(sink.as_ref(), live));
    }
    for l in &exclusive {
        warn_stale(l);
    }
    let generation = exclusive
        .iter()
        .filter_map(|l| exclusive_generation(&l.key))
        .max()
        .unwrap_or(0)
        + 1;
    let key = format!("{LOCK_PREFIX}exclusive-{generation:012}.json");
    let info = new_info(LockKind::Exclusive, holder);
    match sink
        .put_bytes(&key, lock_bytes(&info), PutOptions::create())
        .await
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            // Another acquirer won this generation a moment ago.
            let winner = list_locks(sink.as_ref(), opts)
                .await?
                .into_iter()
                .find(|l| l.key == key)
                .unwrap_or(LockStatus {
                    key: key.clone(),
                    info: None,
                    stale: false,
                });
            return Err(locked_error(sink.as_ref(), &winner));
        }
        Err(e) => return Err(e.prefix("writing the lock")),
    }
    let guard = start(sink.clone(), key.clone(), info, opts.clone());
    // Check after write: back off if any other live exclusive lock exists.
    let after = list_locks(sink.as_ref(), opts).await?;
    if let Some(other) = after
        .iter()
        .find(|l| l.key != key && !l.stale && exclusive_generation(&l.key).is_some())
    {
        let err = locked_error(sink.as_ref(), other);
        guard.release().await;
        return Err(err);
    }
    for l in after
        .iter()
        .filter(|l| l.stale && exclusive_generation(&l.key).is_some())
    {
        if exclusive_generation(&l.key) < Some(generation) {
            let _ = sink.delete(&l.key).await;
        }
    }
    Ok(guard)
}

async fn try_shared(sink: Arc<dyn Sink>, holder: &str, opts: &LockOptions) -> Result<LockGuard> {
    let info = new_info(LockKind::Shared, holder);
    let key = format!("{LOCK_PREFIX}shared-{}.json", info.id);
    sink.put_bytes(&key, lock_bytes(&info), PutOptions::create())
        .await
        .map_err(|e| e.prefix("writing the lock"))?;
    let guard = start(sink.clone(), key, info, opts.clone());
    let locks = match list_locks(sink.as_ref(), opts).await {
        Ok(l) => l,
        Err(e) => {
            guard.release().await;
            return Err(e);
        }
    };
    let exclusive = locks.iter().filter(|l| exclusive_generation(&l.key).is_some());
    let mut live = None;
    for l in exclusive {
        if l.stale {
            warn_stale(l);
        } else if live.is_none() {
            live = Some(l.clone());
        }
    }
    if let Some(l) = live {
        let err = locked_error(sink.as_ref(), &l);
        guard.release().await;
        return Err(err);
    }
    Ok(guard)
}

/// What [`break_locks`] removed and left.
#[derive(Debug, Default)]
pub struct UnlockReport {
    /// Locks removed (stale ones, and live ones with `force`).
    pub removed: Vec<LockStatus>,
    /// Live locks left in place.
    pub kept: Vec<LockStatus>,
}

/// Removes the stale locks of `sink`, and with `force` the live ones too.
pub async fn break_locks(sink: &dyn Sink, force: bool, opts: &LockOptions) -> Result<UnlockReport> {
    let mut report = UnlockReport::default();
    for l in list_locks(sink, opts).await? {
        if l.stale || force {
            sink.delete(&l.key)
                .await
                .map_err(|e| e.prefix(format!("removing the lock {}", l.key)))?;
            report.removed.push(l);
        } else {
            report.kept.push(l);
        }
    }
    Ok(report)
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::testkit::MemorySink;

    fn fast() -> LockOptions {
        LockOptions::default().with_timing(Duration::from_millis(50), Duration::from_millis(500))
    }

    /// A sink whose lock writes finish 300 ms late, on a task of their own
    /// that dropping the `put` future does not stop, like a local sink's
    /// write on a blocking thread.
    #[derive(Debug)]
    struct SlowLockWrites {
        inner: Arc<MemorySink>,
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl Sink for SlowLockWrites {
        fn info(&self) -> crate::sink::SinkInfo {
            self.inner.info()
        }
        async fn put(&self, key: &str, body: crate::sink::ByteStream, opts: PutOptions) -> Result<u64> {
            if !key.starts_with(LOCK_PREFIX) || opts.mode == crate::sink::PutMode::Create {
                return self.inner.put(key, body, opts).await;
            }
            self.writes.fetch_add(1, Ordering::SeqCst);
            let (inner, key) = (self.inner.clone(), key.to_string());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                inner.put(&key, body, opts).await
            })
            .await
            .expect("write task")
        }
        async fn get(&self, key: &str) -> Result<crate::sink::ByteStream> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
    }

    #[tokio::test]
    async fn release_waits_for_a_refresh_under_way_so_no_lock_is_left_behind() {
        for shared in [false, true] {
            let inner = Arc::new(MemorySink::new());
            let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let sink: Arc<dyn Sink> = Arc::new(SlowLockWrites {
                inner: inner.clone(),
                writes: writes.clone(),
            });
            let g = if shared {
                acquire_shared_with(sink.clone(), "backup", &fast()).await
            } else {
                acquire_exclusive_with(sink.clone(), "prune", &fast()).await
            }
            .unwrap();
            // Release while a refresh write is under way.
            let before = writes.load(Ordering::SeqCst);
            while writes.load(Ordering::SeqCst) == before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            g.release().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(
                inner.keys().iter().all(|k| !k.starts_with(LOCK_PREFIX)),
                "a lock was left behind: {:?}",
                inner.keys()
            );
        }
    }

    #[tokio::test]
    async fn a_lock_of_a_dead_process_on_this_host_is_stale_at_once() {
        let sink: Arc<dyn Sink> = Arc::new(MemorySink::new());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let dead = LockInfo {
            pid: dead_pid,
            ..new_info(LockKind::Exclusive, "prune")
        };
        let elsewhere = LockInfo {
            pid: dead_pid,
            host: "another-host".into(),
            ..new_info(LockKind::Shared, "backup")
        };
        let older_version = LockInfo {
            pid: dead_pid,
            scope: None,
            ..new_info(LockKind::Shared, "backup")
        };
        let alive = new_info(LockKind::Shared, "backup");
        for (key, info) in [
            ("locks/exclusive-000000000001.json", &dead),
            ("locks/shared-elsewhere.json", &elsewhere),
            ("locks/shared-older.json", &older_version),
            ("locks/shared-alive.json", &alive),
        ] {
            sink.put_bytes(key, lock_bytes(info), PutOptions::default())
                .await
                .unwrap();
        }
        // The default stale timeout (10 minutes): only the dead PID counts.
        let stale: Vec<(String, bool)> = list_locks(sink.as_ref(), &LockOptions::default())
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.key, l.stale))
            .collect();
        assert_eq!(
            stale,
            [
                ("locks/exclusive-000000000001.json".to_string(), true),
                ("locks/shared-alive.json".to_string(), false),
                ("locks/shared-elsewhere.json".to_string(), false),
                ("locks/shared-older.json".to_string(), false),
            ]
        );
        // A backup is not blocked by the dead prune's lock.
        let g = acquire_shared_with(sink.clone(), "backup", &LockOptions::default())
            .await
            .unwrap();
        g.release().await;
    }

    #[tokio::test]
    async fn exclusive_excludes_exclusive_and_shared() {
        let sink: Arc<dyn Sink> = Arc::new(MemorySink::new());
        let g = acquire_exclusive_with(sink.clone(), "prune", &fast())
            .await
            .unwrap();
        let err = acquire_exclusive_with(sink.clone(), "prune", &fast())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("sink is locked by prune on host"),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        let err = acquire_shared_with(sink.clone(), "backup", &fast())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("locked by prune"), "{err}");
        // The refused shared acquirer left nothing behind.
        assert_eq!(list_locks(sink.as_ref(), &fast()).await.unwrap().len(), 1);
        g.release().await;
        assert!(list_locks(sink.as_ref(), &fast()).await.unwrap().is_empty());
        let g2 = acquire_exclusive_with(sink.clone(), "prune", &fast())
            .await
            .unwrap();
        drop(g2);
        assert!(
            sink.list(LOCK_PREFIX).await.unwrap().is_empty(),
            "drop deletes the lock"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_exclusive_acquirers_never_both_win() {
        for _ in 0..20 {
            let sink: Arc<dyn Sink> = Arc::new(MemorySink::new());
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let s = sink.clone();
                    tokio::spawn(async move { acquire_exclusive_with(s, "prune", &fast()).await })
                })
                .collect();
            let mut won = Vec::new();
            for t in tasks {
                if let Ok(g) = t.await.unwrap() {
                    won.push(g);
                }
            }
            assert_eq!(
                won.len(),
                1,
                "exactly one of the concurrent acquirers holds the lock"
            );
        }
    }

    #[tokio::test]
    async fn shared_locks_coexist_and_with_a_later_exclusive() {
        let sink: Arc<dyn Sink> = Arc::new(MemorySink::new());
        let a = acquire_shared_with(sink.clone(), "backup", &fast())
            .await
            .unwrap();
        let b = acquire_shared_with(sink.clone(), "copy", &fast()).await.unwrap();
        let x = acquire_exclusive_with(sink.clone(), "prune", &fast())
            .await
            .unwrap();
        let live = x.live_shared().await.unwrap();
        assert_eq!(live.len(), 2);
        a.release().await;
        assert_eq!(x.live_shared().await.unwrap().len(), 1);
        drop(b);
        drop(x);
    }

    #[tokio::test]
    async fn refresh_keeps_a_lock_live_and_stale_locks_are_taken_over() {
        let sink: Arc<dyn Sink> = Arc::new(MemorySink::new());
        let g = acquire_exclusive_with(sink.clone(), "prune", &fast())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        // Refreshed meanwhile: still live after more than the stale timeout.
        assert!(
            acquire_exclusive_with(sink.clone(), "prune", &fast())
                .await
                .is_err()
        );
        g.ensure_held().unwrap();

        // A crashed holder: a lock nobody refreshes.
        let crashed = LockInfo {
            refreshed: "2020-01-01T00:00:00Z".parse().unwrap(),
            created: "2020-01-01T00:00:00Z".parse().unwrap(),
            ..new_info(LockKind::Exclusive, "prune")
        };
        let sink2: Arc<dyn Sink> = Arc::new(MemorySink::new());
        sink2
            .put_bytes(
                "locks/exclusive-000000000007.json",
                lock_bytes(&crashed),
                PutOptions::create(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await; // MemorySink mtime ages too
        let g2 = acquire_exclusive_with(sink2.clone(), "prune", &fast())
            .await
            .unwrap();
        assert_eq!(g2.key(), "locks/exclusive-000000000008.json");
        assert_eq!(
            sink2.list(LOCK_PREFIX).await.unwrap().len(),
            1,
            "the stale generation is removed"
        );
        g.release().await;
        g2.release().await;
    }

    #[tokio::test]
    async fn wait_gets_the_lock_once_released() {
        let sink: Arc<dyn Sink> = Arc::new(MemorySink::new());
        let g = acquire_exclusive_with(sink.clone(), "prune", &fast())
            .await
            .unwrap();
        let s = sink.clone();
        let waiter = tokio::spawn(async move {
            acquire_exclusive_with(s, "prune", &fast().with_wait(Some(Duration::from_secs(10)))).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        g.release().await;
        waiter.await.unwrap().unwrap().release().await;
    }

    #[tokio::test]
    async fn unlock_removes_stale_and_forced_live_locks_and_the_holder_notices() {
        let sink: Arc<dyn Sink> = Arc::new(MemorySink::new());
        let g = acquire_shared_with(sink.clone(), "backup", &fast())
            .await
            .unwrap();
        let r = break_locks(sink.as_ref(), false, &fast()).await.unwrap();
        assert!(r.removed.is_empty());
        assert_eq!(r.kept.len(), 1);
        let r = break_locks(sink.as_ref(), true, &fast()).await.unwrap();
        assert_eq!(r.removed.len(), 1);
        assert_eq!(r.removed[0].info.as_ref().unwrap().holder, "backup");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(g.ensure_held().is_err(), "a broken lock is noticed");
        assert!(
            sink.list(LOCK_PREFIX).await.unwrap().is_empty(),
            "and never resurrected"
        );
    }

    #[test]
    fn env_overrides() {
        // Only checks parsing; the variables are not set in tests.
        let o = LockOptions::from_env().unwrap();
        assert!(o.stale > o.refresh);
    }
}

//! Sink locks around a command, and a backup run under them.

use std::sync::Arc;

use coffer_core::{BackupRequest, LockGuard, LockOptions, Progress, Result, Sink};

use super::Ctx;
use crate::output::Spinner;

/// Shared locks on every sink of a backup (released on drop). Refuses to
/// start while a prune holds one of them; a sink where no lock can be
/// written is left to fail in the backup itself.
pub(crate) async fn lock_shared(sinks: &[(String, Arc<dyn Sink>)], holder: &str) -> Result<Vec<LockGuard>> {
    let opts = LockOptions::from_env()?;
    let mut guards = Vec::new();
    for (name, sink) in sinks {
        match coffer_core::acquire_shared_with(sink.clone(), holder, &opts).await {
            Ok(g) => guards.push(g),
            // A sink that cannot even store a lock fails its put too; the
            // run reports it per sink (a partial failure) instead.
            Err(e) if !coffer_core::is_lock_conflict(&e) => {
                tracing::warn!("sink `{name}`: cannot take a lock: {e}");
            }
            Err(e) => {
                for g in guards {
                    g.release().await;
                }
                return Err(e.prefix(format!("sink `{name}`")));
            }
        }
    }
    Ok(guards)
}

/// Releases held locks.
pub(crate) async fn release_all(guards: Vec<LockGuard>) {
    for g in guards {
        g.release().await;
    }
}

/// Runs a backup holding a shared lock on every sink, with a progress
/// spinner; returns the outcome and the wall time in seconds. `what` names
/// the holder in the locks (`backup`, `import-runbook`).
pub(crate) async fn run_locked_backup(
    ctx: &Ctx,
    req: BackupRequest,
    what: &str,
) -> Result<(coffer_core::BackupOutcome, f64)> {
    let progress = Arc::new(Progress::default());
    let spinner = Spinner::start(what, progress.clone(), ctx.quiet);
    let started = std::time::Instant::now();
    // Shared locks: a running prune (exclusive lock) makes the backup
    // refuse at once; a prune started later never deletes this snapshot's
    // object, which has no index yet.
    let lock_targets: Vec<(String, Arc<dyn Sink>)> = req
        .sinks
        .iter()
        .map(|t| (t.name.clone(), t.sink.clone()))
        .collect();
    let locks = match crate::ctx::lock_shared(&lock_targets, what).await {
        Ok(l) => l,
        Err(e) => {
            spinner.finish();
            return Err(e);
        }
    };
    let outcome = coffer_core::run_backup(req, progress).await;
    crate::ctx::release_all(locks).await;
    spinner.finish();
    Ok((outcome?, started.elapsed().as_secs_f64()))
}

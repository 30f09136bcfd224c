//! A backup run under the sinks' locks, with a progress display.

use std::sync::Arc;

use coffer_core::{BackupRequest, Progress, Result};

use super::Ctx;
use crate::output::Spinner;

/// [`coffer_core::ops::backup`] with a progress display; returns the
/// outcome and the wall time in seconds. `what` names the holder in the
/// locks (`backup`, `import-runbook`).
pub(crate) async fn run_locked_backup(
    ctx: &Ctx,
    req: BackupRequest,
    what: &str,
) -> Result<(coffer_core::BackupOutcome, f64)> {
    let progress = Arc::new(Progress::default());
    let spinner = Spinner::start(what, progress.clone(), ctx.quiet);
    let done = coffer_core::ops::backup(req, what, progress).await;
    spinner.finish();
    done
}

//! Restoring an opened snapshot with a progress display: shared by `coffer
//! restore` and `coffer drill` ([`coffer_app::App::restore`]).

use std::sync::Arc;

use coffer_app::restoring::{Opened, RestoreOf};
use coffer_core::{Progress, RestoreOutcome, Result};

use crate::ctx::Ctx;
use crate::output::Spinner;

/// Restores `opened` as `what` says, showing the phases (verify, decrypt,
/// commit) unless `--quiet`.
pub(crate) async fn restore_snapshot(
    ctx: &Ctx,
    opened: &mut Opened,
    what: RestoreOf<'_>,
) -> Result<RestoreOutcome> {
    let progress = Arc::new(Progress::default());
    let spinner = Spinner::start("restore", progress.clone(), ctx.quiet);
    let outcome = ctx.app.restore(opened, what, progress).await;
    spinner.finish();
    outcome
}

//! Restoring a verified snapshot: shared by `coffer restore` and `coffer
//! drill`. Fetches the object (its SHA-256 checked against the index),
//! decrypts it and hands every selected source's entries to its restorer,
//! showing the phases (verify, decrypt, commit).

use std::path::Path;
use std::sync::Arc;

use coffer_core::ops::RestoreRequest;
use coffer_core::{AdmittedIndex, Identities, Progress, RestoreOptions, RestoreOutcome, Result, Sink};

use crate::config::Config;
use crate::ctx::Ctx;
use crate::output::Spinner;

/// Restores `index` from `sink` with `opts` ([`coffer_core::ops::restore`]):
/// the sources named in `only` (all when empty), each rebuilt from the
/// config when it declares a source of that name and kind, else from the
/// bundle's origin (where only the bundle names the place, only with
/// `origin_places`: see [`RestoreRequest::origin_places`]); with a progress
/// display and Ctrl-C.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn restore_snapshot(
    ctx: &Ctx,
    config: Option<&Config>,
    sink: &dyn Sink,
    index: &AdmittedIndex,
    ids: Identities,
    only: &[String],
    cache_dir: Option<&Path>,
    mut opts: RestoreOptions,
    origin_places: bool,
) -> Result<RestoreOutcome> {
    opts.cancel = ctx.cancel.clone();
    let req = RestoreRequest {
        index: index.clone(),
        identities: ids,
        only: only.to_vec(),
        configured: config.map(|c| c.sources.clone()).unwrap_or_default(),
        registry: ctx.registry.clone(),
        cache_dir: cache_dir.map(Path::to_path_buf),
        options: opts,
        origin_places,
    };
    let progress = Arc::new(Progress::default());
    let spinner = Spinner::start("restore", progress.clone(), ctx.quiet);
    let outcome = coffer_core::ops::restore(sink, req, progress).await;
    spinner.finish();
    outcome
}

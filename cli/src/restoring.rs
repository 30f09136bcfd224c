//! Restoring a verified snapshot: shared by `coffer restore` and `coffer
//! drill`. Fetches the object (its SHA-256 checked against the index),
//! decrypts it and hands every selected source's entries to its restorer,
//! showing the phases (verify, decrypt, commit).

use std::path::Path;
use std::sync::Arc;

use coffer_core::{
    Error, ErrorKind, Identities, Index, Progress, ProgressRead, RestoreOptions, RestoreOutcome, Result,
    Sink, SourceRecord, SourceResolver,
};

use crate::config::Config;
use crate::ctx::Ctx;
use crate::output::Spinner;

/// Restores `index` from `sink` with `opts`: the sources named in `only`
/// (all when empty), each rebuilt from the config when it declares a
/// source of that name and kind, else from the bundle's origin.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn restore_snapshot(
    ctx: &Ctx,
    config: Option<&Config>,
    sink: &dyn Sink,
    index: &Index,
    ids: Identities,
    only: &[String],
    cache_dir: Option<&Path>,
    mut opts: RestoreOptions,
) -> Result<RestoreOutcome> {
    let progress = Arc::new(Progress::default());
    let spinner = Spinner::start("restore", progress.clone(), ctx.quiet);
    let file = coffer_core::fetch_verified(sink, index, cache_dir, Some(&progress)).await;
    let file = match file {
        Ok(f) => ProgressRead::new(f, progress.clone(), "decrypt", index.object.size, Some("commit")),
        Err(e) => {
            spinner.finish();
            return Err(e);
        }
    };

    let config_sources = config.map(|c| c.sources.clone()).unwrap_or_default();
    let registry = ctx.registry.clone();
    let only = only.to_vec();
    let resolve: SourceResolver = Box::new(move |rec: &SourceRecord| {
        if !only.is_empty() && !only.iter().any(|o| o == &rec.name || o == &rec.kind) {
            return Ok(None);
        }
        if let Some(s) = config_sources.get(&rec.name)
            && s.info().kind == rec.kind
        {
            return Ok(Some(s.clone()));
        }
        let factory = registry.source_factory(&rec.kind)?;
        factory.from_origin(&rec.name, &rec.origin).map(Some)
    });
    opts.cancel = ctx.cancel.clone();
    let handle = tokio::runtime::Handle::current();
    let idx = index.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        coffer_core::restore_bundle(file, &idx, &ids, resolve, opts, handle)
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()));
    spinner.finish();
    outcome?
}

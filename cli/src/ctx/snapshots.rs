//! Finding a snapshot on the selected sinks, opening it, and checking it
//! deeply with a progress display.

use std::sync::Arc;

use coffer_core::{Catalog, CatalogEntry, Error, ErrorKind, Identities, Progress, Result, Sink};

use super::Ctx;
use crate::output::Spinner;

/// Finds `spec` on the first of `sinks` that has it.
pub(crate) async fn find_snapshot(
    sinks: &[(String, Arc<dyn Sink>)],
    spec: &str,
) -> Result<(String, Arc<dyn Sink>, CatalogEntry)> {
    let mut last_err = None;
    for (name, sink) in sinks {
        let cat = Catalog::load(sink.as_ref())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        match cat.resolve(spec) {
            Ok(e) => return Ok((name.clone(), sink.clone(), e.clone())),
            // Another sink may hold a good copy; if none does, a corrupt
            // index is what the user must hear about, not "not found".
            Err(e) => {
                let worse = last_err
                    .as_ref()
                    .is_none_or(|l: &Error| l.kind() != ErrorKind::Integrity);
                if worse {
                    last_err = Some(e);
                }
            }
        }
    }
    Err(last_err.unwrap_or_else(|| Error::new(ErrorKind::NotFound, "no sink")))
}

/// A snapshot to decrypt, as `restore` and `drill` start: the snapshot
/// `spec` on the selected sinks with its signature judged before anything
/// is fetched, and the keys to open it (`needs_key` is the error when none
/// was given, e.g. "restore needs a key").
pub(crate) struct Opened {
    pub(crate) config: Option<crate::config::Config>,
    pub(crate) sink_name: String,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) entry: CatalogEntry,
    pub(crate) ids: Identities,
    pub(crate) signature: coffer_core::TrustState,
}

pub(crate) async fn open_snapshot(
    ctx: &Ctx,
    sel: &super::ReadSel,
    spec: &str,
    needs_key: &str,
) -> Result<Opened> {
    let super::Reading { config, sinks, trust } = ctx.reading(sel)?;
    let ids = super::identities(&sel.keys)?;
    if ids.is_empty() {
        return Err(coffer_core::config_error(needs_key.to_string())
            .with_hint("pass --identity FILE (or --passphrase for passphrase bundles)"));
    }
    let (sink_name, sink, entry) = find_snapshot(&sinks, spec).await?;
    // Before fetching or decrypting anything: a forged snapshot stops here.
    let signature = super::enforce(&trust, &entry)?;
    Ok(Opened {
        config,
        sink_name,
        sink,
        entry,
        ids,
        signature,
    })
}

/// [`coffer_core::ops::deep_check`] with a progress display.
pub(crate) async fn deep_check(
    ctx: &Ctx,
    what: &str,
    sink: &dyn Sink,
    index: &coffer_core::Index,
    ids: Arc<Identities>,
) -> Result<coffer_core::BundleSummary> {
    let progress = Arc::new(Progress::default());
    let shown = Spinner::start(what, progress.clone(), ctx.quiet);
    let checked = coffer_core::ops::deep_check(sink, index, ids, &ctx.registry, progress).await;
    shown.finish();
    checked
}

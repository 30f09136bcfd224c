//! `show`: one snapshot's public index and signature, and with a key its
//! manifest (after the whole bundle verified).

use std::sync::Arc;

use super::ShowOutcome;
use crate::{
    BundleSummary, Catalog, CatalogEntry, Error, ErrorKind, Identities, Progress, Registry, Result, Sink,
    TrustedSigners,
};

/// Finds `spec` (`latest`, an id or a unique prefix) on the first of
/// `sinks` that has it: `(sink name, sink, entry)`. When none has it, a
/// corrupt index is what the user hears about, not "not found".
pub async fn find_snapshot(
    sinks: &[(String, Arc<dyn Sink>)],
    spec: &str,
) -> Result<(String, Arc<dyn Sink>, CatalogEntry)> {
    find_job_snapshot(sinks, spec, None).await
}

/// [`find_snapshot`] among the snapshots of `job` when given (see
/// [`Catalog::resolve_in`]): `latest` is that job's newest.
pub async fn find_job_snapshot(
    sinks: &[(String, Arc<dyn Sink>)],
    spec: &str,
    job: Option<&str>,
) -> Result<(String, Arc<dyn Sink>, CatalogEntry)> {
    let mut last_err = None;
    for (name, sink) in sinks {
        let cat = Catalog::load(sink.as_ref())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        match cat.resolve_in(spec, job) {
            Ok(e) => return Ok((name.clone(), sink.clone(), e.clone())),
            // Another sink may hold a good copy.
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
    let searched: Vec<String> = sinks.iter().map(|(n, _)| format!("`{n}`")).collect();
    Err(match last_err {
        Some(e) if e.kind() == ErrorKind::NotFound => e.suffix(format!(
            "searched sink{} {}",
            if searched.len() == 1 { "" } else { "s" },
            searched.join(", ")
        )),
        Some(e) => e,
        None => Error::new(ErrorKind::NotFound, "no sink"),
    })
}

/// Shows snapshot `spec` from the first of `sinks` holding it: its
/// signature judged by `trusted` first (a refused one is an error), then
/// with `identities` the bundle checked as `verify --deep` does. Returns
/// the outcome, the sink, and the checked bundle's summary when a key was
/// given.
pub async fn show(
    sinks: &[(String, Arc<dyn Sink>)],
    spec: &str,
    trusted: &TrustedSigners,
    identities: Option<Arc<Identities>>,
    registry: &Registry,
    progress: Arc<Progress>,
) -> Result<(ShowOutcome, Arc<dyn Sink>, Option<BundleSummary>)> {
    let (sink_name, sink, entry) = find_snapshot(sinks, spec).await?;
    let signature = trusted.enforce(entry.index.id.as_str(), &entry.signature)?;
    let summary = match identities {
        Some(ids) => Some(super::deep_check(sink.as_ref(), &entry.index, ids, registry, progress).await?),
        None => None,
    };
    let outcome = ShowOutcome {
        sink: sink_name,
        state: entry.state.as_str().to_string(),
        index: entry.index,
        signature: signature.as_str().to_string(),
        signer: signature.fingerprint().map(str::to_string),
        manifest: summary.as_ref().map(|s| s.manifest.clone()),
        sources: summary.as_ref().map(|s| s.sources.sources.clone()),
    };
    Ok((outcome, sink, summary))
}

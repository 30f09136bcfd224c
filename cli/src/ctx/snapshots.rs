//! Finding a snapshot on the selected sinks and opening it.

use std::sync::Arc;

use coffer_core::{AdmittedIndex, CatalogEntry, Identities, Result, Sink};

use super::Ctx;

pub(crate) use coffer_core::ops::{find_job_snapshot, find_snapshot};

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
    /// The index, its signature judged: what a restore takes.
    pub(crate) admitted: AdmittedIndex,
}

pub(crate) async fn open_snapshot(
    ctx: &Ctx,
    sel: &super::ReadSel,
    spec: &str,
    job: Option<&str>,
    needs_key: &str,
) -> Result<Opened> {
    let super::Reading { config, sinks, trust } = ctx.reading(sel)?;
    let ids = super::identities(&sel.keys)?;
    if ids.is_empty() {
        return Err(coffer_core::config_error(needs_key.to_string())
            .with_hint("pass --identity FILE (or --passphrase for passphrase bundles)"));
    }
    let (sink_name, sink, entry) = find_job_snapshot(&sinks, spec, job).await?;
    // Before fetching or decrypting anything: a forged snapshot stops here.
    let admitted = trust.admit(&entry)?;
    Ok(Opened {
        config,
        sink_name,
        sink,
        entry,
        ids,
        admitted,
    })
}

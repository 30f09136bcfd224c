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

/// A point-in-time restore, as `restore --to-time` and `drill --to-time`
/// start: the base snapshot chosen and opened as [`open_snapshot`] does,
/// and every archived oplog slice up to the target fetched, its signature
/// judged, its SHA-256 checked and decrypted, before anything is restored.
pub(crate) struct OpenedAt {
    pub(crate) opened: Opened,
    pub(crate) replays: Vec<coffer_core::slices::pitr::LogReplay>,
    pub(crate) target: coffer_core::slices::LogPos,
}

/// The job a point-in-time command works on: `--job`, else the config's
/// only job.
pub(crate) fn pitr_job(config: Option<&crate::config::Config>, job: Option<&str>) -> Result<String> {
    match (job, config) {
        (Some(j), _) => Ok(j.to_string()),
        (None, Some(c)) => c.job(None).map(|(n, _)| n),
        (None, None) => Err(coffer_core::config_error("a point-in-time restore needs the job")
            .with_hint("pass --job NAME (the job whose oplog is archived)")),
    }
}

/// The target position of `--to-time T` (the whole second T included) or
/// `--to-ts S:I` (that exact entry included).
pub(crate) fn pitr_target(to_time: Option<&str>, to_ts: Option<&str>) -> Result<coffer_core::slices::LogPos> {
    use coffer_core::slices::LogPos;
    match (to_time, to_ts) {
        (_, Some(ts)) => ts.parse::<LogPos>(),
        (Some(t), None) => {
            let time: jiff::Timestamp = t.parse().map_err(|e| {
                coffer_core::config_error(format!("--to-time `{t}` is not an RFC 3339 time: {e}"))
                    .with_hint("e.g. 2026-12-06T10:15:00Z (the whole second is included)")
            })?;
            let second = u32::try_from(time.as_second())
                .map_err(|_| coffer_core::config_error(format!("--to-time `{t}` is out of range")))?;
            Ok(LogPos::end_of_second(second))
        }
        (None, None) => Err(coffer_core::config_error("no target time given")),
    }
}

pub(crate) async fn open_point_in_time(
    ctx: &Ctx,
    sel: &super::ReadSel,
    job: Option<&str>,
    target: coffer_core::slices::LogPos,
    needs_key: &str,
) -> Result<OpenedAt> {
    use coffer_core::slices::pitr;
    let super::Reading { config, sinks, trust } = ctx.reading(sel)?;
    let ids = super::identities(&sel.keys)?;
    if ids.is_empty() {
        return Err(coffer_core::config_error(needs_key.to_string())
            .with_hint("pass --identity FILE (or --passphrase for passphrase bundles)"));
    }
    let job = pitr_job(config.as_ref(), job)?;
    let mut first_err = None;
    for (sink_name, sink) in sinks {
        let catalog = coffer_core::Catalog::load(sink.as_ref()).await?;
        let plan = match pitr::plan(sink.as_ref(), &catalog, &trust, &job, target).await {
            Ok(p) => p,
            Err(e) => {
                first_err.get_or_insert(e.with_context("sink", &sink_name));
                continue;
            }
        };
        // Every slice checked before anything is restored.
        let replays = pitr::fetch(sink.as_ref(), &plan, &ids).await?;
        let entry = catalog
            .snapshots
            .iter()
            .find(|e| e.index.id == plan.base.index().id)
            .cloned()
            .expect("the plan's base is in the catalog");
        return Ok(OpenedAt {
            opened: Opened {
                config,
                sink_name,
                sink,
                entry,
                ids,
                admitted: plan.base,
            },
            replays,
            target,
        });
    }
    Err(first_err.unwrap_or_else(|| coffer_core::config_error("no sink given")))
}

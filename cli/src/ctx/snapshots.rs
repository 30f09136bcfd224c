//! Finding a snapshot on the selected sinks and opening it.

use coffer_core::{Result, keys::Identities};

use super::Ctx;

pub(crate) use coffer_app::restoring::{Opened, OpenedAt, find_snapshot};

/// The keys `sel` gives, which must open something (`needs_key` is the
/// error when none was given, e.g. "restore needs a key").
fn keys(sel: &super::ReadSel, needs_key: &str) -> Result<Identities> {
    let ids = super::identities(&sel.keys)?;
    if ids.is_empty() {
        return Err(coffer_core::config_error(needs_key.to_string())
            .with_hint("pass --identity FILE (or --passphrase for passphrase bundles)"));
    }
    Ok(ids)
}

/// The snapshot `spec` on the selected sinks, as `restore` and `drill`
/// start ([`coffer_app::App::open_snapshot`]).
pub(crate) async fn open_snapshot(
    ctx: &Ctx,
    sel: &super::ReadSel,
    spec: &str,
    job: Option<&str>,
    needs_key: &str,
) -> Result<Opened> {
    let reading = ctx.read(sel)?;
    let ids = keys(sel, needs_key)?;
    ctx.app.open_snapshot(reading, ids, spec, job).await
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

/// A point-in-time restore's base and slices, as `restore --to-time` and
/// `drill --to-time` start ([`coffer_app::App::open_point_in_time`]).
pub(crate) async fn open_point_in_time(
    ctx: &Ctx,
    sel: &super::ReadSel,
    job: Option<&str>,
    target: coffer_core::slices::LogPos,
    needs_key: &str,
) -> Result<OpenedAt> {
    let reading = ctx.read(sel)?;
    let ids = keys(sel, needs_key)?;
    let job = pitr_job(reading.config.as_ref(), job)?;
    ctx.app.open_point_in_time(reading, ids, &job, target).await
}

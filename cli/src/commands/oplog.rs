//! `coffer oplog`: continuous archiving of a job's MongoDB oplog for
//! point-in-time recovery (`follow`), what is restorable (`status`), and a
//! directory the real `mongorestore --oplogReplay` reads (`export`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Subcommand};
use coffer_app::oplog::FollowMetrics;
use coffer_app::restoring::Opened;
use coffer_core::slices::follow::{FollowEvent, FollowObserver, follow};
use coffer_core::slices::pitr::{self, Range};
use coffer_core::slices::{Break, ChainStart, LogMark, LogPos, SliceIndex, StoredSlice, segments};
use coffer_core::{Source, config_error, ops::Catalog};
use serde::Serialize;

use crate::config::Config;
use crate::ctx::{CmdResult, Ctx, ReadSel, SinkSel, open_point_in_time, pitr_job, pitr_target};
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct OplogArgs {
    #[command(subcommand)]
    pub command: OplogCommand,
}

#[derive(Debug, Subcommand)]
pub enum OplogCommand {
    /// Follow the job's MongoDB oplog and write it to every sink of the
    /// job as encrypted slices, until stopped (SIGTERM writes the open
    /// slice first). Run it under a supervisor that restarts it.
    Follow(FollowArgs),
    /// The archived oplog per sink: restorable ranges, gaps, the newest
    /// slice and its age.
    Status(StatusArgs),
    /// Write the base dump and `oplog.bson` up to a time into a directory
    /// the real `mongorestore --oplogReplay` restores, and print the
    /// command.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Job from the config (default: its only job).
    pub job: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Job (default: the config's only job).
    pub job: Option<String>,
    #[command(flatten)]
    pub sink: SinkSel,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Up to this time (RFC 3339, the whole second included).
    #[arg(
        long,
        value_name = "TIME",
        required_unless_present = "to_ts",
        conflicts_with = "to_ts"
    )]
    pub to_time: Option<String>,
    /// Up to this oplog entry `SECONDS:ORDINAL` (included).
    #[arg(long, value_name = "S:I")]
    pub to_ts: Option<String>,
    /// The job (default: the config's only job).
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// The directory to write (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub read: ReadSel,
}

impl OplogArgs {
    /// The audit log's command name.
    pub(crate) fn audited(&self) -> &'static str {
        match self.command {
            OplogCommand::Follow(_) => "oplog-follow",
            OplogCommand::Status(_) => "oplog-status",
            OplogCommand::Export(_) => "oplog-export",
        }
    }
}

pub(crate) async fn exec(ctx: &Ctx, a: OplogArgs) -> CmdResult {
    match a.command {
        OplogCommand::Follow(f) => exec_follow(ctx, f).await,
        OplogCommand::Status(s) => exec_status(ctx, s).await,
        OplogCommand::Export(e) => exec_export(ctx, e).await,
    }
}

async fn exec_follow(ctx: &Ctx, a: FollowArgs) -> CmdResult {
    let Some(cfg) = ctx.config()? else {
        return Err(config_error("`oplog follow` needs a coffer.toml with the job")
            .with_hint("pass --config FILE")
            .into());
    };
    let follower = ctx
        .app
        .follower(&cfg, a.job.as_deref(), &crate::ctx::new_passphrase)?;
    let observer = Observer {
        metrics: FollowMetrics::new(&follower.job, &follower.source),
        job: follower.job,
        source: follower.source,
        config: cfg,
        on_gap: follower.on_gap,
        quiet: ctx.quiet,
        json: ctx.json,
        backup: Mutex::default(),
    };
    let result = follow(follower.request, &observer).await;
    observer.stop_backup();
    if let Err(e) = result {
        if e.kind() == coffer_core::ErrorKind::Cancelled {
            return Ok(());
        }
        return Err(e.into());
    }
    Ok(())
}

/// Prints the follower's events, writes its metrics
/// ([`FollowMetrics`]), and takes a base backup when a chain starts
/// (`on-gap = "backup"`): `coffer backup JOB` with the same config, as a
/// process of its own.
struct Observer {
    job: String,
    source: String,
    config: Config,
    on_gap: coffer_core::slices::follow::OnGap,
    quiet: bool,
    json: bool,
    metrics: FollowMetrics,
    backup: Mutex<Option<std::process::Child>>,
}

impl Observer {
    fn say(&self, line: String, json: serde_json::Value) {
        if self.json {
            println!("{json}");
        } else if !self.quiet {
            println!("{line}");
        }
    }

    /// Starts `coffer backup JOB` (the same config) for a new chain's base.
    fn base_backup(&self) {
        let mut running = self.backup.lock().expect("backup");
        if let Some(child) = running.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            return;
        }
        let exe = std::env::current_exe().unwrap_or_else(|_| "coffer".into());
        let spawned = std::process::Command::new(exe)
            .arg("--config")
            .arg(&self.config.path)
            .arg("--quiet")
            .arg("backup")
            .arg(&self.job)
            .stdin(std::process::Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => {
                self.say(
                    format!(
                        "new oplog chain: taking a base backup of job `{}` (pid {})",
                        self.job,
                        child.id()
                    ),
                    serde_json::json!({"event": "base-backup", "job": self.job, "pid": child.id()}),
                );
                *running = Some(child);
            }
            Err(e) => tracing::error!("cannot start the base backup of job `{}`: {e}", self.job),
        }
    }

    /// Waits for a base backup still running.
    fn stop_backup(&self) {
        if let Some(mut child) = self.backup.lock().expect("backup").take() {
            let _ = child.wait();
        }
    }

    /// Says where following starts: after an archived entry, or a new chain (and its base backup).
    fn report_started(&self, after: &LogMark, chain_start: Option<&ChainStart>) {
        match chain_start {
            None => self.say(
                format!(
                    "following the oplog of `{}` after the archived entry {after}",
                    self.source
                ),
                serde_json::json!({"event": "resumed", "after": after}),
            ),
            Some(start) => {
                self.say(
                    format!(
                        "following the oplog of `{}` from {after}: a new chain ({})",
                        self.source, start.reason
                    ),
                    serde_json::json!({"event": "chain-start", "after": after, "reason": start.reason}),
                );
                if self.on_gap == coffer_core::slices::follow::OnGap::Backup {
                    self.base_backup();
                }
            }
        }
    }

    /// Logs a gap in the archive (what cannot be restored) and says where it is.
    fn report_gap(&self, after: &LogMark, reason: &str, restart: &LogMark) {
        tracing::error!(
            "GAP in the oplog archive of job `{}` after {after}: {reason}. Times between {} and {} cannot be \
             restored; a new chain starts at {restart}{}",
            self.job,
            after.ts.time(),
            restart.ts.time(),
            if self.on_gap == coffer_core::slices::follow::OnGap::Backup {
                " and a base backup is taken. Make the oplog larger or keep the follower running"
            } else {
                ""
            }
        );
        self.say(
            format!("gap after {after}: {reason}"),
            serde_json::json!({"event": "gap", "after": after, "reason": reason, "restart": restart}),
        );
    }

    /// Says a slice was written, and warns of each sink that did not store it.
    fn report_slice(&self, index: &SliceIndex, failed: &[(String, String)]) {
        for (sink, e) in failed {
            tracing::warn!(
                "oplog slice {} not stored on sink `{sink}`: {e}",
                index.index_key()
            );
        }
        self.say(
            format!(
                "slice {} … {}: {} entries ({} read), {}",
                index.first,
                index.last.ts,
                index.entries,
                index.read,
                crate::output::size(index.object.size)
            ),
            serde_json::json!({"event": "slice", "first": index.first, "last": index.last,
                "entries": index.entries, "read": index.read, "bytes": index.object.size,
                "failed": failed.iter().map(|(s, _)| s).collect::<Vec<_>>()}),
        );
    }

    /// Warns of a sink left out of this run and says so.
    fn report_sink_skipped(&self, sink: &str, error: &str) {
        tracing::warn!("sink `{sink}` is left out of this follower run (it cannot be reached): {error}");
        self.say(
            format!("sink `{sink}` left out: {error}"),
            serde_json::json!({"event": "sink-skipped", "sink": sink, "error": error}),
        );
    }
}

impl FollowObserver for Observer {
    fn event(&self, event: &FollowEvent) {
        if let Some(samples) = self.metrics.event(event) {
            crate::record::write_samples(&self.config, &samples);
        }
        match event {
            FollowEvent::Started { after, chain_start } => self.report_started(after, chain_start.as_ref()),
            FollowEvent::Gap {
                after,
                reason,
                restart,
            } => self.report_gap(after, reason, restart),
            FollowEvent::Slice { index, failed } => self.report_slice(index, failed),
            FollowEvent::Retrying { error } => {
                tracing::warn!("oplog slice not stored on a required sink, kept and retried: {error}");
            }
            FollowEvent::Reconnecting { error, wait } => tracing::warn!(
                "the oplog cannot be read; reconnecting in {} s and resuming from the archive: {error}",
                wait.as_secs()
            ),
            FollowEvent::Window(_) => {}
            FollowEvent::SinkSkipped { sink, error } => self.report_sink_skipped(sink, error),
            FollowEvent::Reread { missed } => {
                tracing::warn!(
                    "the oplog cursor missed {missed} entr(ies) of a slice's range; the range was read again"
                )
            }
            FollowEvent::Repaired { copied } => self.say(
                format!("{copied} slice copies made where a sink lacked them"),
                serde_json::json!({"event": "repaired", "copied": copied}),
            ),
        }
    }
}

/// One sink's archive of one source, for `oplog status`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SinkStatus {
    /// The sink.
    pub sink: String,
    /// The followed source.
    pub source: String,
    /// Slices stored.
    pub slices: usize,
    /// Their ciphertext bytes.
    pub bytes: u64,
    /// The newest archived entry.
    pub newest: Option<LogPos>,
    /// Its time (RFC 3339).
    pub newest_time: Option<String>,
    /// Seconds since the newest archived entry.
    pub age_seconds: Option<i64>,
    /// The server's newest write minus the newest archived entry, when
    /// the config's source answered (`null` otherwise).
    pub lag_seconds: Option<i64>,
    /// Where a point-in-time restore can go.
    pub ranges: Vec<Range>,
    /// Breaks of the chain, oldest first.
    pub breaks: Vec<Break>,
    /// Slice indexes that cannot be read.
    pub unreadable: Vec<String>,
}

async fn exec_status(ctx: &Ctx, a: StatusArgs) -> CmdResult {
    let config = ctx.config()?;
    let job = pitr_job(config.as_ref(), a.job.as_deref())?;
    let sinks = ctx.sinks_of(&a.sink, config.as_ref())?;
    let server_newest = server_newest(config.as_ref(), &job).await;
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for (name, sink) in &sinks {
        // One unreachable sink does not hide the others' archives.
        let loaded = async {
            let catalog = Catalog::load(sink.as_ref()).await?;
            let chains = pitr::chains(sink.as_ref(), &catalog, &job).await?;
            Ok::<_, coffer_core::Error>((catalog, chains))
        }
        .await;
        let (catalog, chains) = match loaded {
            Ok(x) => x,
            Err(e) => {
                failed.push(e.prefix(format!("sink `{name}`")));
                continue;
            }
        };
        for chain in chains {
            let status = sink_status(name, &catalog, &job, chain, server_newest.as_ref());
            record_restorable(ctx, &job, &status);
            out.push(status);
        }
    }
    ctx.record.note("job", job.as_str());
    let outcome = match failed.into_iter().next() {
        Some(e) if sinks.len() > 1 => {
            Err(e.with_hint("the other sinks' archives are listed; check this sink (mounted? reachable?)"))
        }
        Some(e) => Err(e),
        None => Ok(()),
    };
    if ctx.json {
        print_json(&out);
        return outcome.map_err(Into::into);
    }
    print_status(&job, &out);
    outcome.map_err(Into::into)
}

/// The status of one source's chain on sink `name`, an item of [`pitr::chains`].
fn sink_status(
    name: &str,
    catalog: &Catalog,
    job: &str,
    (source, slices, bad): (String, Vec<StoredSlice>, Vec<(String, coffer_core::Error)>),
    server_newest: Option<&(String, LogPos)>,
) -> SinkStatus {
    let idx: Vec<SliceIndex> = slices.iter().map(|s| s.index.clone()).collect();
    let segs = segments(&idx);
    let bases: Vec<LogPos> = pitr::bases(catalog, job, &source)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let ranges = pitr::ranges(&segs, &bases);
    let newest = idx.last().map(|s| s.last.ts);
    let lag_seconds = match (server_newest, newest) {
        (Some((src, n)), Some(p)) if *src == source => Some((i64::from(n.t) - i64::from(p.t)).max(0)),
        _ => None,
    };
    SinkStatus {
        sink: name.to_string(),
        source,
        slices: idx.len(),
        bytes: idx.iter().map(|s| s.object.size).sum(),
        newest,
        newest_time: newest.map(|p| p.time().to_string()),
        age_seconds: newest.map(|p| jiff::Timestamp::now().as_second() - i64::from(p.t)),
        lag_seconds,
        ranges,
        breaks: segs.iter().filter_map(|s| s.after_break.clone()).collect(),
        unreadable: bad.iter().map(|(k, e)| format!("{k}: {e}")).collect(),
    }
}

/// Records where the newest restorable range of `s` starts and ends, as metrics.
fn record_restorable(ctx: &Ctx, job: &str, s: &SinkStatus) {
    if let Some(r) = s.ranges.last() {
        let labels = [
            ("job", job),
            ("source", s.source.as_str()),
            ("sink", s.sink.as_str()),
        ];
        ctx.record.metric(
            "coffer_oplog_restorable_from_timestamp_seconds",
            &labels,
            f64::from(r.from.t),
        );
        ctx.record.metric(
            "coffer_oplog_restorable_to_timestamp_seconds",
            &labels,
            f64::from(r.to.t),
        );
    }
}

/// Prints `oplog status` for people: every archive of `job` found, or that there is none.
fn print_status(job: &str, out: &[SinkStatus]) {
    if out.is_empty() {
        println!(
            "job `{job}`: no snapshot with a point in time on these sinks, so no oplog archive to restore from"
        );
    }
    for s in out {
        print_sink_status(job, s);
    }
}

/// Prints one archive: its slices, what is restorable, its breaks and unreadable slice indexes.
fn print_sink_status(job: &str, s: &SinkStatus) {
    println!("job `{job}` source `{}` on sink `{}`:", s.source, s.sink);
    match (&s.newest, &s.newest_time) {
        (Some(p), Some(t)) => println!(
            "  {} slices ({}), newest entry {t} ({p}), {} s ago{}",
            s.slices,
            crate::output::size(s.bytes),
            s.age_seconds.unwrap_or(0),
            match s.lag_seconds {
                Some(l) => format!(", {l} s behind the server"),
                None => String::new(),
            }
        ),
        _ => println!("  no oplog slices (is `coffer oplog follow` running?)"),
    }
    if s.ranges.is_empty() {
        println!("  restorable: nothing yet (no base snapshot inside an archived chain)");
    }
    for r in &s.ranges {
        println!("  restorable: {r}");
    }
    for b in &s.breaks {
        match b {
            Break::Gap { after, reason } => println!(
                "  GAP after {}: {reason}",
                after.map_or("the start".to_string(), |a| format!("{} ({a})", a.ts.time()))
            ),
            Break::Missing { after, next_follows } => println!(
                "  MISSING slices between {} ({after}) and {} ({next_follows})",
                after.ts.time(),
                next_follows.ts.time()
            ),
        }
    }
    for u in &s.unreadable {
        println!("  unreadable slice index {u}");
    }
}

/// The newest write of the job's followed source, as the server reports
/// it (`None` without a config, or when the server does not answer: the
/// status of the archive needs no server).
async fn server_newest(config: Option<&Config>, job: &str) -> Option<(String, LogPos)> {
    let cfg = config?;
    let oplog = cfg.jobs.get(job)?.oplog.clone().unwrap_or_default();
    let (name, source) = coffer_app::oplog::followed_source(cfg, job, &oplog).ok()?;
    let log = source.change_log()?;
    let window = tokio::time::timeout(Duration::from_secs(10), log.window())
        .await
        .ok()?
        .ok()?;
    Some((name, window.majority.or(window.newest.map(|m| m.ts))?))
}

/// What `oplog export` wrote.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ExportOutcome {
    /// The directory written.
    pub dir: PathBuf,
    /// The base snapshot.
    pub snapshot: String,
    /// Its source exported.
    pub source: String,
    /// Where the snapshot is consistent.
    pub base_position: LogPos,
    /// The target position (included).
    pub target: LogPos,
    /// Archived entries appended to `oplog.bson`.
    pub archived_entries: u64,
    /// Slices they came from.
    pub slices: usize,
    /// Whether `oplog.bson` starts with the snapshot's own entries
    /// (written during its dump).
    pub snapshot_oplog: bool,
    /// The `mongorestore` command that restores the directory.
    pub command: String,
}

/// The temp directory an export writes before it is renamed into place:
/// `.coffer-tmp-export-<pid>-…` beside the target.
const EXPORT_TMP: &str = ".coffer-tmp-export-";

/// Removes what exports killed with `kill -9` left in `parent` (plaintext
/// dumps): temp directories whose process is gone.
fn sweep_stale_exports(parent: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(EXPORT_TMP).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

async fn exec_export(ctx: &Ctx, a: ExportArgs) -> CmdResult {
    use coffer_core::slices::export::{OPLOG_FILE, append_replay};
    check_export_dir(&a.dir)?;
    let target = pitr_target(a.to_time.as_deref(), a.to_ts.as_deref())?;
    let at = open_point_in_time(ctx, &a.read, a.job.as_deref(), target, "export needs a key").await?;
    let index = at.opened.admitted.index().clone();
    let [replay] = at.replays.as_slice() else {
        return Err(
            config_error("the snapshot has several sources with an oplog; export handles one")
                .with_hint("restore with `coffer restore --to-time` instead")
                .into(),
        );
    };
    let rec = index
        .sources
        .iter()
        .find(|s| s.name == replay.source)
        .expect("the plan's source is in the index");
    let staging = export_staging(&a.dir)?;
    if let Err(e) = restore_base(ctx, at.opened, &rec.kind, &rec.name, staging.path()).await {
        // The partial dump is removed on a blocking thread.
        let _ = tokio::task::spawn_blocking(move || drop(staging)).await;
        return Err(e.into());
    }
    // The archived oplog written, synced and the directory renamed into
    // place on a blocking thread (a large file).
    let (replay_of, dir) = (replay.clone(), a.dir.clone());
    let (base_entries, archived) =
        tokio::task::spawn_blocking(move || -> coffer_core::Result<(bool, u64)> {
            let oplog = staging.path().join(OPLOG_FILE);
            let base_entries = std::fs::metadata(&oplog).map(|m| m.len() > 0).unwrap_or(false);
            let archived = append_replay(&replay_of, &oplog)?;
            move_into_place(staging, &dir)?;
            Ok((base_entries, archived))
        })
        .await
        .map_err(|e| {
            coffer_core::Error::new(
                coffer_core::ErrorKind::Unexpected,
                format!("the export failed: {e}"),
            )
        })??;
    let command = restore_command(target, &a.dir);
    ctx.record.note("snapshot", index.id.as_str());
    ctx.record.note("to_ts", target.to_string());
    let outcome = ExportOutcome {
        dir: a.dir,
        snapshot: index.id.to_string(),
        source: rec.name.clone(),
        base_position: replay.after,
        target,
        archived_entries: archived,
        slices: replay.slices,
        snapshot_oplog: base_entries,
        command,
    };
    if ctx.json {
        print_json(&outcome);
    } else {
        outcome.print();
    }
    Ok(())
}

/// Refuses `dir` as the export's directory when it exists and is not empty.
fn check_export_dir(dir: &std::path::Path) -> coffer_core::Result<()> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(
            config_error(format!("--dir {} exists and is not empty", dir.display()))
                .with_hint("give a new directory: the export writes the whole dump there"),
        );
    }
    Ok(())
}

/// Makes the temp directory an export of `dir` writes first, beside it, after sweeping stale ones.
fn export_staging(dir: &std::path::Path) -> coffer_core::Result<tempfile::TempDir> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| coffer_core::Error::io(format!("creating {}", parent.display()), e))?;
    sweep_stale_exports(parent);
    tempfile::Builder::new()
        .prefix(&format!("{EXPORT_TMP}{}-", std::process::id()))
        .tempdir_in(parent)
        .map_err(|e| coffer_core::Error::io(format!("creating a temp directory in {}", parent.display()), e))
}

/// Restores source `name` (of kind `kind`) of the opened snapshot into `dir`, as a dump.
async fn restore_base(
    ctx: &Ctx,
    opened: Opened,
    kind: &str,
    name: &str,
    dir: &std::path::Path,
) -> coffer_core::Result<()> {
    use coffer_core::slices::export::DirSource;
    let kind: &'static str = Box::leak(kind.to_string().into_boxed_str());
    let dir_source: Arc<dyn Source> = Arc::new(DirSource::new(kind, name, dir));
    let mut opts = coffer_core::RestoreOptions::default();
    opts.cancel = ctx.cancel.clone();
    let req = coffer_core::ops::RestoreRequest {
        index: opened.admitted.clone(),
        identities: opened.ids,
        only: vec![name.to_string()],
        configured: [(name.to_string(), dir_source)].into_iter().collect(),
        registry: ctx.registry.clone(),
        cache_dir: None,
        options: opts,
        origin_places: true,
    };
    coffer_core::ops::restore(
        opened.sink.as_ref(),
        req,
        Arc::new(coffer_core::Progress::default()),
    )
    .await?;
    Ok(())
}

/// Renames the written `staging` directory to `dir`, unless `dir` appeared meanwhile.
fn move_into_place(staging: tempfile::TempDir, dir: &std::path::Path) -> coffer_core::Result<()> {
    if std::fs::remove_dir(dir).is_err() && dir.exists() {
        return Err(config_error(format!(
            "--dir {} appeared while exporting",
            dir.display()
        )));
    }
    let staged = staging.keep();
    std::fs::rename(&staged, dir)
        .map_err(|e| coffer_core::Error::io(format!("renaming into {}", dir.display()), e))
}

/// The `mongorestore` command that restores the export in `dir` up to `target` (included).
fn restore_command(target: LogPos, dir: &std::path::Path) -> String {
    let limit = if target.i == u32::MAX {
        LogPos {
            t: target.t + 1,
            i: 0,
        }
    } else {
        LogPos {
            t: target.t,
            i: target.i + 1,
        }
    };
    format!(
        "mongorestore --drop --oplogReplay --oplogLimit {}:{} --dir {}",
        limit.t,
        limit.i,
        dir.display()
    )
}

impl ExportOutcome {
    /// Prints what was exported and the command that restores it, for people.
    fn print(&self) {
        println!(
            "exported snapshot {} (source `{}`, consistent at {}) and {} archived oplog entries from {} slice(s) up to {} ({}) into {}",
            self.snapshot,
            self.source,
            self.base_position,
            self.archived_entries,
            self.slices,
            self.target.time(),
            self.target,
            self.dir.display()
        );
        println!("restore it with the standard tools:\n  {}", self.command);
    }
}

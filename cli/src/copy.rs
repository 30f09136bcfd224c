//! Moving snapshots without a key: `coffer copy` between any two sinks,
//! `coffer export` / `coffer import` across an air gap on removable media,
//! and `coffer media init|status`. The copying itself is
//! `coffer_core::copy_snapshots`; the media checks and the on-medium
//! restore kit are in coffer-sink-media.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use coffer_core::{
    Catalog, CatalogEntry, CopyOptions, CopyOutcome, CopyStatus, Error, ErrorKind, Result, Sink, SinkExt,
    TrustedSigners,
};
use coffer_sink_media::kit::{self, CustodyRecord};
use coffer_sink_media::{IDENTITY_FILE, MediaIdentity};
use serde_json::json;

use crate::Failure;
use crate::args::TrustSel;
use crate::commands::{CmdResult, Ctx};
use crate::output::{print_json, size};

/// `coffer copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Snapshot ids or unique prefixes (or `latest`).
    #[arg(value_name = "SNAPSHOT", required_unless_present_any = ["latest", "all"])]
    pub snapshots: Vec<String>,
    /// Copy the newest snapshot.
    #[arg(long, conflicts_with_all = ["snapshots", "all"])]
    pub latest: bool,
    /// Copy every snapshot of the source.
    #[arg(long, conflicts_with = "snapshots")]
    pub all: bool,
    /// The sink to read: a name from the config, a directory or a URL.
    #[arg(long, value_name = "SINK")]
    pub from: String,
    /// The sink to write.
    #[arg(long, value_name = "SINK")]
    pub to: String,
    #[command(flatten)]
    pub trust: TrustSel,
}

/// `coffer export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Snapshot ids or unique prefixes (default: the latest).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Export the newest snapshot (the default).
    #[arg(long, conflicts_with_all = ["snapshots", "all"])]
    pub latest: bool,
    /// Export every snapshot of the source.
    #[arg(long, conflicts_with = "snapshots")]
    pub all: bool,
    /// The sink to read.
    #[arg(long, value_name = "SINK")]
    pub from: String,
    /// The medium: media:PATH[?labels=…|?set=…] or a media sink's name.
    #[arg(long, value_name = "MEDIA")]
    pub to: String,
    #[command(flatten)]
    pub trust: TrustSel,
}

/// `coffer import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Only these snapshots (default: every one on the medium).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// The medium: media:PATH or a media sink's name.
    #[arg(long, value_name = "MEDIA")]
    pub from: String,
    /// The sink to merge into.
    #[arg(long, value_name = "SINK")]
    pub to: String,
    #[command(flatten)]
    pub trust: TrustSel,
}

/// `coffer media`.
#[derive(Debug, Args)]
pub struct MediaArgs {
    #[command(subcommand)]
    pub command: MediaCommand,
}

/// `coffer media init|status`.
#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Write the identity file on a mounted medium (once per medium).
    Init {
        /// Where the medium is mounted.
        path: PathBuf,
        /// The label written on the disk, e.g. OFFSITE-A.
        #[arg(long)]
        label: String,
        /// The rotation set, e.g. weekly.
        #[arg(long)]
        set: Option<String>,
    },
    /// Show a medium's label, set, snapshots and free space.
    Status {
        /// Where the medium is mounted.
        path: PathBuf,
    },
}

/// The snapshots named by a selection, oldest first.
fn select(cat: &Catalog, specs: &[String], latest: bool, all: bool) -> Result<Vec<CatalogEntry>> {
    if all {
        return Ok(cat.snapshots.clone());
    }
    if latest || specs.is_empty() {
        return Ok(vec![cat.resolve("latest")?.clone()]);
    }
    let mut out: Vec<CatalogEntry> = Vec::new();
    for s in specs {
        let e = cat.resolve(s)?;
        if !out.iter().any(|o| o.index.id == e.index.id) {
            out.push(e.clone());
        }
    }
    out.sort_by(|a, b| a.index.id.cmp(&b.index.id));
    Ok(out)
}

/// Result of a batch, for output and the exit code.
struct Batch {
    results: Vec<(CatalogEntry, Result<CopyOutcome>)>,
}

impl Batch {
    fn ok_ids(&self) -> Vec<String> {
        self.results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(e, _)| e.index.id.to_string())
            .collect()
    }

    fn refused(&self) -> Vec<(String, String)> {
        self.results
            .iter()
            .filter_map(|(e, r)| match r {
                Err(err) if err.kind() == ErrorKind::Integrity => {
                    Some((e.index.id.to_string(), err.to_string()))
                }
                _ => None,
            })
            .collect()
    }

    fn json(&self) -> Vec<serde_json::Value> {
        self.results
            .iter()
            .map(|(e, r)| match r {
                Ok(o) => json!({
                    "id": e.index.id.as_str(), "ok": true, "status": o.status.as_str(),
                    "bytes": o.bytes, "size": o.index.object.size, "reused_object": o.reused_object,
                    "companions": o.companions, "signature": o.signature.as_str(),
                }),
                Err(err) => json!({
                    "id": e.index.id.as_str(), "ok": false, "status": "failed",
                    "error": {"kind": err.kind().as_str(), "message": err.to_string(), "hint": err.hint()},
                }),
            })
            .collect()
    }

    /// Exit code: 3 if any snapshot failed an integrity check, else the
    /// first other error.
    fn finish(self, what: &str) -> CmdResult {
        let refused = self.refused();
        if !refused.is_empty() {
            return Err(Failure::Integrity(format!(
                "{} snapshot(s) refused ({what}): {}",
                refused.len(),
                refused
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for (_, r) in self.results {
            if let Err(e) = r {
                return Err(e.into());
            }
        }
        Ok(())
    }
}

fn print_one(quiet_json: bool, verb: &str, e: &CatalogEntry, r: &Result<CopyOutcome>) {
    if quiet_json {
        return;
    }
    match r {
        Ok(o) if o.status == CopyStatus::Skipped => {
            println!("{} skipped (already present and identical)", e.index.id)
        }
        Ok(o) if o.reused_object => println!(
            "{} {verb} (completed an interrupted copy; {} object verified)",
            e.index.id,
            size(o.index.object.size)
        ),
        Ok(o) => println!(
            "{} {verb} ({}, SHA-256 verified)",
            e.index.id,
            size(o.index.object.size)
        ),
        Err(err) => {
            println!("{} REFUSED: {err}", e.index.id);
            if let Some(h) = err.hint() {
                println!("  hint: {h}");
            }
        }
    }
}

async fn run_batch(
    ctx: &Ctx,
    from: Arc<dyn Sink>,
    to: Arc<dyn Sink>,
    entries: Vec<CatalogEntry>,
    trust: TrustedSigners,
    holder: &str,
    verb: &'static str,
) -> Result<Batch> {
    let opts = CopyOptions::new().with_trusted(trust);
    let json = ctx.json;
    let results = coffer_core::copy_snapshots(from, to, &entries, &opts, holder, &mut |e, r| {
        print_one(json, verb, e, r)
    })
    .await?;
    Ok(Batch {
        results: entries.into_iter().zip(results).collect(),
    })
}

/// `coffer copy`.
pub(crate) async fn copy(ctx: &Ctx, a: CopyArgs) -> CmdResult {
    let config = ctx.config()?;
    let trust = crate::trust::trusted_signers(&a.trust, config.as_ref())?;
    let from = ctx.sink(&a.from, config.as_ref())?;
    let to = ctx.target_sink(&a.to, config.as_ref())?;
    let cat = Catalog::load(from.as_ref())
        .await
        .map_err(|e| e.prefix(format!("--from {}", a.from)))?;
    let entries = select(&cat, &a.snapshots, a.latest, a.all)?;
    let batch = run_batch(ctx, from.clone(), to.clone(), entries, trust, "copy", "copied").await?;
    if ctx.json {
        print_json(&json!({
            "from": from.info().to_string(), "to": to.info().to_string(), "snapshots": batch.json(),
        }));
    }
    batch.finish("copy")
}

/// The medium's mount point and identity, when `sink` is a media sink.
fn medium_of(sink: &dyn Sink) -> Option<(PathBuf, Option<MediaIdentity>)> {
    let info = sink.info();
    (info.scheme == coffer_sink_media::SCHEME).then(|| {
        let root = PathBuf::from(info.location);
        let id = coffer_sink_media::read_identity(&root).ok();
        (root, id)
    })
}

/// `coffer export`.
pub(crate) async fn export(ctx: &Ctx, a: ExportArgs) -> CmdResult {
    let config = ctx.config()?;
    let trust = crate::trust::trusted_signers(&a.trust, config.as_ref())?;
    let from = ctx.sink(&a.from, config.as_ref())?;
    // A medium is made with `coffer media init`, never by --create-sink.
    let to = ctx.sink(&a.to, config.as_ref())?;
    // Every media check (mounted, label, identity) runs on any operation:
    // fail here, before locking or reading the source.
    to.head(IDENTITY_FILE)
        .await
        .map_err(|e| e.prefix(format!("--to {}", a.to)))?;
    let medium = medium_of(to.as_ref());
    let cat = Catalog::load(from.as_ref())
        .await
        .map_err(|e| e.prefix(format!("--from {}", a.from)))?;
    let entries = select(&cat, &a.snapshots, a.latest, a.all)?;
    let batch = run_batch(
        ctx,
        from.clone(),
        to.clone(),
        entries,
        trust.clone(),
        "export",
        "exported",
    )
    .await?;
    let ids = batch.ok_ids();
    let mut kit_error = None;
    if !ids.is_empty() {
        let identity = medium.as_ref().and_then(|(_, id)| id.clone());
        let record = CustodyRecord::new(
            "export",
            ids.clone(),
            from.info().to_string(),
            to.info().to_string(),
            identity.as_ref(),
        );
        let r = async {
            kit::write_restore_kit(to.as_ref(), identity.as_ref(), &trust).await?;
            kit::append_custody(to.as_ref(), &record).await?;
            kit::write_sums(to.as_ref()).await
        }
        .await;
        if let Err(e) = r {
            kit_error = Some(e.prefix("writing the restore kit on the medium"));
        }
    }
    if ctx.json {
        print_json(&json!({
            "from": from.info().to_string(), "to": to.info().to_string(), "snapshots": batch.json(),
            "kit": kit_error.is_none() && !ids.is_empty(),
        }));
    } else if kit_error.is_none() && !ids.is_empty() {
        println!(
            "wrote {}, {}, {} and {} on the medium",
            kit::RESTORE_FILE,
            kit::SUMS_FILE,
            kit::SIGNERS_FILE,
            kit::CUSTODY_FILE
        );
        match &medium {
            Some((root, _)) => println!(
                "every object was read back from the medium and matched its SHA-256: safe to unplug after `umount {}`",
                root.display()
            ),
            None => println!("done"),
        }
    }
    if let Some(e) = kit_error {
        return Err(e.into());
    }
    batch.finish("export")
}

/// `coffer import`.
pub(crate) async fn import(ctx: &Ctx, a: ImportArgs) -> CmdResult {
    let config = ctx.config()?;
    let trust = crate::trust::trusted_signers(&a.trust, config.as_ref())?;
    let from = ctx.sink(&a.from, config.as_ref())?;
    let to = ctx.target_sink(&a.to, config.as_ref())?;
    let medium = medium_of(from.as_ref());
    let cat = Catalog::load(from.as_ref())
        .await
        .map_err(|e| e.prefix(format!("--from {}", a.from)))?;
    let mut unreadable: Vec<(String, String)> = Vec::new();
    for (key, err) in &cat.unreadable {
        if !ctx.json {
            println!("{key} REFUSED: unreadable index: {err}");
        }
        unreadable.push((key.clone(), err.clone()));
    }
    if cat.snapshots.is_empty() && unreadable.is_empty() {
        return Err(
            Error::new(ErrorKind::NotFound, format!("{} holds no snapshot", a.from))
                .with_hint("check that the right medium is mounted (`coffer media status PATH`)")
                .into(),
        );
    }
    let entries = if a.snapshots.is_empty() {
        cat.snapshots.clone()
    } else {
        select(&cat, &a.snapshots, false, false)?
    };
    let batch = run_batch(
        ctx,
        from.clone(),
        to.clone(),
        entries,
        trust,
        "import",
        "imported",
    )
    .await?;

    // Record the receipt on the medium; a write-protected medium only warns.
    let mut refused: Vec<String> = batch.refused().into_iter().map(|(id, _)| id).collect();
    refused.extend(unreadable.iter().map(|(k, _)| k.clone()));
    let mut record = CustodyRecord::new(
        "import",
        batch.ok_ids(),
        from.info().to_string(),
        to.info().to_string(),
        medium.as_ref().and_then(|(_, id)| id.as_ref()),
    );
    record.refused = refused.clone();
    let logged = async {
        kit::append_custody(from.as_ref(), &record).await?;
        kit::update_sums(from.as_ref(), &[kit::CUSTODY_FILE]).await
    }
    .await;
    if let Err(e) = &logged {
        eprintln!("warning: could not append to the medium's custody.log: {e}");
    }
    if ctx.json {
        let mut items = batch.json();
        for (k, e) in &unreadable {
            items.push(json!({"id": k, "ok": false, "status": "failed",
                "error": {"kind": "integrity", "message": format!("unreadable index: {e}")}}));
        }
        print_json(&json!({
            "from": from.info().to_string(), "to": to.info().to_string(), "snapshots": items,
            "custody_logged": logged.is_ok(),
        }));
    } else {
        let imported = batch
            .results
            .iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(|o| o.status == CopyStatus::Copied))
            .count();
        let skipped = batch
            .results
            .iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(|o| o.status == CopyStatus::Skipped))
            .count();
        println!(
            "imported {imported}, skipped {skipped} already present, refused {}",
            refused.len()
        );
    }
    if !unreadable.is_empty() && batch.refused().is_empty() {
        return Err(Failure::Integrity(format!(
            "{} snapshot index(es) on the medium are unreadable",
            unreadable.len()
        )));
    }
    batch.finish("import")
}

/// `coffer media init|status`.
pub(crate) async fn media(ctx: &Ctx, a: MediaArgs) -> CmdResult {
    match a.command {
        MediaCommand::Init { path, label, set } => {
            let p = path.clone();
            let id = tokio::task::spawn_blocking(move || {
                coffer_sink_media::init_medium(&p, &label, set.as_deref())
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))??;
            if ctx.json {
                print_json(&json!({ "path": path.display().to_string(), "identity": id }));
            } else {
                println!(
                    "initialized the medium at {} as {} (media id {})",
                    path.display(),
                    id.describe(),
                    id.media_id
                );
            }
            Ok(())
        }
        MediaCommand::Status { path } => {
            let p = path.clone();
            let status = tokio::task::spawn_blocking(move || coffer_sink_media::media_status(&p))
                .await
                .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))??;
            let sink =
                coffer_sink_media::MediaSink::new(coffer_sink_media::MediaSinkConfig::new(path.clone()));
            let cat = Catalog::load(&sink).await?;
            let id = &status.identity;
            if ctx.json {
                print_json(&json!({
                    "path": path.display().to_string(),
                    "identity": id,
                    "free": status.free,
                    "total": status.total,
                    "snapshots": cat.snapshots.iter().map(|e| json!({
                        "id": e.index.id.as_str(), "created_at": e.index.created_at.to_string(),
                        "job": e.index.job, "size": e.index.object.size, "state": e.state.as_str(),
                    })).collect::<Vec<_>>(),
                    "incomplete": cat.incomplete,
                }));
                return Ok(());
            }
            println!("medium     {}", path.display());
            println!("label      {}", id.label);
            println!("set        {}", id.set.as_deref().unwrap_or("-"));
            println!("media id   {}", id.media_id);
            println!("created    {}", id.created_at);
            println!("free       {} of {}", size(status.free), size(status.total));
            println!("snapshots  {}", cat.snapshots.len());
            for e in &cat.snapshots {
                println!(
                    "  {}  {}  {:<12} {:>10}  {}",
                    e.index.id,
                    e.index.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    e.index.job,
                    size(e.index.object.size),
                    e.state.as_str()
                );
            }
            if !cat.incomplete.is_empty() {
                println!(
                    "incomplete {} (objects without an index: interrupted writes)",
                    cat.incomplete.join(", ")
                );
            }
            Ok(())
        }
    }
}

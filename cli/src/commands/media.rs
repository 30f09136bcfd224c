//! `coffer media init|status`: label and inspect removable media.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use coffer_app::media::MediaIdentity;
use coffer_core::format::SnapshotId;
use schemars::JsonSchema;
use serde::Serialize;

use crate::ctx::{CmdResult, Ctx};
use crate::output::{print_json, size};

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

/// The `--json` output of `coffer media init`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MediaInit {
    /// Where the medium is mounted.
    pub path: String,
    /// What was written on it.
    pub identity: MediaIdentity,
}

/// The `--json` output of `coffer media status`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MediaStatus {
    /// Where the medium is mounted.
    pub path: String,
    /// Its label, set and media id.
    pub identity: MediaIdentity,
    /// Free bytes.
    pub free: u64,
    /// Size in bytes.
    pub total: u64,
    /// The snapshots on it.
    pub snapshots: Vec<MediaSnapshot>,
    /// Objects without an index: interrupted exports.
    pub incomplete: Vec<String>,
}

/// A snapshot on a medium.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MediaSnapshot {
    /// Snapshot id.
    pub id: SnapshotId,
    /// Snapshot time.
    pub created_at: jiff::Timestamp,
    /// Its job.
    pub job: String,
    /// Size of the encrypted object.
    pub size: u64,
    /// `complete`, `missing-object`, …
    pub state: String,
}

/// `coffer media init|status`.
pub(crate) async fn exec(ctx: &Ctx, a: MediaArgs) -> CmdResult {
    match a.command {
        MediaCommand::Init { path, label, set } => {
            let id = coffer_app::media::init_medium(&path, &label, set.as_deref()).await?;
            if ctx.json {
                print_json(&MediaInit {
                    path: path.display().to_string(),
                    identity: id,
                });
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
            let (status, cat) = coffer_app::media::media_status(&path).await?;
            let id = &status.identity;
            if ctx.json {
                print_json(&MediaStatus {
                    path: path.display().to_string(),
                    identity: id.clone(),
                    free: status.free,
                    total: status.total,
                    snapshots: cat
                        .snapshots
                        .iter()
                        .map(|e| MediaSnapshot {
                            id: e.index.id.clone(),
                            created_at: e.index.created_at,
                            job: e.index.job.clone(),
                            size: e.index.object.size,
                            state: e.state.as_str().to_string(),
                        })
                        .collect(),
                    incomplete: cat.incomplete,
                });
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

//! `coffer export`: snapshots to a removable medium, read back, with the
//! restore kit and the custody log.

use clap::Args;
use coffer_app::media::{self, CUSTODY_FILE, RESTORE_FILE, SIGNERS_FILE, SUMS_FILE, medium_of};

use crate::ctx::{CmdResult, Ctx};
use crate::output::print_json;
use crate::transfer::{Pick, Reading, run_batch};

/// `coffer export` (none named: the newest snapshot).
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub pick: Pick,
    /// The medium: media:PATH[?labels=…|?set=…] or a media sink's name.
    #[arg(long, value_name = "MEDIA")]
    pub to: String,
}

/// `coffer export`.
pub(crate) async fn exec(ctx: &Ctx, a: ExportArgs) -> CmdResult {
    let Reading { config, trust, from } = a.pick.open(ctx)?;
    // A medium is made with `coffer media init`, never by --create-sink.
    let to = ctx.sink(&a.to, config.as_ref())?;
    // Every media check (mounted, label, identity) runs on any operation:
    // fail here, before locking or reading the source.
    media::check_medium(to.as_ref())
        .await
        .map_err(|e| e.prefix(format!("--to {}", a.to)))?;
    let medium = medium_of(to.as_ref());
    let entries = a.pick.entries(from.as_ref()).await?;
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
    if !ids.is_empty()
        && let Err(e) = media::write_export_kit(from.as_ref(), to.as_ref(), ids.clone(), &trust).await
    {
        kit_error = Some(e.prefix("writing the restore kit on the medium"));
    }
    if ctx.json {
        let mut report = batch.report(from.as_ref(), to.as_ref());
        report.kit = Some(kit_error.is_none() && !ids.is_empty());
        print_json(&report);
    } else if kit_error.is_none() && !ids.is_empty() {
        println!(
            "wrote {}, {}, {} and {} on the medium",
            RESTORE_FILE, SUMS_FILE, SIGNERS_FILE, CUSTODY_FILE
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

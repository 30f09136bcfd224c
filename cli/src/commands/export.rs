//! `coffer export`: snapshots to a removable medium, read back, with the
//! restore kit and the custody log.

use std::path::PathBuf;

use clap::Args;
use coffer_app::config::Config;
use coffer_app::media::{self, CUSTODY_FILE, RESTORE_FILE, SIGNERS_FILE, SUMS_FILE, medium_of};
use coffer_core::keys::{RecipientKey, SignerKey, TrustState, TrustedSigners};
use coffer_core::ops::{CatalogEntry, Rebundle};
use coffer_core::{Result, config_error};

use crate::ctx::{CmdResult, Ctx, KeySel};
use crate::output::print_json;
use crate::transfer::{Batch, Pick, Reading, run_batch};

/// `coffer export` (none named: the newest snapshot).
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub pick: Pick,
    /// The medium: media:PATH[?labels=…|?set=…] or a media sink's name.
    #[arg(long, value_name = "MEDIA")]
    pub to: String,
    /// How chunked snapshots go on the medium: `chunked` (as stored, no key
    /// needed) or `bundle` (each as one age file that `age -d | zstd -d |
    /// tar x` opens; needs an identity, the snapshot's recipients and, for
    /// a signed snapshot, a signing key). Bundles always go as they are.
    #[arg(long, value_name = "FORMAT", value_parser = ["chunked", "bundle"], default_value = "chunked")]
    pub format: String,
    /// With --format bundle: a recipient of the snapshots (their own, named
    /// by fingerprint in the index); repeatable; adds to the config's.
    #[arg(long = "recipient", short = 'r', value_name = "KEY")]
    pub recipients: Vec<String>,
    /// With --format bundle: signs the bundles' indexes (default: the
    /// snapshots' job's key, else the config's `signing-key`).
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// With --format bundle: the keys that read the chunks.
    #[command(flatten)]
    pub keys: KeySel,
}

/// The keys of `--format bundle` for `entries`: identities from the flags,
/// recipients from the flags and every recipient the config names, the
/// signing key from the flag, the snapshots' one job, or the config.
fn rebundle(a: &ExportArgs, config: Option<&Config>, entries: &[CatalogEntry]) -> Result<Option<Rebundle>> {
    if a.format != "bundle" {
        if !a.recipients.is_empty() || a.signing_key.is_some() {
            return Err(
                config_error("--recipient and --signing-key are for --format bundle only")
                    .with_hint("add --format bundle, or drop them: a chunked export copies without keys"),
            );
        }
        return Ok(None);
    }
    // Bundles go as they are: keys are needed only for chunked ones.
    if !entries.iter().any(|e| e.index.chunks.is_some()) {
        return Ok(None);
    }
    let ids = crate::ctx::identities(&a.keys)?;
    if ids.is_empty() {
        return Err(config_error(
            "--format bundle decrypts the chunks to write them again: no identity was given",
        )
        .with_hint("pass --identity FILE (or set COFFER_IDENTITY)"));
    }
    let mut pool: Vec<String> = a.recipients.clone();
    if let Some(c) = config {
        pool.extend(c.recipients.iter().cloned());
        pool.extend(c.jobs.values().filter_map(|j| j.recipients.clone()).flatten());
    }
    let recipients = pool
        .iter()
        .map(|r| RecipientKey::parse(r))
        .collect::<Result<Vec<_>>>()?;
    let mut jobs = entries.iter().map(|e| e.index.job.as_str());
    let first = jobs.next();
    let job_key = match (first, config) {
        (Some(j), Some(c)) if jobs.all(|o| o == j) => c.jobs.get(j).and_then(|j| j.signing_key.clone()),
        _ => None,
    };
    let signing_key = coffer_app::job::signing_key(a.signing_key.as_deref(), job_key.as_deref(), config)?;
    Ok(Some(
        Rebundle::new(ids, recipients, signing_key).with_threads(coffer_app::job::threads()),
    ))
}

/// The signers the kit lists: the trusted ones and `exporter` when it
/// signed a bundle of `batch` (only snapshots whose signature was trusted
/// are signed again, so then signers are trusted).
fn kit_signers(trust: &TrustedSigners, exporter: Option<SignerKey>, batch: &Batch) -> TrustedSigners {
    let mut signers = trust.clone();
    let signed_here = batch.results.iter().any(|(e, r)| {
        matches!(r, Ok(o) if e.index.chunks.is_some()
            && o.index.chunks.is_none()
            && matches!(o.signature, TrustState::Trusted(_)))
    });
    if let Some(k) = exporter
        && signed_here
        && !signers.keys().contains(&k)
    {
        signers.push(k);
    }
    signers
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
    let how = rebundle(&a, config.as_ref(), &entries)?;
    let exporter = how.as_ref().and_then(Rebundle::signing_key).map(|k| k.public());
    let batch = run_batch(
        ctx,
        from.clone(),
        to.clone(),
        entries,
        trust.clone(),
        "exported",
        how,
    )
    .await?;
    let signers = kit_signers(&trust, exporter, &batch);
    let ids = batch.ok_ids();
    let mut kit_error = None;
    if !ids.is_empty()
        && let Err(e) = media::write_export_kit(from.as_ref(), to.as_ref(), ids.clone(), &signers).await
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

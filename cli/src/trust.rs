//! Signing keys, trusted signers, sink locks and `coffer unlock`: the CLI
//! side of signed snapshots and locking (the logic is in coffer-core's
//! `signing` and `lock` modules).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use coffer_core::{
    CatalogEntry, LockGuard, LockOptions, Result, SigningKey, Sink, TrustState, TrustedSigners, config_error,
};
use serde_json::json;

use crate::args::{SinkSel, TrustSel};
use crate::commands::{CmdResult, Ctx, write_new_private};
use crate::config::Config;
use crate::output::print_json;

/// `coffer unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub sink: SinkSel,
    /// Also remove live locks. Only when their holder is surely gone (a
    /// crashed host): a running prune or backup loses its protection.
    #[arg(long)]
    pub force: bool,
}

/// The trusted signers: --trusted-signer flags plus the config's
/// `trusted-signers` (files relative to the config's folder).
pub(crate) fn trusted_signers(sel: &TrustSel, config: Option<&Config>) -> Result<TrustedSigners> {
    let mut t = TrustedSigners::new();
    for s in &sel.trusted_signers {
        t.add(s, Path::new("."))
            .map_err(|e| e.prefix("--trusted-signer"))?;
    }
    if let Some(c) = config {
        let base = c
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        for s in &c.trusted_signers {
            t.add(s, base)
                .map_err(|e| e.prefix(format!("{}: trusted-signers", c.path.display())))?;
        }
    }
    Ok(t)
}

/// Refuses a snapshot whose signature fails the trust policy; call it
/// before fetching or decrypting anything.
pub(crate) fn enforce(trust: &TrustedSigners, entry: &CatalogEntry) -> Result<TrustState> {
    trust.enforce(entry.index.id.as_str(), &entry.signature)
}

/// The signing key of a backup: --signing-key, else the job's, else the
/// config's top-level one.
pub(crate) fn signing_key(
    flag: Option<&Path>,
    job: Option<&Path>,
    config: Option<&Config>,
) -> Result<Option<Arc<SigningKey>>> {
    let path: Option<PathBuf> = flag
        .map(Path::to_path_buf)
        .or_else(|| job.map(Path::to_path_buf))
        .or_else(|| config.and_then(|c| c.signing_key.clone()));
    match path {
        Some(p) => Ok(Some(Arc::new(SigningKey::from_file(&p)?))),
        None => Ok(None),
    }
}

/// `coffer keygen --signing`.
pub(crate) fn keygen_signing(ctx: &Ctx, output: Option<&Path>) -> CmdResult {
    let Some(path) = output else {
        return Err(config_error(
            "--signing needs -o FILE: a signing key is written to a file, never printed",
        )
        .with_hint("coffer keygen --signing -o sign.key")
        .into());
    };
    let key = SigningKey::generate();
    write_new_private(path, key.file_text().as_bytes())?;
    let public = key.public();
    if ctx.json {
        print_json(&json!({
            "signer": public.to_text(),
            "ssh": public.to_ssh(),
            "fingerprint": public.fingerprint(),
            "signing_key_file": path.display().to_string(),
        }));
    } else {
        println!("{public}");
        eprintln!(
            "signing key written to {} (mode 0600); trust its public key above with `trusted-signers` or --trusted-signer ({})",
            path.display(),
            public.fingerprint()
        );
    }
    Ok(())
}

/// Shared locks on every sink of a backup (released on drop). Refuses to
/// start while a prune holds one of them; a sink where no lock can be
/// written is left to fail in the backup itself.
pub(crate) async fn lock_shared(sinks: &[(String, Arc<dyn Sink>)], holder: &str) -> Result<Vec<LockGuard>> {
    let opts = LockOptions::from_env()?;
    let mut guards = Vec::new();
    for (name, sink) in sinks {
        match coffer_core::acquire_shared_with(sink.clone(), holder, &opts).await {
            Ok(g) => guards.push(g),
            // A sink that cannot even store a lock fails its put too; the
            // run reports it per sink (a partial failure) instead.
            Err(e) if !coffer_core::is_lock_conflict(&e) => {
                tracing::warn!("sink `{name}`: cannot take a lock: {e}");
            }
            Err(e) => {
                for g in guards {
                    g.release().await;
                }
                return Err(e.prefix(format!("sink `{name}`")));
            }
        }
    }
    Ok(guards)
}

/// Releases held locks.
pub(crate) async fn release_all(guards: Vec<LockGuard>) {
    for g in guards {
        g.release().await;
    }
}

/// `coffer unlock [--sink S] [--force]`.
pub(crate) async fn unlock(ctx: &Ctx, a: UnlockArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.read_sinks(&a.sink, config.as_ref())?;
    let opts = LockOptions::from_env()?;
    let mut out = Vec::new();
    for (name, sink) in &sinks {
        let report = coffer_core::break_locks(sink.as_ref(), a.force, &opts)
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        for l in &report.removed {
            let what = if l.stale { "stale" } else { "LIVE" };
            eprintln!(
                "warning: sink {name}: removed the {what} lock held by {} ({})",
                l.describe(),
                l.key
            );
        }
        for l in &report.kept {
            eprintln!(
                "sink {name}: kept the live lock held by {} ({}); pass --force only if that process is gone",
                l.describe(),
                l.key
            );
        }
        if !ctx.json && report.removed.is_empty() && report.kept.is_empty() {
            println!("sink {name}: no locks");
        } else if !ctx.json {
            println!(
                "sink {name}: removed {} lock(s), kept {} live lock(s)",
                report.removed.len(),
                report.kept.len()
            );
        }
        let item = |l: &coffer_core::LockStatus| json!({ "key": l.key, "stale": l.stale, "lock": l.info, "holder": l.describe() });
        out.push(json!({
            "sink": name,
            "removed": report.removed.iter().map(item).collect::<Vec<_>>(),
            "kept": report.kept.iter().map(item).collect::<Vec<_>>(),
        }));
    }
    if ctx.json {
        print_json(&json!(out));
    }
    Ok(())
}

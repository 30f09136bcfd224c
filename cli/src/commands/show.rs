//! `coffer show`: one snapshot's index (and manifest with a key).

use std::sync::Arc;

use clap::Args;
use coffer_core::Sink;
use coffer_core::ops::ShowOutcome;

use crate::ctx::{CmdResult, Ctx, ReadSel, Reading, deep_check, find_snapshot, identities};
use crate::output::{print_json, size};

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    #[command(flatten)]
    pub read: ReadSel,
}

pub(crate) async fn exec(ctx: &Ctx, a: ShowArgs) -> CmdResult {
    let Reading { sinks, trust, .. } = ctx.reading(&a.read)?;
    let (sink_name, sink, entry) = find_snapshot(&sinks, &a.snapshot).await?;
    let signature = crate::ctx::enforce(&trust, &entry)?;
    let ids = identities(&a.read.keys)?;
    let manifest = if ids.is_empty() {
        None
    } else {
        Some(deep_check(ctx, "show", sink.as_ref(), &entry.index, Arc::new(ids)).await?)
    };
    if ctx.json {
        print_json(&ShowOutcome {
            sink: sink_name,
            state: entry.state.as_str().to_string(),
            index: entry.index,
            signature: signature.as_str().to_string(),
            signer: signature.fingerprint().map(str::to_string),
            manifest: manifest.as_ref().map(|s| s.manifest.clone()),
            sources: manifest.map(|s| s.sources.sources),
        });
        return Ok(());
    }
    let i = &entry.index;
    println!("snapshot   {}", i.id);
    println!("sink       {sink_name} ({})", sink.info());
    println!("state      {}", entry.state.as_str());
    match signature.fingerprint() {
        Some(fp) => println!("signature  {} ({fp})", signature.as_str()),
        None => println!("signature  {}", signature.as_str()),
    }
    println!("job        {}", i.job);
    println!("created    {}", i.created_at);
    println!("host       {}", i.host);
    if !i.tags.is_empty() {
        println!("tags       {}", i.tags.join(", "));
    }
    println!(
        "object     {} ({}, sha256 {})",
        i.object.key,
        size(i.object.size),
        i.object.sha256
    );
    println!("compressed {}", i.compression);
    println!(
        "encryption age, {} {}",
        i.encryption.mode,
        i.encryption.recipients.join(" ")
    );
    for s in &i.sources {
        println!("source     {} ({})", s.name, s.kind);
    }
    if let Some(s) = manifest {
        println!(
            "manifest   {} files, {} (all checked)",
            s.files_checked,
            size(s.manifest.total_bytes)
        );
        for (src, rec) in s.manifest.sources.iter().zip(&s.sources.sources) {
            println!("  {}: {} — {}", src.name, rec.description, src.report.summary);
        }
    }
    Ok(())
}

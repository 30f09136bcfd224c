//! `coffer dedup-key`: fetch the dedup key of a sink's chunked snapshots
//! with an identity, so another backup host can join the sink and
//! deduplicate against what is stored there.

use std::path::PathBuf;

use clap::Args;
use coffer_core::config_error;

use crate::ctx::{CmdResult, Ctx, KeySel, identities, write_new_private};

#[derive(Debug, Args)]
pub struct DedupKeyArgs {
    /// The sink (a name from the config, a directory, or a URL).
    #[arg(long, value_name = "SINK")]
    pub sink: String,
    #[command(flatten)]
    pub keys: KeySel,
    /// Which key, when the sink holds several (its id, from `coffer show`).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Write the key to FILE (mode 0600; refuses to overwrite). A backup
    /// host then uses it with --dedup-key FILE or `dedup-key = FILE`.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
}

pub(crate) async fn exec(ctx: &Ctx, a: DedupKeyArgs) -> CmdResult {
    let config = ctx.config()?;
    let sink = ctx.sink(&a.sink, config.as_ref())?;
    let ids = identities(&a.keys)?;
    let keys = coffer_core::chunked::recover_dedup_keys(sink.as_ref(), &ids).await?;
    let key = match &a.id {
        Some(id) => keys.into_iter().find(|k| k.id() == *id).ok_or_else(|| {
            config_error(format!(
                "sink `{}` holds no dedup key {id} that this identity opens",
                a.sink
            ))
        })?,
        None if keys.len() == 1 => keys.into_iter().next().expect("one"),
        None => {
            let list: Vec<String> = keys.iter().map(|k| k.id()).collect();
            return Err(config_error(format!(
                "sink `{}` holds several dedup keys ({}); pick one with --id",
                a.sink,
                list.join(", ")
            ))
            .into());
        }
    };
    write_new_private(&a.output, key.file_text().as_bytes())?;
    if ctx.json {
        crate::output::print_json(&serde_json::json!({ "id": key.id(), "file": a.output }));
    } else {
        println!("dedup key {} written to {}", key.id(), a.output.display());
    }
    Ok(())
}

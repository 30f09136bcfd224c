//! `coffer sink init`: make a new sink.

use clap::{Args, Subcommand};
use coffer_core::Sink;
use coffer_core::ops::SinkReady;

use crate::ctx::{CmdResult, Ctx};
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct SinkCmdArgs {
    #[command(subcommand)]
    pub action: SinkAction,
}

#[derive(Debug, Subcommand)]
pub enum SinkAction {
    /// Make SINK a coffer sink: a local directory is created (its last
    /// component only: the parent must exist) with the marker
    /// `coffer-sink.json`; an existing sink is left as it is.
    Init {
        /// A directory, a URL, or a sink name from the config.
        sink: String,
    },
}

/// `coffer sink init SINK`.
pub(crate) async fn exec(ctx: &Ctx, a: SinkCmdArgs) -> CmdResult {
    let config = ctx.config()?;
    match a.action {
        SinkAction::Init { sink: spec } => {
            let sink = ctx.sink(&spec, config.as_ref())?;
            sink.init()
                .await
                .map_err(|e| e.prefix(format!("sink `{spec}`")))?;
            let location = sink.info().to_string();
            if ctx.json {
                print_json(&SinkReady {
                    sink: spec,
                    location,
                    ready: true,
                });
            } else {
                println!("{location} is a coffer sink, ready for `coffer backup --sink {spec}`");
            }
            Ok(())
        }
    }
}

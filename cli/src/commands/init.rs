//! `coffer init`: a commented example coffer.toml.

use std::path::PathBuf;

use clap::Args;
use coffer_core::ops::InitOutcome;
use coffer_core::{Error, config_error};

use crate::config::EXAMPLE;
use crate::ctx::{CmdResult, Ctx};
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write (default ./coffer.toml).
    #[arg(long, short = 'o', default_value = "coffer.toml")]
    pub output: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

pub(crate) fn exec(ctx: &Ctx, a: InitArgs) -> CmdResult {
    if a.output.exists() && !a.force {
        // A usage error (exit 2): the command line asked for what it must not do.
        return Err(config_error(format!("{} exists", a.output.display()))
            .with_hint("pass --force to overwrite it, or -o another file")
            .into());
    }
    std::fs::write(&a.output, EXAMPLE)
        .map_err(|e| Error::io(format!("writing {}", a.output.display()), e))?;
    if ctx.json {
        print_json(&InitOutcome {
            written: a.output.display().to_string(),
        });
    } else {
        println!(
            "wrote {}: edit its recipients, sources and sinks, then run `coffer backup`",
            a.output.display()
        );
    }
    Ok(())
}

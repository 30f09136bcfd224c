//! `coffer man`: man pages generated from the parser's own definitions.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory};
use coffer_core::Error;

use super::Cli;
use crate::ctx::CmdResult;

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write coffer.1 and one coffer-COMMAND.1 per command into DIR
    /// instead of printing coffer.1.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
}

/// Prints `coffer.1`, or writes it and a page per command into a folder.
pub(crate) fn exec(a: ManArgs) -> CmdResult {
    let cmd = Cli::command();
    let Some(dir) = a.output else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut out)
            .map_err(|e| Error::io("rendering the man page", e))?;
        std::io::stdout()
            .write_all(&out)
            .map_err(|e| Error::io("writing the man page", e))?;
        return Ok(());
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    clap_mangen::generate_to(cmd, &dir)
        .map_err(|e| Error::io(format!("writing man pages into {}", dir.display()), e))?;
    println!("man pages written to {}", dir.display());
    Ok(())
}

//! `coffer completions SHELL` and `coffer man`: generated from the same
//! clap definitions as the parser, so they never drift from the flags.

use std::io::Write;

use clap::CommandFactory;
use coffer_core::Error;

use crate::args::{Cli, CompletionsArgs, ManArgs};
use crate::commands::CmdResult;

/// Prints the completion script of `a.shell` on stdout.
pub(crate) fn completions(a: CompletionsArgs) -> CmdResult {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "coffer", &mut std::io::stdout());
    Ok(())
}

/// Prints `coffer.1`, or writes it and a page per command into a folder.
pub(crate) fn man(a: ManArgs) -> CmdResult {
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

//! `coffer completions SHELL`: generated from the parser's own definitions.

use clap::{Args, CommandFactory};

use super::Cli;
use crate::ctx::CmdResult;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completion script of `a.shell` on stdout.
pub(crate) fn exec(a: CompletionsArgs) -> CmdResult {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "coffer", &mut std::io::stdout());
    Ok(())
}

//! The `coffer` binary: the command line of [`coffer_cli`] with the
//! plugins compiled into it.

fn main() -> std::process::ExitCode {
    coffer_cli::main_with(|_| {})
}

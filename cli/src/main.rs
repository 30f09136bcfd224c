//! The `coffer` binary: the command line of [`coffer`] with the
//! plugins compiled into it.

fn main() -> std::process::ExitCode {
    coffer::main_with(|_| {})
}

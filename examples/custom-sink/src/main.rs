//! `coffer-exec`: the whole `coffer` command line, plus the `exec` sink.

fn main() -> std::process::ExitCode {
    coffer::main_with(coffer_sink_exec::register)
}

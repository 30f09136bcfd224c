//! `coffer-kv`: the whole `coffer` command line, plus the `kv` source and
//! its `kv-keys` check.

fn main() -> std::process::ExitCode {
    coffer::main_with(coffer_source_kv::register)
}

//! The command source's errors.
use coffer_core::Error;

pub(crate) fn short(file: &str) -> Error {
    coffer_core::forged_entry("the entry is shorter than its header says", file)
}

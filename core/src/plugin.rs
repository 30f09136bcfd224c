//! Everything a sink or source plugin needs, in one import:
//!
//! ```
//! use coffer_core::plugin::*;
//! ```
//!
//! The traits a plugin implements ([`Sink`], [`Source`] and [`Restorer`],
//! or the settings traits [`SinkSettings`] and [`SourceSettings`]), what
//! they take and return, the helpers that parse settings and errors the
//! same way for every plugin, and what a source adds to drills and checks
//! ([`DrillScratch`], [`Check`], [`CheckFactory`]). The rest of the crate
//! is for front ends and the pipeline.

pub use crate::checks::{
    Check, CheckEnv, CheckFactory, CheckResult, ChecksAt, DrillScratch, ScratchEvidence, ScratchRun,
    check_result,
};
pub use crate::{
    Area, ByteStream, Bytes, CancelFlag, CaptureContext, Entry, EntryBody, EntryCheck, EntrySender, Error,
    ErrorKind, FileStat, KindOptions, ObjectMeta, OptionKind, PutMode, PutOptions, Registry, RestoreAction,
    RestoreEntry, RestoreEntryKind, RestoreOptionSpec, RestoreOptions, RestoreOutcome, RestoreReport,
    Restorer, Result, Sink, SinkExt, SinkFactory, SinkInfo, SinkSettings, Source, SourceFactory, SourceInfo,
    SourceReport, SourceSettings, TableContext, async_trait, check_relative_path, config_error, error_chain,
    forged_entry, malformed_origin, parse_origin, parse_table, read_entry_body, settings_factory,
    source_settings_factory, toml,
};

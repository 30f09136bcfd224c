//! coffer-app: what coffer does at the level of a job or a service, below
//! any front end. The `coffer` command line is one front end; the oplog
//! follower, a scheduler or an HTTP API would be others, reusing this
//! crate instead of the CLI's code.
//!
//! - [`config`]: `coffer.toml` parsed strictly into plugin objects;
//! - [`job`]: what a backup run captures, where it writes, how it
//!   encrypts ([`job::JobPlan`]);
//! - [`backup`]: a job's backup with its hooks, quorum, prune and pin
//!   ([`retention`]: whose policy applies);
//! - [`oplog`]: a job's oplog follower (its request and its metrics);
//! - `runbook` (feature `runbook`): importing a backup of the manual
//!   runbook as a snapshot;
//! - [`keycheck`]: the key-escrow drill;
//! - [`media`]: removable media, their restore kit and custody log;
//! - [`trust`]: whom a restore trusts;
//! - [`restoring`]: opening a snapshot (its signature judged first) and
//!   restoring it with the config's sources;
//! - [`hooks`] and [`health`]: cold-backup hooks and health waits;
//! - [`checks`]: the generic check kinds (`http`, `prometheus`) and
//!   running a job's checks (plugins register their own kinds);
//! - [`drill`]: a rehearsed restore into scratch places, checked and
//!   removed, and [`evidence`]: its report, stored in the sink's history;
//! - [`record`]: the audit log and the metrics file, behind the
//!   [`record::Observer`] a run reports to;
//! - [`App`]: the context a front end gives each operation (config,
//!   plugins, cancellation, observer).
//!
//! Storage-level operations (backup under locks, restore, verify, prune,
//! copy …) are in `coffer_core::ops`; this layer composes them with the
//! configuration. It sits between the plugin crates and the front ends, in
//! a crate of its own rather than in core, because it needs HTTP (health
//! waits, checks), processes (hooks) and files outside any sink (audit
//! log, metrics), none of which a plugin should inherit from core.

pub mod backup;
pub mod checks;
pub mod config;
mod context;
pub mod create_sink;
pub mod drill;
pub mod evidence;
pub mod health;
pub mod hooks;
pub mod job;
pub mod keycheck;
pub mod media;
pub mod oplog;
pub mod record;
pub mod restoring;
pub mod retention;
#[cfg(feature = "runbook")]
pub mod runbook;
pub mod trust;

pub use context::App;

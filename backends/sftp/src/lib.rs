//! coffer-sink-sftp: stores snapshots in a directory of an SSH server over
//! SFTP (a NAS, an off-site box, any OpenSSH server).
//!
//! - Named by `sftp://USER@HOST:PORT/PATH?key=/path/id_ed25519&known-hosts=/path/known_hosts`
//!   (`/PATH` is relative to the login directory, `//PATH` absolute), or by
//!   a `[sink.NAME] kind = "sftp"` table (see [`SftpSinkConfig`]).
//! - **Key authentication** with an unencrypted OpenSSH private key file.
//!   Passwords are not accepted.
//! - **Strict host key checking** against the given known_hosts file
//!   (default `~/.ssh/known_hosts`; hashed entries and `[host]:port`
//!   work). An unknown host is refused with its SHA256 fingerprint and a
//!   hint; a changed key is refused as a possible man-in-the-middle.
//!   `insecure-accept-host-key=true` accepts any key, and logs a warning.
//! - **Atomic put.** A put writes `.coffer-tmp-<random>` next to its
//!   destination (mode 0600, 16 pipelined 64 KiB writes), fsyncs it
//!   (`fsync@openssh.com`), then renames it into place: create-only puts
//!   with plain SFTP rename, which never replaces a file (OpenSSH uses
//!   `link(2)`), so two writers cannot replace each other; overwriting
//!   puts with `posix-rename@openssh.com`. A failed or dropped put removes
//!   its temp file; one left by a killed process or a dropped connection
//!   is never listed, and the first put of a run removes those older than
//!   12 hours ([`SftpSink::cleanup_stale_temp`] on demand).
//! - **Timeouts and retries.** Connecting, the SSH handshake and
//!   authentication must finish within `connect-timeout-secs` (10 s);
//!   each SFTP request within `timeout-secs` (30 s); keepalives every 15 s
//!   notice a dead server. A dropped connection is reopened on next use,
//!   and list, get, delete and the start of a put are retried once on a
//!   fresh connection. A put whose connection drops mid-body fails (its
//!   body cannot be replayed) and leaves nothing visible; run again.
//!
//! **Why a pure-Rust client** (`russh` + `russh-sftp`) rather than
//! OpenDAL's sftp service: OpenDAL drives the system `ssh` binary, which
//! takes no known_hosts path (strict checking against a given file needs
//! a generated ssh_config and a wrapper on PATH) and keeps state in
//! `~/.ssh` and `XDG_STATE_HOME`. russh checks a known_hosts file
//! directly, needs no external program, and exposes the SFTP requests
//! this sink relies on (exclusive create, fsync, link-based rename,
//! posix-rename), so every guarantee above is explicit in this crate.
//! russh 0.54 is used with the `ring` backend: russh 0.55+ requires a
//! `kem` release that conflicts with the one age 0.12 needs.
//!
//! Tested against Debian's OpenSSH `sshd` with `internal-sftp`.
//!
//! ```no_run
//! # async fn demo() -> coffer_core::Result<()> {
//! use coffer_core::{PutOptions, SinkExt};
//! let sink = coffer_sink_sftp::SftpSink::from_url(
//!     "sftp://coffer@nas.example.org:22/backups?key=/etc/coffer/id_ed25519&known-hosts=/etc/coffer/known_hosts",
//! )?;
//! sink.put_bytes("hello.txt", "hi".into(), PutOptions::create()).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod config;
mod error;
mod sink;

pub use config::SftpSinkConfig;
pub use sink::{SftpSink, TEMP_PREFIX};

/// The URL scheme of this sink: `sftp`.
pub const SCHEME: &str = "sftp";

/// The TOML `kind` of this sink: `sftp`.
pub const KIND: &str = "sftp";

/// Registers the `sftp` sink kind and the `sftp://` scheme.
pub fn register(reg: &mut coffer_core::Registry) {
    reg.register_sink(coffer_core::settings_factory::<SftpSinkConfig>());
}

//! An example coffer sink plugin: objects are stored through commands the
//! user configures, so any storage with a command-line client (rclone's
//! 70 backends, a vendor's upload tool) becomes a sink without code.
//!
//! ```toml
//! [sink.offsite]
//! kind = "exec"
//! # Each runs with /bin/sh -c; COFFER_KEY, COFFER_FROM and COFFER_TO are
//! # set in its environment (keys are never pasted into the line).
//! put = 'rclone rcat "offsite:coffer/$COFFER_KEY"'          # the object on stdin
//! get = 'rclone cat "offsite:coffer/$COFFER_KEY"'           # the object on stdout
//! list = 'rclone lsf -R --files-only --format sp offsite:coffer'   # "SIZE;KEY" lines
//! rename = 'rclone moveto "offsite:coffer/$COFFER_FROM" "offsite:coffer/$COFFER_TO"'
//! delete = 'rclone deletefile "offsite:coffer/$COFFER_KEY"'
//! timeout = 3600                                            # seconds per command
//! ```
//!
//! How it keeps the [`Sink`] contract with commands that know nothing of it:
//!
//! - **All or nothing**: `put` writes to a hidden temporary key
//!   (`KEY.coffer-tmp-RANDOM`), and only a complete, successful upload is
//!   renamed to `KEY`; a failed or dropped upload deletes the temporary
//!   key. `list` never shows temporary keys.
//! - **Create-only** is checked with `list` before the rename, which is
//!   not atomic: the sink says so (`atomic_create = false`), and coffer's
//!   locks keep two writers apart.
//! - **Exact reads**: `get` compares the bytes the command printed with
//!   the size `list` reports, and fails instead of returning a short
//!   object; a missing key is `NotFound`.
//! - A command that fails or hangs past `timeout` fails the operation with
//!   its exit status and the last line of its stderr.

mod sink;

pub use sink::{ExecSink, ExecSinkConfig};

/// The TOML `kind` of this sink.
pub const KIND: &str = "exec";

/// Registers the `exec` sink kind: the one line a plugin's `main` needs.
pub fn register(reg: &mut coffer_core::Registry) {
    reg.register_sink(coffer_core::settings_factory::<sink::ExecSettings>());
}

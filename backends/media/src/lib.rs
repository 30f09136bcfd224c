//! coffer-sink-media: stores snapshots on a removable medium (a USB disk)
//! mounted at a directory, for sites whose backups cross an air gap.
//!
//! It is the local sink (temp file + fsync + rename + directory fsync)
//! plus the checks that catch the classic media disasters:
//!
//! - **Unmounted medium.** The path must be a mount point: a different
//!   filesystem (`st_dev`) than its parent. Otherwise every operation is
//!   refused — writing into the empty mount point of an unplugged disk
//!   would fill the host's own disk.
//! - **Wrong disk.** `coffer media init PATH --label OFFSITE-A [--set
//!   weekly]` writes an identity file `coffer-media.json` (label, random
//!   media id, rotation set, creation time, coffer version). A sink names
//!   the labels and/or set it accepts; any other medium is refused.
//! - **Full disk.** Before a put, free space (`statvfs`) must cover its
//!   size hint plus a margin ([`space_margin`]); otherwise the put is
//!   refused before a byte is written, saying how much is needed.
//! - **Lying write cache.** After the put, the whole object is read back
//!   from the medium (cached pages dropped first) and its SHA-256 compared
//!   with what was written; a mismatch removes the object and fails.
//!
//! The [`kit`] module writes the on-medium restore kit of `coffer export`
//! (`RESTORE.txt`, `SHA256SUMS`, `trusted-signers.txt`, `custody.log`).
//!
//! A sink is named `media:/mnt/usb?labels=OFFSITE-A,OFFSITE-B` (or
//! `?set=weekly`), or in the config file:
//!
//! ```toml
//! [sink.offsite]
//! kind = "media"
//! path = "/mnt/usb"
//! labels = ["OFFSITE-A", "OFFSITE-B"]
//! retention = { keep-monthly = 12 }   # applies per medium
//! ```
//!
//! ```
//! let mut registry = coffer_core::Registry::new();
//! coffer_sink_media::register(&mut registry);
//! let sink = registry.sink_from_url("media:/mnt/usb?set=weekly")?; // nothing checked yet
//! assert_eq!(sink.info().scheme, "media");
//! # Ok::<(), coffer_core::Error>(())
//! ```
#![deny(missing_docs)]

mod config;
mod error;
mod identity;
pub mod kit;
mod sink;

pub use config::MediaSinkConfig;
pub use identity::{
    IDENTITY_FILE, IDENTITY_FORMAT, MediaIdentity, MediaStatus, check_mounted, free_space, init_medium,
    media_status, read_identity, space_margin,
};
pub use sink::MediaSink;

/// The URL scheme of this sink: `media`.
pub const SCHEME: &str = "media";

/// The TOML `kind` of this sink: `media`.
pub const KIND: &str = "media";

/// Registers the `media` sink kind and the `media:` scheme.
pub fn register(reg: &mut coffer_core::Registry) {
    reg.register_sink(coffer_core::settings_factory::<MediaSinkConfig>());
}

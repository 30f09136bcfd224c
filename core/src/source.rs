//! The [`Source`] trait: one part of a service's state (a database, a
//! directory of config files, some keys of a `.env` file) that is captured
//! into bundle entries and put back on restore.
//!
//! Sources never see tar, compression, encryption or sinks. Capture sends
//! [`Entry`] values through an [`EntrySender`]; the pipeline writes them
//! into the bundle under `<area>/<source name>/<path>`. Restore hands the
//! entries of one source, in bundle order, to a [`Restorer`] running on a
//! blocking thread; nothing a restorer does may become visible before
//! [`Restorer::finish`] is called with `commit = true`, which happens only
//! after the whole bundle verified.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Read;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::{Error, ErrorKind, Result};

/// Top-level folder of the bundle an entry belongs to, as its source
/// declares it: a name and whether what it holds is secret.
///
/// coffer ships three (`files`, `secrets`, `mongo`); a plugin declares its
/// own with [`Area::new`] (e.g. `Area::new("postgres", false)`) without
/// touching core or the bundle format: entries go to
/// `<area>/<source>/<path>` whatever the name. A secret area's files are
/// stored with mode 0600 and its directories 0700 whatever the source said.
/// Areas compare by name.
#[derive(Debug, Clone)]
pub struct Area {
    name: std::borrow::Cow<'static, str>,
    secret: bool,
}

// The built-in areas keep the names of the former enum variants, so plugin
// code written against them (`Area::Files`, `entry.area == Area::Secrets`)
// is unchanged.
#[allow(non_upper_case_globals)]
impl Area {
    /// `files/<source>/…`: config, seeds, directories.
    pub const Files: Area = Area::builtin("files", false);
    /// `secrets/<source>/…`: always stored with mode 0600.
    pub const Secrets: Area = Area::builtin("secrets", true);
    /// `mongo/<source>/…`: mongodump-compatible layout.
    pub const Mongo: Area = Area::builtin("mongo", false);
}

impl Area {
    const fn builtin(name: &'static str, secret: bool) -> Area {
        Area {
            name: std::borrow::Cow::Borrowed(name),
            secret,
        }
    }

    /// A plugin's own area: `name` is the bundle folder (`[a-z0-9][a-z0-9-]*`,
    /// at most 32 bytes); `secret` makes its content private (0600 files,
    /// 0700 directories) in the bundle and on restore. A built-in name
    /// gives the built-in area, whose secrecy cannot be changed.
    pub fn new(name: &str, secret: bool) -> Result<Area> {
        if let Some(builtin) = [Area::Files, Area::Secrets, Area::Mongo]
            .into_iter()
            .find(|a| a.dir() == name)
        {
            return Ok(builtin);
        }
        let valid = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        if !valid {
            return Err(
                Error::new(ErrorKind::ConfigInvalid, format!("`{name}` is not an area name")).with_hint(
                    "an area is a bundle folder: lower-case letters, digits and `-`, at most 32 bytes",
                ),
            );
        }
        Ok(Area {
            name: std::borrow::Cow::Owned(name.to_string()),
            secret,
        })
    }

    /// The folder name inside the bundle.
    pub fn dir(&self) -> &str {
        &self.name
    }

    /// Whether what it holds is secret (stored 0600/0700).
    pub fn is_secret(&self) -> bool {
        self.secret
    }

    /// The area of a bundle folder read back at restore: the built-in one
    /// of that name, else a plugin's (its secrecy is a capture-time
    /// property: the modes it forced are in the bundle); `None` when the
    /// name cannot be an area.
    pub fn from_dir(dir: &str) -> Option<Area> {
        Area::new(dir, false).ok()
    }
}

impl PartialEq for Area {
    fn eq(&self, other: &Area) -> bool {
        self.name == other.name
    }
}

impl Eq for Area {}

impl std::hash::Hash for Area {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl PartialOrd for Area {
    fn partial_cmp(&self, other: &Area) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Area {
    fn cmp(&self, other: &Area) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

impl Serialize for Area {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.dir())
    }
}

impl<'de> Deserialize<'de> for Area {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Area, D::Error> {
        let name = String::deserialize(d)?;
        Area::from_dir(&name).ok_or_else(|| serde::de::Error::custom(format!("`{name}` is not an area name")))
    }
}

/// What an entry is.
pub enum EntryBody {
    /// A regular file of exactly `size` bytes read from `reader`. The reader
    /// is consumed on a blocking thread; it may open its file lazily.
    File {
        /// Exact number of bytes; a reader yielding fewer fails the backup,
        /// extra bytes are not read.
        size: u64,
        /// The content.
        reader: Box<dyn Read + Send>,
    },
    /// A directory.
    Dir,
    /// A symbolic link, stored as a link (never followed).
    Symlink {
        /// The link's target, as read with `readlink`.
        target: String,
    },
}

impl Debug for EntryBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryBody::File { size, .. } => write!(f, "File {{ size: {size} }}"),
            EntryBody::Dir => f.write_str("Dir"),
            EntryBody::Symlink { target } => write!(f, "Symlink {{ target: {target:?} }}"),
        }
    }
}

/// One item a source captures.
#[derive(Debug)]
pub struct Entry {
    /// Which bundle folder it goes to.
    pub area: Area,
    /// `/`-separated path relative to `<area>/<source>/`; no `..`, not
    /// absolute.
    pub path: String,
    /// Unix permission bits (forced to 0600 for [`Area::Secrets`] files).
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Owner `(uid, gid)` to give it back on a restore run as root (stored
    /// in the tar header); `None` (or `(0, 0)`): not recorded, root's.
    pub owner: Option<(u32, u32)>,
    /// For a file read from a file system: what identifies its version
    /// there. A chunked backup then reuses the chunks of a file unchanged
    /// since the last run (same device, inode, size, mtime and ctime)
    /// without reading it. `None`: always read.
    pub stat: Option<FileStat>,
    /// Content.
    pub body: EntryBody,
}

/// What identifies a version of a file on disk, for [`Entry::stat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStat {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
}

impl FileStat {
    /// The stat of `meta` (from `std::fs::metadata`).
    pub fn of(meta: &std::fs::Metadata) -> FileStat {
        use std::os::unix::fs::MetadataExt;
        FileStat {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }
}

/// Where captured entries go; a bounded channel to the bundle writer.
#[derive(Debug, Clone)]
pub struct EntrySender {
    tx: mpsc::Sender<Entry>,
}

impl EntrySender {
    /// A sender and its receiving end holding at most `bound` entries.
    pub fn channel(bound: usize) -> (EntrySender, mpsc::Receiver<Entry>) {
        let (tx, rx) = mpsc::channel(bound);
        (EntrySender { tx }, rx)
    }

    /// Hands one entry to the bundle writer, waiting while it is busy.
    ///
    /// Fails with [`ErrorKind::Cancelled`] when the writer has stopped
    /// (another part of the backup failed); sources should then return.
    pub async fn send(&self, entry: Entry) -> Result<()> {
        self.tx
            .send(entry)
            .await
            .map_err(|_| Error::new(ErrorKind::Cancelled, "the bundle writer stopped"))
    }
}

/// What a source is.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SourceInfo {
    /// Plugin kind, e.g. `file`, `env`, `mongo`.
    pub kind: &'static str,
    /// The source's name in the job (unique in a bundle).
    pub name: String,
    /// Human description without secrets, e.g. `file /etc/app.yaml`.
    pub description: String,
    /// What a restore needs to know to put the data back where it came
    /// from without a config file (e.g. the original path). Stored inside
    /// the encrypted bundle only. Must hold no secret.
    pub origin: serde_json::Value,
}

impl SourceInfo {
    /// Describes a source.
    pub fn new(
        kind: &'static str,
        name: impl Into<String>,
        description: impl Into<String>,
        origin: serde_json::Value,
    ) -> Self {
        SourceInfo {
            kind,
            name: name.into(),
            description: description.into(),
            origin,
        }
    }
}

/// Context of one capture.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CaptureContext {
    /// The job being run.
    pub job: String,
    progress: Option<std::sync::Arc<crate::Progress>>,
}

impl CaptureContext {
    /// A context for `job`.
    pub fn new(job: impl Into<String>) -> Self {
        CaptureContext {
            job: job.into(),
            progress: None,
        }
    }

    /// The same, counting into `progress`.
    pub(crate) fn with_progress(mut self, progress: std::sync::Arc<crate::Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Whether a progress display is watching: a source whose size costs
    /// server work to learn (a database) reports it only then.
    pub fn size_wanted(&self) -> bool {
        self.progress.as_ref().is_some_and(|p| p.is_watched())
    }

    /// Tells the progress display how many bytes this source will read
    /// (its files' sizes, say), once, before sending entries. Optional: a
    /// source that cannot tell cheaply leaves the total unknown (the
    /// display then shows bytes and rate without an ETA).
    pub fn report_size(&self, bytes: u64) {
        if let Some(p) = &self.progress {
            p.report_size(bytes);
        }
    }
}

/// What a source reports after capture or restore.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct SourceReport {
    /// One line for humans, e.g. `3 files, 12.0 KiB`.
    pub summary: String,
    /// Plugin-specific details for the manifest (counts, hashes); no
    /// secrets.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// Where the snapshot is consistent in the source's change log, when it
    /// keeps one (MongoDB: the oplog `ts` of its point in time). Public: it
    /// goes into the index, so a point-in-time restore picks its base
    /// without a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<crate::slices::LogPos>,
}

/// Options of a restore.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Put the data under this directory instead of its original place.
    pub target: Option<PathBuf>,
    /// With `target`: each source under `target/<source name>` (a drill
    /// keeps sources apart, whatever their paths).
    pub target_per_source: bool,
    /// Compute the plan only; change nothing.
    pub dry_run: bool,
    /// The plugins' options, keyed by source kind (`--opt KIND.NAME=VALUE`
    /// and the flags made from them, e.g. `mongo` → `uri`, `drop`). A
    /// restorer reads only its own kind's, with [`RestoreOptions::flag`],
    /// [`text`](RestoreOptions::text) and [`list`](RestoreOptions::list).
    pub params: KindOptions,
    /// Destinations already taken by other sources of the same restore.
    pub claims: PathClaims,
    /// Set when the user interrupts; long restores check it and stop.
    pub cancel: CancelFlag,
    /// Change-log entries to replay after the snapshot's own, per source
    /// (a point-in-time restore: `restore --to-time`), already checked.
    pub log_replays: Vec<crate::slices::pitr::LogReplay>,
    /// The kind whose options [`RestoreOptions::flag`] and the other
    /// readers read (see [`RestoreOptions::for_kind`]).
    pub(crate) reading: Option<String>,
}

/// Restore options by source kind: kind → option name → value (a list
/// option's values joined by line breaks). A kind's restorer sees only
/// its own: the `ns-*` options a drill gives MongoDB never reach another
/// plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindOptions(BTreeMap<String, BTreeMap<String, String>>);

impl KindOptions {
    /// The value of option `name` of `kind`, if given.
    pub fn get(&self, kind: &str, name: &str) -> Option<&str> {
        self.0.get(kind)?.get(name).map(String::as_str)
    }

    /// Every option of `kind` (empty when none was given).
    pub fn of(&self, kind: &str) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.0.get(kind).unwrap_or(&NONE)
    }

    /// Sets option `name` of `kind` (unchecked: a plugin setting its own
    /// kind's options, e.g. a drill's scratch places).
    pub fn insert(&mut self, kind: &str, name: &str, value: impl Into<String>) {
        self.0
            .entry(kind.to_string())
            .or_default()
            .insert(name.to_string(), value.into());
    }

    /// Sets option `name` of `kind` unless it is given already.
    pub fn insert_default(&mut self, kind: &str, name: &str, value: impl Into<String>) {
        self.0
            .entry(kind.to_string())
            .or_default()
            .entry(name.to_string())
            .or_insert_with(|| value.into());
    }

    /// Whether no option is given.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(BTreeMap::is_empty)
    }
}

impl RestoreOptions {
    /// These options as the restorer of `kind` sees them: that kind's
    /// only (its flag, text and list options; `params` holds no other
    /// kind's). Core narrows them so before it hands them to a source's
    /// [`crate::Source::restore`], [`crate::SourceFactory::place_given`]
    /// and [`crate::SourceFactory::drill_scratch`].
    pub fn for_kind(&self, kind: &str) -> RestoreOptions {
        let mut params = KindOptions::default();
        if let Some(own) = self.params.0.get(kind) {
            params.0.insert(kind.to_string(), own.clone());
        }
        RestoreOptions {
            reading: Some(kind.to_string()),
            params,
            ..self.clone()
        }
    }

    /// The kinds these options name (`--opt KIND.NAME`), given or not.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.params.0.keys().map(String::as_str)
    }

    /// The kind these options were narrowed to, if any.
    pub fn kind(&self) -> Option<&str> {
        self.reading.as_deref()
    }

    /// Every option of the kind these options were narrowed to.
    pub fn own(&self) -> &BTreeMap<String, String> {
        self.params.of(self.reading.as_deref().unwrap_or(""))
    }

    /// Whether the flag option `name` of the kind read is set (`true`).
    pub fn flag(&self, name: &str) -> bool {
        self.text(name) == Some("true")
    }

    /// The text option `name` of the kind read, if given.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.own().get(name).map(String::as_str)
    }

    /// The values of the list option `name` of the kind read, in the
    /// order given.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.text(name)
            .map(|v| v.split('\n').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }

    /// Sets the option `spec` of `kind` from a value given on the command
    /// line, checking it against its type: a flag takes `true`, `false` or
    /// nothing (true); a list option adds one value per call.
    pub fn set(&mut self, kind: &str, spec: &RestoreOptionSpec, value: &str) -> Result<()> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("restore option `{}`: {why}", spec.name),
            )
            .with_hint(format!("{} ({})", spec.help, spec.kind.describe()))
        };
        let own = self.params.0.entry(kind.to_string()).or_default();
        match spec.kind {
            OptionKind::Flag => {
                let on = match value {
                    "" | "true" => true,
                    "false" => false,
                    other => return Err(bad(&format!("`{other}` is not true or false"))),
                };
                if on {
                    own.insert(spec.name.into(), "true".into());
                } else {
                    own.remove(spec.name);
                }
            }
            OptionKind::Text if value.is_empty() => return Err(bad("needs a value")),
            OptionKind::Text => {
                own.insert(spec.name.into(), value.into());
            }
            OptionKind::List if value.is_empty() || value.contains('\n') => {
                return Err(bad("needs one value without a line break"));
            }
            OptionKind::List => {
                let v = own.entry(spec.name.into()).or_default();
                if !v.is_empty() {
                    v.push('\n');
                }
                v.push_str(value);
            }
        }
        Ok(())
    }
}

/// A deep check of one source's entries for `verify --deep`, beyond their
/// SHA-256 (which core always checks): e.g. that every BSON document of a
/// dump parses and the counts match the manifest. A kind offers one with
/// [`crate::SourceFactory::entry_check`]; a fresh check sees one
/// source's entries, in bundle order.
pub trait EntryCheck: Send {
    /// Reads one entry (whatever is left unread is read and hashed after).
    fn entry(&mut self, entry: RestoreEntry<'_>) -> Result<()>;
    /// After the last entry: compares what was read with what the manifest
    /// recorded for this source at backup time.
    fn finish(self: Box<Self>, manifest: &crate::ManifestSource) -> Result<()>;
}

/// A restore option a source plugin declares
/// ([`crate::SourceFactory::restore_options`]). The CLI offers each as
/// `--opt KIND.NAME=VALUE` (e.g. `--opt mongo.uri=mongodb://…`), checks
/// the value against its type, and hands it to the restorers of that kind
/// only, under `NAME` in [`RestoreOptions::params`], read back with
/// [`RestoreOptions::flag`], [`text`](RestoreOptions::text) or
/// [`list`](RestoreOptions::list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RestoreOptionSpec {
    /// The name after `KIND.`, e.g. `uri`: the key the restorer reads.
    pub name: &'static str,
    /// Its type.
    pub kind: OptionKind,
    /// One line of help.
    pub help: &'static str,
    /// A flag of `coffer restore` that sets it too, if any (e.g.
    /// `--mongo-uri`): the CLI makes the flag from this declaration. Kinds
    /// that declare the same alias (mongo and mongodump) share the flag: it
    /// sets the option of each.
    pub alias: Option<&'static str>,
    /// An environment variable the flag reads when it is not given (its
    /// value is never shown in `--help`), e.g. `COFFER_MONGO_URI`. Such an
    /// option names what to connect to, so `coffer drill` and `coffer
    /// check` offer its flag too.
    pub env: Option<&'static str>,
}

/// The type of a [`RestoreOptionSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptionKind {
    /// On or off: `--opt mongo.drop` or `--opt mongo.drop=false`.
    Flag,
    /// One value; the last one given wins.
    Text,
    /// Any number of values, one per `--opt`.
    List,
}

impl OptionKind {
    /// How a value is given, for help and errors.
    pub fn describe(self) -> &'static str {
        match self {
            OptionKind::Flag => "a flag: NAME, NAME=true or NAME=false",
            OptionKind::Text => "NAME=VALUE",
            OptionKind::List => "NAME=VALUE, repeatable",
        }
    }
}

/// A flag raised on Ctrl-C, shared by everything a command runs. Blocking
/// work (which a dropped future cannot stop) checks it.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl CancelFlag {
    /// Raises the flag.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the flag is raised.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `Err(Cancelled)` once the flag is raised.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::new(ErrorKind::Cancelled, "interrupted")
                .with_hint("nothing was changed; run the command again"))
        } else {
            Ok(())
        }
    }
}

/// The filesystem destinations of one restore, shared by all its sources, so
/// two sources restoring to the same path (easy with `--target`) fail
/// instead of silently overwriting each other.
///
/// A path is claimed either as a leaf (a file, a symlink, a `.env` file) or
/// as a directory that must exist (a directory entry, or a parent of
/// another claim). Several sources may need the same directory; a leaf
/// belongs to one source, and nothing of another source may sit below it
/// or make it a directory. So a collision (a symlink of one source where
/// another puts a directory, a directory where another puts its `.env`) is
/// found while staging, before any source commits.
#[derive(Debug, Clone, Default)]
pub struct PathClaims {
    inner: std::sync::Arc<std::sync::Mutex<BTreeMap<PathBuf, (String, ClaimKind)>>>,
}

/// What a source puts at a claimed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimKind {
    /// A directory that must exist (and stay a directory).
    Dir,
    /// A file or symlink.
    Leaf,
}

impl PathClaims {
    /// Records that `source` writes the file or symlink at `path`; fails if
    /// another source writes it too, needs it as a directory, or writes a
    /// file or symlink at one of its parents.
    pub fn claim(&self, path: &std::path::Path, source: &str) -> Result<()> {
        self.claim_as(path, source, ClaimKind::Leaf)
    }

    /// Records that `source` needs `path` to be a directory (it restores a
    /// directory there, or something inside it); fails if another source
    /// writes a file or symlink there or at one of its parents.
    pub fn claim_dir(&self, path: &std::path::Path, source: &str) -> Result<()> {
        self.claim_as(path, source, ClaimKind::Dir)
    }

    fn claim_as(&self, path: &std::path::Path, source: &str, kind: ClaimKind) -> Result<()> {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut map = self.inner.lock().expect("claims lock");
        if let Some((other, had)) = map.get(path)
            && other != source
            && (*had, kind) != (ClaimKind::Dir, ClaimKind::Dir)
        {
            return Err(collision(other, source, path, None));
        }
        for parent in path.ancestors().skip(1) {
            if let Some((other, ClaimKind::Leaf)) = map.get(parent)
                && other != source
            {
                return Err(collision(other, source, parent, Some(path)));
            }
        }
        if kind == ClaimKind::Leaf {
            // Claims below `path` sort right after it.
            let below = map
                .range::<std::path::Path, _>((Excluded(path), Unbounded))
                .take_while(|(p, _)| p.starts_with(path))
                .find(|(_, (other, _))| other != source);
            if let Some((inner, (other, _))) = below {
                return Err(collision(source, other, path, Some(inner)));
            }
        }
        match map.get_mut(path) {
            Some(slot) if kind == ClaimKind::Leaf => *slot = (source.to_string(), kind),
            Some(_) => {}
            None => {
                map.insert(path.to_path_buf(), (source.to_string(), kind));
            }
        }
        Ok(())
    }
}

/// `leaf_source` puts a file or symlink at `leaf`; `other` restores `leaf`
/// itself, or `inner` inside it.
fn collision(
    leaf_source: &str,
    other: &str,
    leaf: &std::path::Path,
    inner: Option<&std::path::Path>,
) -> Error {
    let msg = match inner {
        None => format!(
            "sources `{leaf_source}` and `{other}` both restore to {}",
            leaf.display()
        ),
        Some(inner) => format!(
            "source `{other}` restores {} inside {}, where source `{leaf_source}` puts a file or symlink",
            inner.display(),
            leaf.display()
        ),
    };
    Error::new(ErrorKind::ConfigInvalid, msg).with_hint(
        "nothing was changed; restore them one at a time with --only SOURCE and different --target directories",
    )
}

/// One entry handed to a [`Restorer`].
pub struct RestoreEntry<'a> {
    /// The bundle folder.
    pub area: Area,
    /// Path relative to `<area>/<source>/`; already checked to be relative
    /// and free of `..`.
    pub path: &'a str,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// The recorded owner `(uid, gid)`, if any (see [`Entry::owner`]).
    pub owner: Option<(u32, u32)>,
    /// What it is.
    pub kind: RestoreEntryKind,
    /// The content of a file entry (empty for others).
    pub reader: &'a mut dyn Read,
}

/// The type of a [`RestoreEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreEntryKind {
    /// Regular file of this size.
    File {
        /// Size in bytes.
        size: u64,
    },
    /// Directory.
    Dir,
    /// Symbolic link to `target`.
    Symlink {
        /// Link target.
        target: String,
    },
}

/// One change a restore makes (or would make, in a dry run).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, Deserialize, PartialEq, Eq)]
pub struct RestoreAction {
    /// What happens: `create`, `replace`, `unchanged`, `add-key`,
    /// `change-key`, …
    pub action: String,
    /// What it happens to: a path, a `.env` key name, a collection. Never
    /// a secret value.
    pub target: String,
}

/// What a restore did (or would do).
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct RestoreReport {
    /// One line for humans.
    pub summary: String,
    /// Every change, in order.
    pub actions: Vec<RestoreAction>,
    /// Documents each of the bundle's collections (`db.collection` as in
    /// the bundle) gained (+) or lost (−) after its data was loaded, by
    /// the replay of the writes made during a point-in-time dump: a check
    /// of the restored counts adds these to the manifest's, so it expects
    /// the counts at the snapshot's consistency point.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub count_changes: std::collections::BTreeMap<String, i64>,
}

/// Applies the entries of one source. Runs on a blocking thread.
pub trait Restorer: Send {
    /// Receives the next entry of this source, in bundle order. Must stage
    /// the data (temp files, staging collections) without changing any
    /// existing data; staging may create missing directories and temp files
    /// with hidden names (`.coffer-tmp-*`), which an abort removes. In a dry
    /// run, only record what would change and create nothing.
    fn entry(&mut self, entry: RestoreEntry<'_>) -> Result<()>;

    /// Called once after all entries. With `commit`, makes everything staged
    /// visible (rename into place, swap collections) and returns what was
    /// done; without it (the bundle failed verification or another source
    /// failed), removes everything staged and returns what would have been
    /// done. In a dry run `commit` is always false.
    fn finish(self: Box<Self>, commit: bool) -> Result<RestoreReport>;

    /// Whether `finish(true)` only renames what [`Restorer::entry`] staged
    /// (files on this host), so once staging succeeded it cannot fail for
    /// a reason outside this host. Such restorers commit after the others
    /// (a restore command, a database swap, an API call), so a commit that
    /// fails leaves the least applied. Default: `false`.
    fn commit_only_renames(&self) -> bool {
        false
    }
}

/// A part of a service's state that coffer backs up and restores.
#[async_trait]
pub trait Source: Send + Sync + Debug + 'static {
    /// What this source is.
    ///
    /// # Behavior
    /// - Cheap, infallible, and holds no secret (passwords redacted).
    fn info(&self) -> SourceInfo;

    /// Preflight: the data exists, is readable, the server answers.
    ///
    /// # Behavior
    /// - Never changes anything; fails with a clear error and hint.
    async fn check(&self) -> Result<()>;

    /// Captures the source's data, sending each entry to `out`.
    ///
    /// # Behavior
    /// - Entry paths are unique within the source, relative, free of `..`.
    /// - Memory stays bounded: bodies are streamed readers, not buffers.
    /// - Never writes plaintext to disk.
    /// - Returns the report recorded in the manifest.
    async fn capture(&self, ctx: &CaptureContext, out: EntrySender) -> Result<SourceReport>;

    /// Prepares a restore of this source's entries.
    ///
    /// # Behavior
    /// - Fails before any entry is read if the target cannot be written.
    /// - The returned restorer makes nothing visible until
    ///   `finish(commit = true)`.
    async fn restore(&self, opts: &RestoreOptions) -> Result<Box<dyn Restorer>>;

    /// The source's change log, when it keeps one a follower can archive
    /// for point-in-time recovery (MongoDB's oplog). Default: none.
    ///
    /// # Behavior
    /// - Cheap: no I/O until the log is read.
    fn change_log(&self) -> Option<Box<dyn crate::slices::follow::ChangeLog>> {
        None
    }
}

/// Checks that a relative path from a bundle stays inside its root: not
/// absolute, no `..`, no empty segments. Used on every path read from a
/// bundle before touching the filesystem.
pub fn check_relative_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path.split('/').any(|s| s == ".." || s.is_empty() || s == ".");
    if bad {
        return Err(forged_entry(
            "unsafe path in bundle (absolute or with '..')",
            path,
        ));
    }
    Ok(())
}

/// The error of a bundle entry at `path` that breaks a restorer's rules
/// (`what`: an unexpected entry, a size that lies): an integrity failure
/// whose hint says not to restore it. Every plugin reports such entries
/// with it, so users see one message for one problem.
pub fn forged_entry(what: impl Into<String>, path: &str) -> Error {
    Error::new(ErrorKind::Integrity, what.into())
        .with_context("path", crate::printable(path))
        .with_hint("the bundle is malformed or forged; do not restore it")
}

/// Reads an entry's body whole: exactly `size` bytes of `reader`, or a
/// [`forged_entry`] error "`what` is shorter than its header says" (`what`:
/// `a stored Secret`) for the entry at `path`.
pub fn read_entry_body(reader: &mut dyn Read, size: u64, what: &str, path: &str) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(size as usize);
    reader
        .take(size)
        .read_to_end(&mut body)
        .map_err(|e| Error::io("cannot read the bundle", e))?;
    if body.len() as u64 != size {
        return Err(forged_entry(
            format!("{what} is shorter than its header says"),
            path,
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        check_relative_path("a/b c/ü").unwrap();
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a"] {
            assert_eq!(check_relative_path(bad).unwrap_err().kind(), ErrorKind::Integrity);
        }
    }

    #[test]
    fn claims_find_collisions_of_leaves_and_directories() {
        let p = std::path::Path::new;
        let claims = PathClaims::default();
        claims.claim_dir(p("/t"), "a").unwrap();
        claims.claim_dir(p("/t"), "b").unwrap();
        claims.claim(p("/t/log"), "a").unwrap();
        // The same source may claim again; another may not.
        claims.claim(p("/t/log"), "a").unwrap();
        let err = claims.claim(p("/t/log"), "b").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        assert!(err.to_string().contains("`a` and `b`"), "{err}");
        // A directory where another source puts a symlink, and inside it.
        assert!(claims.claim_dir(p("/t/log"), "b").is_err());
        let err = claims.claim(p("/t/log/x/y"), "b").unwrap_err();
        assert!(err.to_string().contains("/t/log/x/y inside /t/log"), "{err}");
        // A leaf where another source needs a directory, or has files below.
        claims.claim_dir(p("/t/dir"), "a").unwrap();
        claims.claim(p("/t/dir/f"), "a").unwrap();
        let err = claims.claim(p("/t/dir"), "b").unwrap_err();
        assert!(err.to_string().contains("/t/dir"), "{err}");
        claims.claim_dir(p("/t/d2"), "a").unwrap();
        assert!(claims.claim(p("/t/d2"), "b").is_err());
        // Siblings that share a prefix of their name do not collide.
        claims.claim(p("/t/dir.env"), "b").unwrap();
        claims.claim(p("/t/di"), "b").unwrap();
    }
}

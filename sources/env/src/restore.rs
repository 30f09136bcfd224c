//! [`EnvRestorer`]: merges the captured keys back into a `.env` file.
//!
//! Runs on a blocking thread (plain `std::fs`). The merged file is staged
//! as a `.coffer-tmp-*` temp file next to the destination (fsynced, with
//! the destination's mode, 0600 for a new file) and renamed into place by
//! `finish(true)`. Every line that is not one of the captured keys is kept
//! byte for byte. Reports and errors name keys, never values.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use coffer_core::{
    Area, Error, ErrorKind, PathClaims, RestoreAction, RestoreEntry, RestoreEntryKind, RestoreOptions,
    RestoreReport, Restorer, Result, check_relative_path,
};
use tempfile::TempPath;

use crate::dotenv::{self, EnvLine};

use coffer_core::fsutil::owned_temp_prefix;
/// A `.env` secret larger than this is not a `.env` file.
const MAX_SIZE: u64 = 16 << 20;

/// Restores the entry of one `env` source.
pub(crate) struct EnvRestorer {
    /// The source's name, for [`PathClaims`].
    name: String,
    /// The destinations of every source of this restore.
    claims: PathClaims,
    source_path: PathBuf,
    target: Option<PathBuf>,
    dry_run: bool,
    seen: bool,
    dest: Option<PathBuf>,
    actions: Vec<RestoreAction>,
    staged: Option<TempPath>,
    /// Directories created while staging, in creation order.
    created: Vec<PathBuf>,
}

impl EnvRestorer {
    /// Prepares a restore of the source `name`, the `.env` file at
    /// `source_path`.
    pub(crate) fn new(name: String, source_path: PathBuf, opts: &RestoreOptions) -> Result<Self> {
        let target = match &opts.target {
            Some(t) => Some(
                std::path::absolute(t)
                    .map_err(|e| Error::io(format!("cannot resolve {}", t.display()), e))?,
            ),
            None => None,
        };
        let dir = match &target {
            Some(t) => t.clone(),
            None => source_path.parent().unwrap_or(Path::new("/")).to_path_buf(),
        };
        coffer_core::fsutil::check_writable_dir(&dir)?;
        Ok(EnvRestorer {
            name,
            claims: opts.claims.clone(),
            source_path,
            target,
            dry_run: opts.dry_run,
            seen: false,
            dest: None,
            actions: Vec::new(),
            staged: None,
            created: Vec::new(),
        })
    }

    fn stage(&mut self, dest: &Path, content: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
        let dir = dest.parent().unwrap_or(Path::new("/"));
        let mut missing = Vec::new();
        let mut d = dir;
        while !d.exists() {
            missing.push(d.to_path_buf());
            d = d.parent().unwrap_or(Path::new("/"));
        }
        for d in missing.into_iter().rev() {
            fs::create_dir(&d)
                .map_err(|e| Error::io(format!("cannot create directory {}", d.display()), e))?;
            self.created.push(d);
        }
        let io = |e| Error::io(format!("cannot stage {}", dest.display()), e);
        // tempfile creates the file with mode 0600: the secret is never
        // readable by others, even for a moment.
        let mut temp = tempfile::Builder::new()
            .prefix(&owned_temp_prefix())
            .rand_bytes(12)
            .tempfile_in(dir)
            .map_err(io)?;
        let file = temp.as_file_mut();
        file.write_all(content).map_err(io)?;
        if let Some((uid, gid)) = owner {
            keep_owner(file, uid, gid, dest);
        }
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        self.staged = Some(temp.into_temp_path());
        Ok(())
    }

    /// Where the `.env` entry at `entry_path` goes, claimed, with the
    /// leftovers of a killed restore beside it removed.
    fn claim_dest(&mut self, entry_path: &str) -> Result<PathBuf> {
        let dest = match &self.target {
            Some(t) => t.join(entry_path),
            None => self.source_path.clone(),
        };
        if let Some(dir) = dest.parent() {
            self.claims.claim_dir(dir, &self.name)?;
            // A killed restore's staged merge holds secret values.
            for path in coffer_core::fsutil::sweep_leftover_temps(dir, self.dry_run)? {
                self.action("remove-leftover", path.display().to_string());
            }
        }
        self.claims.claim(&dest, &self.name)?;
        Ok(dest)
    }

    fn action(&mut self, action: &str, target: impl Into<String>) {
        self.actions.push(RestoreAction {
            action: action.to_string(),
            target: target.into(),
        });
    }

    fn abort(&mut self) {
        self.staged = None;
        for dir in std::mem::take(&mut self.created).into_iter().rev() {
            let _ = fs::remove_dir(&dir);
        }
    }

    fn report(&self) -> RestoreReport {
        let count = |a: &str| self.actions.iter().filter(|x| x.action == a).count();
        let summary = match &self.dest {
            None => "nothing to restore".to_string(),
            Some(dest) => format!(
                "{}: {} added, {} changed, {} kept",
                dest.display(),
                count("add-key"),
                count("change-key"),
                count("keep-key")
            ),
        };
        RestoreReport {
            summary,
            actions: self.actions.clone(),
            ..Default::default()
        }
    }
}

impl Restorer for EnvRestorer {
    /// The commit renames files staged (and fsynced) beside their
    /// destinations: it goes after the sources whose commit may fail.
    fn commit_only_renames(&self) -> bool {
        true
    }

    fn entry(&mut self, entry: RestoreEntry<'_>) -> Result<()> {
        check_relative_path(entry.path)?;
        let size = match entry.kind {
            RestoreEntryKind::File { size } if entry.area == Area::Secrets && !entry.path.contains('/') => {
                size
            }
            _ => {
                return Err(coffer_core::forged_entry(
                    "an `env` source holds one secrets/ file",
                    entry.path,
                ));
            }
        };
        if self.seen {
            return Err(coffer_core::forged_entry(
                "an `env` source holds exactly one entry",
                entry.path,
            ));
        }
        self.seen = true;
        let bundle = read_bundle(entry.reader, size, entry.path)?;

        let dest = self.claim_dest(entry.path)?;
        let (existing, mode, owner) = read_existing(&dest)?;
        let merged = merge(existing.as_deref().unwrap_or_default(), &bundle);
        let file_action = match (&existing, merged.changed) {
            (None, _) => "create",
            (Some(_), true) => "replace",
            (Some(_), false) => "unchanged",
        };
        self.action(file_action, dest.display().to_string());
        for (action, key) in &merged.keys {
            self.action(action, key.clone());
        }
        if merged.changed && !self.dry_run {
            self.stage(&dest, &merged.bytes, mode, owner)?;
        }
        self.dest = Some(dest);
        Ok(())
    }

    fn finish(mut self: Box<Self>, commit: bool) -> Result<RestoreReport> {
        if commit
            && !self.dry_run
            && let (Some(temp), Some(dest)) = (self.staged.take(), self.dest.clone())
        {
            temp.persist(&dest)
                .map_err(|e| Error::io(format!("cannot rename into place {}", dest.display()), e.error))?;
            let dir = dest.parent().unwrap_or(Path::new("/"));
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(format!("cannot fsync directory {}", dir.display()), e))?;
            self.created.clear();
        }
        self.abort();
        Ok(self.report())
    }
}

impl Drop for EnvRestorer {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Reads the `.env` entry at `path`, exactly `size` bytes: an error if it
/// is implausibly large or shorter.
fn read_bundle(reader: &mut dyn Read, size: u64, path: &str) -> Result<Vec<u8>> {
    if size > MAX_SIZE {
        return Err(coffer_core::forged_entry(
            "the .env entry is implausibly large",
            path,
        ));
    }
    coffer_core::read_entry_body(reader, size, "the .env entry", path)
}

/// An existing `.env` file's content (`None`: there is none), mode and
/// owner.
type Existing = (Option<Vec<u8>>, u32, Option<(u32, u32)>);

/// The `.env` file at `dest`, if any: its content, mode and owner (0600
/// and none for a new file); an error for a symlink or a non-file.
fn read_existing(dest: &Path) -> Result<Existing> {
    Ok(match lstat(dest)? {
        None => (None, 0o600, None),
        Some(m) if m.file_type().is_symlink() => {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "refusing to write a .env file through a symlink",
            )
            .with_context("path", dest.display())
            .with_hint("restore with --target into a directory, then move the file where the link points"));
        }
        Some(m) if !m.is_file() => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "the .env destination is not a regular file",
            )
            .with_context("path", dest.display())
            .with_hint("move it away, or restore with --target"));
        }
        Some(m) => {
            let mut text = Vec::new();
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(dest)
                .and_then(|mut f| f.read_to_end(&mut text))
                .map_err(|e| Error::io(format!("cannot read {}", dest.display()), e))?;
            (Some(text), m.mode() & 0o7777, Some((m.uid(), m.gid())))
        }
    })
}

/// The result of merging captured lines into an existing file.
pub(crate) struct Merge {
    /// The new file content.
    pub(crate) bytes: Vec<u8>,
    /// `(add-key | change-key | keep-key, key name)`, in bundle order.
    pub(crate) keys: Vec<(&'static str, String)>,
    /// Whether `bytes` differs from the existing content.
    pub(crate) changed: bool,
}

// By hand: `bytes` holds secrets.
impl fmt::Debug for Merge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Merge")
            .field("keys", &self.keys)
            .field("changed", &self.changed)
            .finish_non_exhaustive()
    }
}

/// Puts the assignments of `bundle` into `existing`: a key already there
/// has its line(s) replaced in place (or kept when the value is the same),
/// a new key is appended; every other line stays byte for byte. A replaced
/// line keeps what the existing one had before its key (indentation and
/// `export `, or their absence) and takes the rest from the bundle.
pub(crate) fn merge(existing: &[u8], bundle: &[u8]) -> Merge {
    let old = dotenv::parse(existing);
    let new = dotenv::parse(bundle);
    let mut order: Vec<&str> = Vec::new();
    let mut by_key: HashMap<&str, &EnvLine<'_>> = HashMap::new();
    for line in &new {
        if let Some(k) = line.key
            && by_key.insert(k, line).is_none()
        {
            order.push(k);
        }
    }
    // Per key: (present in the existing file, some occurrence differed).
    let mut state: HashMap<&str, (bool, bool)> = HashMap::new();
    let mut bytes = Vec::with_capacity(existing.len() + bundle.len());
    for line in &old {
        match line.key.and_then(|k| by_key.get(k).map(|n| (k, *n))) {
            Some((k, n)) => {
                let st = state.entry(k).or_default();
                st.0 = true;
                if line.same_value(n) {
                    bytes.extend_from_slice(line.raw);
                } else {
                    st.1 = true;
                    bytes.extend_from_slice(line.before_key());
                    push_line(&mut bytes, n.key_onward());
                }
            }
            None => bytes.extend_from_slice(line.raw),
        }
    }
    let mut keys = Vec::new();
    let mut changed = false;
    for k in order {
        let action = match state.get(k) {
            Some((true, false)) => "keep-key",
            Some((true, true)) => "change-key",
            _ => {
                if !bytes.is_empty() && !bytes.ends_with(b"\n") {
                    bytes.push(b'\n');
                }
                push_line(&mut bytes, by_key[k].raw);
                "add-key"
            }
        };
        changed |= action != "keep-key";
        keys.push((action, k.to_string()));
    }
    Merge { bytes, keys, changed }
}

fn push_line(out: &mut Vec<u8>, raw: &[u8]) {
    out.extend_from_slice(raw);
    if !raw.ends_with(b"\n") {
        out.push(b'\n');
    }
}

fn lstat(path: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot stat {}", path.display()), e)),
    }
}

/// Keeps a replaced file's owner (works when running as root).
fn keep_owner(file: &File, uid: u32, gid: u32, dest: &Path) {
    // SAFETY: geteuid has no preconditions.
    if uid == unsafe { libc::geteuid() } {
        return;
    }
    if let Err(e) = std::os::unix::fs::fchown(file, Some(uid), Some(gid)) {
        tracing::warn!(path = %dest.display(), error = %e, "cannot keep the owner of the replaced .env file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(existing: &str, bundle: &str) -> (String, Vec<(&'static str, String)>, bool) {
        let m = merge(existing.as_bytes(), bundle.as_bytes());
        (String::from_utf8(m.bytes).unwrap(), m.keys, m.changed)
    }

    #[test]
    fn merge_replaces_in_place_and_appends() {
        let existing = "# header\nA=old # note\r\n\nexport B=same\nOTHER='x'\nA=older\nTAIL=1";
        let (out, keys, changed) = run(existing, "A=new\nB=same\nC=\"c\"\n");
        assert_eq!(
            out,
            "# header\nA=new\n\nexport B=same\nOTHER='x'\nA=new\nTAIL=1\nC=\"c\"\n"
        );
        assert_eq!(
            keys,
            [
                ("change-key", "A".to_string()),
                ("keep-key", "B".to_string()),
                ("add-key", "C".to_string())
            ]
        );
        assert!(changed);
    }

    #[test]
    fn merge_of_same_content_changes_nothing() {
        let existing = "X=1\n# keep\nY='2'\n";
        let (out, keys, changed) = run(existing, "X=1\nY='2'\n");
        assert_eq!(out, existing);
        assert!(!changed);
        assert!(keys.iter().all(|(a, _)| *a == "keep-key"));
    }

    #[test]
    fn merge_keeps_the_existing_export_prefix() {
        let existing = "export A=old\nB=old\n  export\tC=old # c\n";
        let (out, keys, changed) = run(existing, "A=new\nexport B=new\nC='new'\n");
        assert_eq!(out, "export A=new\nB=new\n  export\tC='new'\n");
        assert!(keys.iter().all(|(a, _)| *a == "change-key"), "{keys:?}");
        assert!(changed);
        // An added key is written as the bundle has it.
        let (out, _, _) = run("X=1\n", "export A=new\n");
        assert_eq!(out, "X=1\nexport A=new\n");
    }

    #[test]
    fn merge_into_nothing() {
        let (out, _, changed) = run("", "A=1\n");
        assert_eq!((out.as_str(), changed), ("A=1\n", true));
    }

    #[test]
    fn merge_debug_hides_values() {
        let m = merge(b"", b"TOKEN=s3cr3t\n");
        let dbg = format!("{m:?}");
        assert!(dbg.contains("TOKEN") && !dbg.contains("s3cr3t"), "{dbg}");
    }
}

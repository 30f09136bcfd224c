//! [`FileRestorer`]: puts files, directories and symlinks back, all or
//! nothing.
//!
//! Runs on a blocking thread (plain `std::fs`). Files are staged as
//! `.coffer-tmp-*` temp files next to their destination (fsynced, with
//! their final mode and mtime) and renamed into place by `finish(true)`;
//! directories that must exist to hold a temp file are created while
//! staging and removed again on abort; other directories and symlinks are
//! created at commit; directory modes and mtimes are set last. A root that
//! does not exist yet (a fresh `--target`, a drill) is staged whole
//! instead: a hidden `.coffer-tmp-*` directory beside it holds every file
//! under its own name, and one rename makes it the root at commit (merged
//! into the root where another source of the same restore made it first);
//! an abort removes it, and a later restore beside it sweeps one a killed
//! restore left.
//!
//! Nothing is ever written outside the destination root: entry paths are
//! checked, and nothing is written *through* a symlink: not through a link
//! of the bundle (a later entry below it is refused), nor through an
//! existing one in the destination (every parent component is checked with
//! `symlink_metadata`, files are opened with `O_NOFOLLOW`), nor through one
//! another source of the same restore puts there ([`PathClaims`]). Symlinks
//! themselves are recreated as they were stored, whatever they point to,
//! as `tar x` does.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coffer_core::{
    Area, Error, ErrorKind, PathClaims, RestoreAction, RestoreEntry, RestoreEntryKind, RestoreOptions,
    RestoreReport, Restorer, Result, check_relative_path,
};
use tempfile::TempPath;

use coffer_core::fsutil::owned_temp_prefix;

/// How bundle paths map to the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// A directory source: `root/<entry path>`.
    Dir,
    /// A single-file source: one file entry, written as `root/<name>`
    /// (`name` = the entry's path when `None`).
    Single { name: Option<String> },
    /// The source's path does not exist and the bundle's origin is not
    /// known: decided from the first entry.
    Unknown,
}

/// What the bundle puts at a path (relative to the root).
#[derive(Debug)]
enum Planned {
    Dir {
        /// Mode and mtime from a Dir entry; `None` for a parent that only
        /// has to exist.
        meta: Option<DirMeta>,
        /// Whether it existed before the restore.
        existed: bool,
    },
    File,
    Symlink,
}

struct StagedFile {
    temp: TempPath,
    dest: PathBuf,
}

/// Mode, mtime and recorded owner of a directory entry.
type DirMeta = (u32, i64, Option<(u32, u32)>);

struct StagedLink {
    dest: PathBuf,
    target: String,
    mtime: i64,
    owner: Option<(u32, u32)>,
}

/// Restores the entries of one `file` source.
pub(crate) struct FileRestorer {
    /// The source's name, for [`PathClaims`].
    name: String,
    /// The destinations of every source of this restore.
    claims: PathClaims,
    /// The source's own path (used when `Layout::Unknown` is resolved).
    source_path: PathBuf,
    /// Everything is written under this directory.
    root: PathBuf,
    layout: Layout,
    dry_run: bool,
    root_existed: bool,
    /// Whether the root was claimed as a directory in [`PathClaims`].
    root_claimed: bool,
    /// Paths relative to `root`.
    plan: BTreeMap<String, Planned>,
    entries: usize,
    actions: Vec<RestoreAction>,
    staged: Vec<StagedFile>,
    links: Vec<StagedLink>,
    chmods: Vec<(PathBuf, u32)>,
    /// Directories created while staging, in creation order.
    created: Vec<PathBuf>,
    /// Directories already swept of a killed restore's temp files.
    swept: BTreeSet<PathBuf>,
    /// Parents (relative) [`FileRestorer::make_parents`] made sure of.
    parents_ready: std::collections::HashSet<String>,
    /// A root that did not exist is staged whole: files are written under
    /// their own names into this hidden `.coffer-tmp-*` directory beside
    /// it, which one rename makes the root at commit (instead of a temp
    /// file and a rename per file).
    stage_root: Option<PathBuf>,
}

impl FileRestorer {
    /// Prepares a restore of the source `name` at `source_path`; `is_dir`
    /// is the recorded shape of the source, if known.
    pub(crate) fn new(
        name: String,
        source_path: PathBuf,
        is_dir: Option<bool>,
        opts: &RestoreOptions,
    ) -> Result<Self> {
        let is_dir = is_dir.or_else(|| fs::metadata(&source_path).ok().map(|m| m.is_dir()));
        let parent = source_path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let (root, layout) = match (&opts.target, is_dir) {
            (Some(t), Some(true)) => (t.clone(), Layout::Dir),
            (Some(t), Some(false)) => (t.clone(), Layout::Single { name: None }),
            // With a target both shapes map `path` to `target/path`.
            (Some(t), None) => (t.clone(), Layout::Dir),
            (None, Some(true)) => (source_path.clone(), Layout::Dir),
            (None, Some(false)) => {
                let name = source_path.file_name().map(|n| n.to_string_lossy().into_owned());
                (parent, Layout::Single { name })
            }
            (None, None) => (source_path.clone(), Layout::Unknown),
        };
        let root = std::path::absolute(&root)
            .map_err(|e| Error::io(format!("cannot resolve {}", root.display()), e))?;
        let root_existed = coffer_core::fsutil::check_writable_dir(&root)?;
        Ok(FileRestorer {
            name,
            claims: opts.claims.clone(),
            source_path,
            root,
            layout,
            dry_run: opts.dry_run,
            root_existed,
            root_claimed: false,
            plan: BTreeMap::new(),
            entries: 0,
            actions: Vec::new(),
            staged: Vec::new(),
            links: Vec::new(),
            chmods: Vec::new(),
            created: Vec::new(),
            swept: BTreeSet::new(),
            parents_ready: std::collections::HashSet::new(),
            stage_root: None,
        })
    }

    fn action(&mut self, action: &str, target: &Path) {
        self.actions.push(RestoreAction {
            action: action.to_string(),
            target: target.display().to_string(),
        });
    }

    /// Decides an unknown layout from the first entry: a lone file named
    /// like the source's path is a single-file source.
    fn resolve_layout(&mut self, entry: &RestoreEntry<'_>) -> Result<()> {
        if self.layout != Layout::Unknown {
            return Ok(());
        }
        let name = self
            .source_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let single =
            matches!(entry.kind, RestoreEntryKind::File { .. }) && name.as_deref() == Some(entry.path);
        if single {
            self.root = self.source_path.parent().unwrap_or(Path::new("/")).to_path_buf();
            self.root_existed = coffer_core::fsutil::check_writable_dir(&self.root)?;
            self.layout = Layout::Single { name };
        } else {
            self.layout = Layout::Dir;
        }
        Ok(())
    }

    /// The entry's path relative to the root.
    fn dest_rel(&self, entry: &RestoreEntry<'_>) -> Result<String> {
        match &self.layout {
            Layout::Dir | Layout::Unknown => Ok(entry.path.to_string()),
            Layout::Single { name } => {
                if self.entries > 1
                    || entry.path.contains('/')
                    || !matches!(entry.kind, RestoreEntryKind::File { .. })
                {
                    return Err(coffer_core::forged_entry(
                        "a single-file source holds exactly one file entry",
                        entry.path,
                    ));
                }
                Ok(name.clone().unwrap_or_else(|| entry.path.to_string()))
            }
        }
    }

    /// Checks every parent of `rel` below the root: it must be (or become)
    /// a real directory, never a symlink. Records missing ones.
    fn plan_parents(&mut self, rel: &str) -> Result<()> {
        if !self.root_claimed {
            self.claims.claim_dir(&self.root, &self.name)?;
            self.root_claimed = true;
            if self.root_existed {
                let root = self.root.clone();
                self.sweep(&root)?;
            }
        }
        if !self.root_existed && !self.plan.contains_key("") {
            self.plan.insert(
                String::new(),
                Planned::Dir {
                    meta: None,
                    existed: false,
                },
            );
            let root = self.root.clone();
            self.action("mkdir", &root);
        }
        let mut missing = !self.root_existed;
        let parts: Vec<&str> = rel.split('/').collect();
        for i in 1..parts.len() {
            let prefix = parts[..i].join("/");
            match self.plan.get(&prefix) {
                Some(Planned::Dir { existed, .. }) => {
                    missing = !existed;
                    continue;
                }
                Some(_) => {
                    return Err(coffer_core::forged_entry(
                        "a bundle path runs through a file or symlink of the same bundle",
                        rel,
                    ));
                }
                None => {}
            }
            let abs = self.root.join(&prefix);
            self.claims.claim_dir(&abs, &self.name)?;
            let existed = if missing { false } else { existing_dir(&abs)? };
            if existed {
                self.sweep(&abs)?;
            } else {
                self.action("mkdir", &abs);
                missing = true;
            }
            self.plan.insert(prefix, Planned::Dir { meta: None, existed });
        }
        Ok(())
    }

    /// Removes the staged files a killed restore left in `dir` (a
    /// `.env` merge among them may hold secrets); a dry run lists them.
    fn sweep(&mut self, dir: &Path) -> Result<()> {
        if !self.swept.insert(dir.to_path_buf()) {
            return Ok(());
        }
        for path in coffer_core::fsutil::sweep_leftover_temps(dir, self.dry_run)? {
            self.action("remove-leftover", &path);
        }
        Ok(())
    }

    /// Creates (while staging) the directories needed to hold a temp file
    /// for `rel`, remembering them for abort.
    fn make_parents(&mut self, rel: &str) -> Result<()> {
        // The directory a file goes into was seen to exist (or made) for
        // an earlier file: no stat per file.
        let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
        if self.parents_ready.contains(parent) {
            return Ok(());
        }
        self.start_stage_root()?;
        if let Some(stage) = self.stage_root.clone() {
            // Everything below a staged root is this restore's own: no
            // `created` to remove one by one (an abort removes the root).
            let mut dir = stage;
            for part in parent.split('/').filter(|p| !p.is_empty()) {
                dir.push(part);
                if !existing_dir(&dir)? {
                    mkdir(&dir)?;
                }
            }
            self.parents_ready.insert(parent.to_string());
            return Ok(());
        }
        if !self.root.exists() {
            let mut missing = Vec::new();
            let mut dir = self.root.as_path();
            while !dir.exists() {
                missing.push(dir.to_path_buf());
                dir = dir.parent().unwrap_or(Path::new("/"));
            }
            for dir in missing.into_iter().rev() {
                mkdir(&dir)?;
                self.created.push(dir);
            }
        }
        let parts: Vec<&str> = rel.split('/').collect();
        for i in 1..parts.len() {
            let prefix = parts[..i].join("/");
            let abs = self.root.join(&prefix);
            if !existing_dir(&abs)? {
                mkdir(&abs)?;
                self.created.push(abs);
            }
        }
        self.parents_ready.insert(parent.to_string());
        Ok(())
    }

    /// Makes the staged root when the root did not exist and its parent
    /// does (else files are staged one by one, as beside an existing root).
    /// Leftover staged roots of killed restores beside it are swept first.
    fn start_stage_root(&mut self) -> Result<()> {
        if self.stage_root.is_some() || self.root_existed || self.dry_run || self.layout != Layout::Dir {
            return Ok(());
        }
        let Some(parent) = self.root.parent().filter(|p| p.is_dir()).map(Path::to_path_buf) else {
            return Ok(());
        };
        self.sweep(&parent)?;
        let dir = tempfile::Builder::new()
            .prefix(&owned_temp_prefix())
            .rand_bytes(12)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(&parent)
            .map_err(|e| Error::io(format!("cannot stage {}", self.root.display()), e))?;
        self.stage_root = Some(dir.keep());
        Ok(())
    }

    /// Where `abs` (under the root) is written while staging.
    fn staging_path(&self, abs: &Path) -> PathBuf {
        match (&self.stage_root, abs.strip_prefix(&self.root)) {
            (Some(stage), Ok(rel)) => stage.join(rel),
            _ => abs.to_path_buf(),
        }
    }

    fn claim(&mut self, rel: &str, what: Planned) -> Result<()> {
        match self.plan.get_mut(rel) {
            None => {
                self.plan.insert(rel.to_string(), what);
                Ok(())
            }
            Some(Planned::Dir {
                meta: meta @ None, ..
            }) if matches!(what, Planned::Dir { .. }) => {
                if let Planned::Dir { meta: m, .. } = what {
                    *meta = m;
                }
                Ok(())
            }
            Some(_) => Err(coffer_core::forged_entry(
                "the bundle holds the same path twice",
                rel,
            )),
        }
    }

    fn restore_dir(&mut self, rel: &str, mode: u32, mtime: i64, owner: Option<(u32, u32)>) -> Result<()> {
        let abs = self.root.join(rel);
        self.claims.claim_dir(&abs, &self.name)?;
        let known = match self.plan.get(rel) {
            Some(Planned::Dir { meta: None, existed }) => Some(*existed),
            _ => None,
        };
        let existed = match known {
            Some(existed) => existed,
            None => {
                self.plan_exists(rel)
                    && existing_dir(&abs).map_err(|e| e.prefix("cannot restore directory"))?
            }
        };
        self.claim(
            rel,
            Planned::Dir {
                meta: Some((mode, mtime, owner)),
                existed,
            },
        )?;
        if existed {
            // The tar lists every directory before its files, so this is
            // where a directory the restore writes into is first seen: the
            // temp files a killed restore left in it go now.
            self.sweep(&abs)?;
            let current = fs::symlink_metadata(&abs)
                .map_err(|e| Error::io(format!("cannot stat {}", abs.display()), e))?;
            let action = if current.mode() & 0o7777 == mode {
                "unchanged"
            } else {
                "chmod"
            };
            self.action(action, &abs);
        } else if known.is_none() {
            self.action("mkdir", &abs);
        }
        Ok(())
    }

    /// Whether the parent of `rel` existed before the restore (so `rel`
    /// itself may exist).
    fn plan_exists(&self, rel: &str) -> bool {
        match rel.rsplit_once('/') {
            None => self.root_existed,
            Some((parent, _)) => matches!(self.plan.get(parent), Some(Planned::Dir { existed: true, .. })),
        }
    }

    fn restore_file(&mut self, rel: &str, entry: RestoreEntry<'_>, size: u64) -> Result<()> {
        self.claim(rel, Planned::File)?;
        let dest = self.root.join(rel);
        self.claims.claim(&dest, &self.name)?;
        let existing = if self.plan_exists(rel) {
            lstat(&dest)?
        } else {
            None
        };
        let mut compare = None;
        let mut existing_owner = None;
        if let Some(meta) = &existing {
            compare = file_to_compare(meta, &dest, size)?;
            existing_owner = Some((meta.uid(), meta.gid()));
        }
        if !self.dry_run {
            self.make_parents(rel)?;
        }
        if self.stage_root.is_some() {
            return self.stage_under_root(&dest, entry, size);
        }
        let mut temp = if self.dry_run {
            None
        } else {
            Some(self.temp_file_beside(&dest)?)
        };
        let same = copy_compare(
            entry.reader,
            size,
            compare,
            temp.as_mut().map(|t| t.as_file_mut()),
            &dest,
        )?;
        if same {
            let mode = existing.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(entry.mode);
            if mode != entry.mode {
                self.chmods.push((dest.clone(), entry.mode));
                self.action("chmod", &dest);
            } else {
                self.action("unchanged", &dest);
            }
            return Ok(());
        }
        self.action(if existing.is_some() { "replace" } else { "create" }, &dest);
        if let Some(temp) = temp {
            let owner = recorded_owner(entry.owner).or(existing_owner);
            finish_staged(temp.as_file(), entry.mode, entry.mtime, owner, &dest)?;
            // Made durable all at once at commit (one syncfs), not here.
            self.staged.push(StagedFile {
                temp: temp.into_temp_path(),
                dest,
            });
        }
        Ok(())
    }

    /// Writes a file entry into the staged root under its own name.
    fn stage_under_root(&mut self, dest: &Path, entry: RestoreEntry<'_>, size: u64) -> Result<()> {
        // Under a staged root: written under its own name, made visible
        // by the root's rename at commit.
        let path = self.staging_path(dest);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot stage {}", dest.display()), e))?;
        copy_compare(entry.reader, size, None, Some(&mut file), dest)?;
        self.action("create", dest);
        let owner = recorded_owner(entry.owner);
        finish_staged(&file, entry.mode, entry.mtime, owner, dest)
    }

    /// Creates the temp file a file entry for `dest` is staged in, beside
    /// it.
    fn temp_file_beside(&self, dest: &Path) -> Result<tempfile::NamedTempFile> {
        let dir = dest.parent().unwrap_or(&self.root);
        tempfile::Builder::new()
            .prefix(&owned_temp_prefix())
            .rand_bytes(12)
            .tempfile_in(dir)
            .map_err(|e| Error::io(format!("cannot create a temp file in {}", dir.display()), e))
    }

    fn restore_symlink(
        &mut self,
        rel: &str,
        target: &str,
        mtime: i64,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        self.claim(rel, Planned::Symlink)?;
        let dest = self.root.join(rel);
        self.claims.claim(&dest, &self.name)?;
        let existing = if self.plan_exists(rel) {
            lstat(&dest)?
        } else {
            None
        };
        let action = match &existing {
            None => "symlink",
            Some(meta) if meta.is_dir() => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    "a directory is in the way of a symlink from the bundle",
                )
                .with_context("path", dest.display())
                .with_hint("move the directory away, or restore with --target into an empty directory"));
            }
            Some(meta) if meta.file_type().is_symlink() => {
                let current = fs::read_link(&dest)
                    .map_err(|e| Error::io(format!("cannot read {}", dest.display()), e))?;
                if current.as_os_str().as_bytes() == target.as_bytes() {
                    "unchanged"
                } else {
                    "replace"
                }
            }
            Some(_) => "replace",
        };
        self.action(action, &dest);
        if action != "unchanged" {
            self.links.push(StagedLink {
                dest,
                target: target.to_string(),
                mtime,
                owner,
            });
        }
        Ok(())
    }

    /// Makes everything staged visible.
    fn commit(&mut self) -> Result<()> {
        let mut synced_dirs = BTreeSet::new();
        self.commit_stage_root(&mut synced_dirs)?;
        if !self.root.exists() && !self.plan.is_empty() {
            fs::create_dir_all(&self.root)
                .map_err(|e| Error::io(format!("cannot create {}", self.root.display()), e))?;
            if let Some(p) = self.root.parent() {
                synced_dirs.insert(p.to_path_buf());
            }
        }
        let dirs = self.planned_dirs();
        let mut verified = BTreeSet::new();
        for (rel, _) in &dirs {
            let abs = self.root.join(rel);
            self.verify_parents(&abs, &mut verified)?;
            if !existing_dir(&abs)? {
                mkdir(&abs)?;
                synced_dirs.insert(parent_of(&abs));
            }
        }
        self.persist_staged(&mut verified, &mut synced_dirs)?;
        for link in std::mem::take(&mut self.links) {
            self.verify_parents(&link.dest, &mut verified)?;
            place_symlink(&link)?;
            synced_dirs.insert(parent_of(&link.dest));
        }
        self.apply_chmods(&mut verified)?;
        self.set_dir_metas(&dirs)?;
        // The renames, new directories and modes durable: one syncfs per
        // filesystem instead of an fsync per directory.
        if self.root.is_dir() {
            synced_dirs.insert(self.root.clone());
        }
        coffer_core::fsutil::sync_filesystems(synced_dirs.iter().map(PathBuf::as_path))?;
        self.created.clear();
        Ok(())
    }

    /// Makes the staged root (if any) the root, or merges it into a root
    /// that appeared meanwhile.
    fn commit_stage_root(&mut self, synced_dirs: &mut BTreeSet<PathBuf>) -> Result<()> {
        let Some(stage) = self.stage_root.take() else {
            return Ok(());
        };
        // Its files durable, then one rename makes it the root; where
        // the root appeared meanwhile (another source of this restore
        // shares it), its entries are moved in, a directory merged
        // into one of the same name ([`PathClaims`] kept the sources
        // from claiming the same paths).
        coffer_core::fsutil::sync_filesystems([stage.as_path()])?;
        let moved = if lstat(&self.root)?.is_none() {
            fs::rename(&stage, &self.root)
                .map_err(|e| Error::io(format!("cannot rename into place {}", self.root.display()), e))
        } else {
            merge_into(&stage, &self.root, synced_dirs)
        };
        let _ = fs::remove_dir_all(&stage);
        moved.map_err(|e| e.prefix("restore partly applied"))?;
        synced_dirs.insert(parent_of(&self.root));
        Ok(())
    }

    /// The directories of the plan (but the root) with their recorded
    /// metadata, parents first.
    fn planned_dirs(&self) -> Vec<(String, Option<DirMeta>)> {
        // `BTreeMap` order puts every directory before its contents.
        self.plan
            .iter()
            .filter_map(|(rel, p)| match p {
                Planned::Dir { meta, .. } if !rel.is_empty() => Some((rel.clone(), *meta)),
                _ => None,
            })
            .collect()
    }

    /// Renames every staged file into place, once all of them are durable.
    fn persist_staged(
        &mut self,
        verified: &mut BTreeSet<PathBuf>,
        synced_dirs: &mut BTreeSet<PathBuf>,
    ) -> Result<()> {
        // Every staged file durable before any rename makes one visible: a
        // crash never leaves a renamed file without its data.
        let staged_dirs: BTreeSet<PathBuf> = self.staged.iter().map(|s| parent_of(&s.dest)).collect();
        coffer_core::fsutil::sync_filesystems(staged_dirs.iter().map(PathBuf::as_path))?;
        for staged in std::mem::take(&mut self.staged) {
            self.verify_parents(&staged.dest, verified)?;
            staged.temp.persist(&staged.dest).map_err(|e| {
                Error::io(
                    format!(
                        "cannot rename into place {} (restore partly applied)",
                        staged.dest.display()
                    ),
                    e.error,
                )
            })?;
            synced_dirs.insert(parent_of(&staged.dest));
        }
        Ok(())
    }

    /// Gives the files whose content was already right their new mode.
    fn apply_chmods(&mut self, verified: &mut BTreeSet<PathBuf>) -> Result<()> {
        for (path, mode) in std::mem::take(&mut self.chmods) {
            self.verify_parents(&path, verified)?;
            let file =
                open_nofollow(&path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(format!("cannot set the mode of {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Sets the recorded owner, mode and mtime of the planned directories.
    fn set_dir_metas(&self, dirs: &[(String, Option<DirMeta>)]) -> Result<()> {
        // Last and deepest first: a restrictive mode must not lock us out of
        // a subdirectory, and writing into a directory changes its mtime.
        for (rel, meta) in dirs.iter().rev() {
            if let Some((mode, mtime, owner)) = meta {
                let abs = self.root.join(rel);
                let dir = open_dir_nofollow(&abs)?;
                let io = |e| Error::io(format!("cannot set the mode and mtime of {}", abs.display()), e);
                // The owner first: chown clears set-id bits the mode sets.
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::fchown(&dir, Some(*uid), Some(*gid)).map_err(io)?;
                }
                dir.set_permissions(fs::Permissions::from_mode(*mode))
                    .map_err(io)?;
                dir.set_modified(system_time(*mtime)).map_err(io)?;
            }
        }
        Ok(())
    }

    /// Re-checks at commit that no parent below the root was replaced by a
    /// symlink since staging.
    fn verify_parents(&self, abs: &Path, verified: &mut BTreeSet<PathBuf>) -> Result<()> {
        let Ok(rel) = abs.strip_prefix(&self.root) else {
            return Ok(());
        };
        let mut dir = self.root.clone();
        let comps: Vec<_> = rel.components().collect();
        for comp in comps.iter().take(comps.len().saturating_sub(1)) {
            dir.push(comp);
            if verified.contains(&dir) {
                continue;
            }
            if !existing_dir(&dir)? {
                return Err(
                    Error::new(ErrorKind::Unexpected, "a directory vanished during the restore")
                        .with_context("path", dir.display()),
                );
            }
            verified.insert(dir.clone());
        }
        Ok(())
    }

    /// Removes everything staged.
    fn abort(&mut self) {
        if let Some(stage) = self.stage_root.take() {
            let _ = fs::remove_dir_all(&stage);
        }
        self.staged.clear();
        self.links.clear();
        for dir in std::mem::take(&mut self.created).into_iter().rev() {
            let _ = fs::remove_dir(&dir);
        }
    }

    fn report(&self) -> RestoreReport {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for a in &self.actions {
            match counts.iter_mut().find(|(k, _)| *k == a.action) {
                Some((_, n)) => *n += 1,
                None => counts.push((&a.action, 1)),
            }
        }
        let summary = if counts.is_empty() {
            "nothing to restore".to_string()
        } else {
            counts
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        RestoreReport {
            summary,
            actions: self.actions.clone(),
            ..Default::default()
        }
    }
}

impl Restorer for FileRestorer {
    /// The commit renames files staged (and fsynced) beside their
    /// destinations: it goes after the sources whose commit may fail.
    fn commit_only_renames(&self) -> bool {
        true
    }

    fn entry(&mut self, entry: RestoreEntry<'_>) -> Result<()> {
        check_relative_path(entry.path)?;
        if entry.area != Area::Files {
            return Err(coffer_core::forged_entry(
                "a `file` source holds only files/ entries",
                entry.path,
            ));
        }
        self.entries += 1;
        self.resolve_layout(&entry)?;
        let rel = self.dest_rel(&entry)?;
        self.plan_parents(&rel)?;
        let mode = entry.mode & 0o7777;
        match entry.kind.clone() {
            RestoreEntryKind::Dir => self.restore_dir(&rel, mode, entry.mtime, recorded_owner(entry.owner)),
            RestoreEntryKind::File { size } => self.restore_file(&rel, RestoreEntry { mode, ..entry }, size),
            RestoreEntryKind::Symlink { target } => {
                self.restore_symlink(&rel, &target, entry.mtime, recorded_owner(entry.owner))
            }
        }
    }

    fn finish(mut self: Box<Self>, commit: bool) -> Result<RestoreReport> {
        if commit && !self.dry_run {
            self.commit()?;
        } else {
            self.abort();
        }
        Ok(self.report())
    }
}

impl Drop for FileRestorer {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Moves what `stage` holds into the existing directory `dest`: an entry
/// `dest` lacks by one rename, a directory `dest` has too by merging into
/// it (never through a symlink), recording the directories changed.
fn merge_into(stage: &Path, dest: &Path, changed: &mut BTreeSet<PathBuf>) -> Result<()> {
    if !existing_dir(dest)? {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            "a file is in the way of a restored directory",
        )
        .with_context("path", dest.display()));
    }
    let entries =
        fs::read_dir(stage).map_err(|e| Error::io(format!("cannot list {}", stage.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("cannot list {}", stage.display()), e))?;
        let to = dest.join(entry.file_name());
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        match lstat(&to)? {
            None => {
                fs::rename(entry.path(), &to)
                    .map_err(|e| Error::io(format!("cannot rename into place {}", to.display()), e))?;
                changed.insert(dest.to_path_buf());
            }
            Some(m) if is_dir && m.is_dir() => merge_into(&entry.path(), &to, changed)?,
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    "a restored path appeared while the restore ran",
                )
                .with_context("path", to.display())
                .with_hint("run the restore again"));
            }
        }
    }
    Ok(())
}

/// Gives a staged file its owner (the recorded one when restoring as root,
/// else the replaced file's, as the caller chose), mode and mtime.
fn finish_staged(file: &File, mode: u32, mtime: i64, owner: Option<(u32, u32)>, dest: &Path) -> Result<()> {
    if let Some((uid, gid)) = owner {
        keep_owner(file, uid, gid, dest);
    }
    let io = |e| Error::io(format!("cannot stage {}", dest.display()), e);
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io)?;
    file.set_modified(system_time(mtime)).map_err(io)
}

/// Copies exactly `size` bytes from `reader` into `out` while comparing
/// them with `existing`; returns whether they equal `existing`'s content.
fn copy_compare(
    reader: &mut dyn Read,
    size: u64,
    mut existing: Option<File>,
    mut out: Option<&mut File>,
    dest: &Path,
) -> Result<bool> {
    let mut same = existing.is_some();
    let mut buf = vec![0u8; 64 * 1024];
    let mut other = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(Error::new(
                    ErrorKind::Integrity,
                    "file in bundle is shorter than its header says",
                )
                .with_context("path", dest.display())
                .with_hint("the bundle is corrupt; try another snapshot"));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read the bundle", e)),
        };
        left -= n as u64;
        if let Some(out) = out.as_deref_mut() {
            out.write_all(&buf[..n])
                .map_err(|e| Error::io(format!("cannot stage {}", dest.display()), e))?;
        }
        if same && let Some(file) = existing.as_mut() {
            let ok = file.read_exact(&mut other[..n]).is_ok() && other[..n] == buf[..n];
            if !ok {
                same = false;
                existing = None;
            }
        }
    }
    Ok(same)
}

/// The existing file at `dest` to compare the entry's content with: an
/// error if a directory is there, `None` unless a file of `size` bytes is.
fn file_to_compare(meta: &fs::Metadata, dest: &Path, size: u64) -> Result<Option<File>> {
    if meta.is_dir() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            "a directory is in the way of a file from the bundle",
        )
        .with_context("path", dest.display())
        .with_hint("move the directory away, or restore with --target into an empty directory"));
    }
    if meta.is_file() && meta.len() == size {
        let file =
            open_nofollow(dest).map_err(|e| Error::io(format!("cannot read {}", dest.display()), e))?;
        return Ok(Some(file));
    }
    Ok(None)
}

/// `symlink_metadata`, with `None` for a missing path.
fn lstat(path: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot stat {}", path.display()), e)),
    }
}

/// Whether `path` is an existing real directory; an error if something
/// else (a symlink above all) is there.
fn existing_dir(path: &Path) -> Result<bool> {
    match lstat(path)? {
        None => Ok(false),
        Some(m) if m.is_dir() => Ok(true),
        Some(m) if m.file_type().is_symlink() => {
            Err(Error::new(ErrorKind::PermissionDenied, "refusing to restore through a symlink in the destination")
                .with_context("path", path.display())
                .with_hint("coffer never follows symlinks while restoring; remove the link or restore with --target into an empty directory"))
        }
        Some(_) => Err(Error::new(ErrorKind::AlreadyExists, "a file is in the way of a directory from the bundle")
            .with_context("path", path.display())
            .with_hint("move the file away, or restore with --target into an empty directory")),
    }
}

fn mkdir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .create(path)
        .map_err(|e| Error::io(format!("cannot create directory {}", path.display()), e))
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn open_dir_nofollow(path: &Path) -> Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open directory {}", path.display()), e))
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().unwrap_or(Path::new("/")).to_path_buf()
}

/// Creates the link under a temp name and renames it over `dest`, so an
/// existing file or link there is replaced atomically.
fn place_symlink(link: &StagedLink) -> Result<()> {
    let dir = parent_of(&link.dest);
    let io = |e| Error::io(format!("cannot create symlink {}", link.dest.display()), e);
    let temp = tempfile::Builder::new()
        .prefix(&owned_temp_prefix())
        .rand_bytes(12)
        .make_in(&dir, |p| std::os::unix::fs::symlink(&link.target, p))
        .map_err(io)?;
    if let Some((uid, gid)) = link.owner {
        std::os::unix::fs::lchown(temp.path(), Some(uid), Some(gid)).map_err(io)?;
    }
    set_link_mtime(temp.path(), link.mtime);
    temp.into_temp_path()
        .persist(&link.dest)
        .map_err(|e| io(e.error))?;
    Ok(())
}

/// Best effort: a link's mtime matters to nobody but `ls -l`.
fn set_link_mtime(path: &Path, mtime: i64) {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: `c` is NUL-terminated and `times` holds two timespecs, as
    // utimensat requires.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
}

/// The owner a bundle recorded, when this restore runs as root (only
/// root can give files away); `None` otherwise.
fn recorded_owner(owner: Option<(u32, u32)>) -> Option<(u32, u32)> {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: geteuid has no preconditions.
    let root = *ROOT.get_or_init(|| unsafe { libc::geteuid() } == 0);
    owner.filter(|_| root)
}

/// Gives a staged file the owner of the file it replaces, or the recorded
/// one (works when running as root).
fn keep_owner(file: &File, uid: u32, gid: u32, dest: &Path) {
    // SAFETY: geteuid and getegid have no preconditions.
    let me = unsafe { (libc::geteuid(), libc::getegid()) };
    if (uid, gid) == me {
        return;
    }
    if let Err(e) = std::os::unix::fs::fchown(file, Some(uid), Some(gid)) {
        tracing::warn!(path = %dest.display(), error = %e, "cannot keep the owner of a replaced file");
    }
}

fn system_time(mtime: i64) -> SystemTime {
    if mtime >= 0 {
        UNIX_EPOCH + Duration::from_secs(mtime as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(mtime.unsigned_abs())
    }
}

//! [`CommandRestorer`]: gives a command source's entry back, either to the
//! configured restore command's standard input or, with `--target`, as a
//! file in that directory.
//!
//! Runs on a blocking thread. The entry is held while staging (in memory
//! up to 8 MiB, beyond that encrypted in an unlinked temp file, as at
//! backup); the restore command runs only at commit, after the whole
//! bundle verified and every other source staged. A file under `--target`
//! is staged as a `.coffer-tmp-*` file (mode 0600) and renamed into place
//! at commit.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use coffer_core::fsutil::{StagedFile, remove_created, stage_file};
use coffer_core::process::kill_group;
use coffer_core::spill::{Spill, SpillBody};
use coffer_core::{
    Area, CancelFlag, Error, ErrorKind, PathClaims, RestoreAction, RestoreEntry, RestoreEntryKind,
    RestoreOptions, RestoreReport, Restorer, Result, check_relative_path, human_size,
};

use crate::error::short;
use crate::run::{End, Program, StderrTail};

const SPILL_LIMIT: usize = 8 << 20;

/// Where the entry goes.
enum Destination {
    /// To the restore command's stdin.
    Command(Program),
    /// To `dir/<file>`.
    Dir(PathBuf),
}

/// Restores the entry of one `command` source.
pub(crate) struct CommandRestorer {
    name: String,
    file: String,
    dest: Destination,
    claims: PathClaims,
    cancel: CancelFlag,
    dry_run: bool,
    /// The entry, held for the restore command.
    body: Option<SpillBody>,
    /// The entry, staged next to its destination file.
    staged: Option<StagedFile>,
    /// Whether the destination file existed.
    existed: bool,
    /// Directories created while staging, removed again on abort.
    created: Vec<PathBuf>,
    size: Option<u64>,
}

impl CommandRestorer {
    pub(crate) fn new(
        name: String,
        file: String,
        restore: Option<Program>,
        opts: &RestoreOptions,
    ) -> Result<Self> {
        let dest = match (&opts.target, restore) {
            (Some(dir), _) => {
                let dir = std::path::absolute(dir)
                    .map_err(|e| Error::io(format!("cannot resolve {}", dir.display()), e))?;
                coffer_core::fsutil::check_writable_dir(&dir)?;
                Destination::Dir(dir)
            }
            (None, Some(program)) => Destination::Command(program),
            (None, None) => {
                return Err(Error::new(
                    ErrorKind::ConfigInvalid,
                    format!("command source `{name}` has no `restore` command"),
                )
                .with_hint(
                    "add `restore = [...]` (a command reading the entry on stdin) to its [source] table, \
                     or restore with --target DIR to get the output as a file",
                ));
            }
        };
        Ok(CommandRestorer {
            name,
            file,
            dest,
            claims: opts.claims.clone(),
            cancel: opts.cancel.clone(),
            dry_run: opts.dry_run,
            body: None,
            staged: None,
            existed: false,
            created: Vec::new(),
            size: None,
        })
    }

    fn hold(&mut self, reader: &mut dyn Read, size: u64) -> Result<()> {
        let io = |e| Error::io("cannot hold the entry for the restore command", e);
        let mut spill = Spill::new(SPILL_LIMIT);
        let mut buf = vec![0u8; 256 << 10];
        let mut left = size;
        while left > 0 {
            self.cancel.check()?;
            let want = buf.len().min(left as usize);
            let n = reader.read(&mut buf[..want]).map_err(io)?;
            if n == 0 {
                return Err(short(&self.file));
            }
            spill.write(&buf[..n]).map_err(io)?;
            left -= n as u64;
        }
        self.body = Some(spill.finish().map_err(io)?);
        Ok(())
    }

    fn stage(&mut self, dir: PathBuf, reader: &mut dyn Read, size: u64, secret: bool) -> Result<()> {
        let dest = dir.join(&self.file);
        self.claims.claim(&dest, &self.name)?;
        if self.dry_run {
            io::copy(&mut reader.take(size), &mut io::sink())
                .map_err(|e| Error::io("cannot read the bundle", e))?;
            self.existed = dest.is_file();
            return Ok(());
        }
        let mode = if secret { 0o600 } else { 0o644 };
        let staged = stage_file(&dest, reader, size, mode, &mut self.created)?;
        self.existed = staged.replaces();
        self.staged = Some(staged);
        Ok(())
    }

    /// Runs the restore command with the held entry on its stdin.
    fn run(&self, program: &Program, body: SpillBody) -> Result<()> {
        let started = Instant::now();
        let mut child = program
            .command(Stdio::piped())
            .spawn()
            .map_err(|e| program.start_error(&self.name, e))?;
        let pid = child.id();
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut reader = body.reader;
        let feeder = std::thread::spawn(move || -> io::Result<u64> {
            let n = io::copy(&mut reader, &mut stdin)?;
            stdin.flush()?;
            Ok(n)
        });
        // Its stdout is logged like its stderr (it is not the data).
        let (name, prog) = (self.name.clone(), program.clone());
        let logger = std::thread::spawn(move || {
            let mut tail = StderrTail::default();
            for line in BufReader::new(stdout)
                .split(b'\n')
                .chain(BufReader::new(stderr).split(b'\n'))
            {
                match line {
                    Ok(line) => tail.line(&prog, &name, &line),
                    Err(_) => break,
                }
            }
            tail
        });
        let end = loop {
            match child.try_wait() {
                Ok(Some(status)) => break End::Exited(status),
                Ok(None) if started.elapsed() >= program.timeout || self.cancel.is_cancelled() => {
                    kill_group(pid);
                    let _ = child.wait();
                    break End::TimedOut;
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
                Err(e) => {
                    kill_group(pid);
                    return Err(Error::io(format!("cannot wait for `{}`", program.name()), e));
                }
            }
        };
        let fed = feeder
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("panicked")));
        let tail = logger.join().unwrap_or_default();
        match end {
            End::Exited(status) if status.success() => {}
            _ if self.cancel.is_cancelled() => self.cancel.check()?,
            end => return Err(program.failure(&self.name, "restore command", end, &tail)),
        }
        // A command that exits 0 without reading all of its input did not
        // restore all of it.
        fed.map_err(|e| {
            Error::io(format!("`{}` did not read the whole entry", program.name()), e)
                .with_context("source", &self.name)
                .with_hint("check that the restore command reads its standard input to the end")
        })?;
        Ok(())
    }
}

impl Restorer for CommandRestorer {
    fn entry(&mut self, entry: RestoreEntry<'_>) -> Result<()> {
        check_relative_path(entry.path)?;
        let size = match entry.kind {
            RestoreEntryKind::File { size } if !entry.path.contains('/') && entry.area != Area::Mongo => size,
            _ => {
                return Err(coffer_core::forged_entry(
                    "a `command` source holds one file",
                    entry.path,
                ));
            }
        };
        if self.size.is_some() {
            return Err(coffer_core::forged_entry(
                "a `command` source holds exactly one entry",
                entry.path,
            ));
        }
        self.file = entry.path.to_string();
        match &self.dest {
            Destination::Dir(dir) => {
                let dir = dir.clone();
                self.stage(dir, entry.reader, size, entry.area == Area::Secrets)?
            }
            Destination::Command(_) => self.hold(entry.reader, size)?,
        }
        self.size = Some(size);
        Ok(())
    }

    fn finish(mut self: Box<Self>, commit: bool) -> Result<RestoreReport> {
        let Some(size) = self.size else {
            return Ok(RestoreReport {
                summary: "nothing to restore".into(),
                actions: Vec::new(),
                ..Default::default()
            });
        };
        let (action, target) = match &self.dest {
            Destination::Command(p) => (
                "run".to_string(),
                format!("`{}` with {} on stdin", p.name(), human_size(size)),
            ),
            Destination::Dir(dir) => {
                let dest = dir.join(&self.file);
                let action = if self.existed { "replace" } else { "create" };
                (action.to_string(), dest.display().to_string())
            }
        };
        if !commit || self.dry_run {
            self.staged = None;
            remove_created(&mut self.created);
        } else {
            match &self.dest {
                Destination::Command(p) => {
                    let body = self.body.take().expect("held entry");
                    self.run(p, body)?;
                }
                Destination::Dir(_) => self.staged.take().expect("staged entry").commit()?,
            }
        }
        Ok(RestoreReport {
            summary: format!("{action} {target}"),
            actions: vec![RestoreAction { action, target }],
            ..Default::default()
        })
    }
}

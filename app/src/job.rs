//! Job resolution: what a backup run captures, where it writes and how it
//! encrypts, from `[job.NAME]` (or one-off flags) and the flags that
//! override it. `backup` and `import-runbook` both resolve their run here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_core::{
    Result, Source, config_error, format::Compression, keys::Encryption, keys::Passphrase,
    keys::RecipientKey, keys::SigningKey,
};

use crate::config::Config;

/// A job resolved from `coffer.toml` and flags.
pub struct JobPlan {
    /// Job name.
    pub job: String,
    /// Whether it comes from `[job.NAME]` (hooks, checks, source places).
    pub configured: bool,
    /// The configured sources (a one-off or imported run brings its own).
    pub sources: Vec<Arc<dyn Source>>,
    /// Sinks by name, directory or URL.
    pub sinks: Vec<String>,
    pub recipients: Vec<String>,
    pub compression: Option<String>,
    pub tags: Vec<String>,
    pub passphrase_file: Option<PathBuf>,
    pub signing_key: Option<PathBuf>,
}

/// The flags that override a job: a non-empty list replaces the job's,
/// tags add to them.
#[derive(Default)]
pub struct JobFlags<'a> {
    pub sinks: &'a [String],
    pub recipients: &'a [String],
    pub compression: Option<&'a str>,
    pub tags: &'a [String],
    pub passphrase: bool,
    pub passphrase_file: Option<&'a Path>,
    pub signing_key: Option<&'a Path>,
}

impl JobPlan {
    /// `[job.NAME]` of `cfg` (`name`, or its only job), with the
    /// top-level recipients and compression where the job sets none.
    pub fn configured(cfg: &Config, name: Option<&str>) -> Result<JobPlan> {
        let (name, job) = cfg.job(name)?;
        Ok(JobPlan {
            job: name,
            configured: true,
            sources: job.sources.iter().map(|s| cfg.sources[s].clone()).collect(),
            sinks: job.sinks.clone(),
            recipients: job.recipients.clone().unwrap_or_else(|| cfg.recipients.clone()),
            compression: job.compression.clone().or(cfg.compression.clone()),
            tags: job.tags.clone(),
            passphrase_file: job.passphrase_file.clone(),
            signing_key: job.signing_key.clone(),
        })
    }

    /// A job that exists only for this run, named `name`: sources, sinks
    /// and keys all come from flags (and `defaults`' top-level settings).
    pub fn ad_hoc(name: String, defaults: Option<&Config>) -> JobPlan {
        JobPlan {
            job: name,
            configured: false,
            sources: Vec::new(),
            sinks: Vec::new(),
            recipients: defaults.map(|c| c.recipients.clone()).unwrap_or_default(),
            compression: defaults.and_then(|c| c.compression.clone()),
            tags: Vec::new(),
            passphrase_file: None,
            signing_key: None,
        }
    }

    /// Applies the sink, recipient, compression and tag flags.
    pub fn with_flags(mut self, flags: &JobFlags<'_>) -> JobPlan {
        if !flags.sinks.is_empty() {
            self.sinks = flags.sinks.to_vec();
        }
        if !flags.recipients.is_empty() {
            self.recipients = flags.recipients.to_vec();
        }
        if let Some(c) = flags.compression {
            self.compression = Some(c.to_string());
        }
        self.tags.extend(flags.tags.iter().cloned());
        self
    }

    /// Resolves encryption (asking `ask` for a passphrase if one is
    /// needed: it gets the passphrase file, if any), compression and the
    /// signing key.
    pub fn resolve(
        self,
        flags: &JobFlags<'_>,
        config: Option<&Config>,
        ask: &dyn Fn(Option<&Path>) -> Result<Passphrase>,
    ) -> Result<ResolvedJob> {
        let encryption = self.encryption(flags, ask)?;
        let compression = match &self.compression {
            Some(c) => Compression::parse(c)?,
            None => Compression::default(),
        };
        let signing_key = signing_key(flags.signing_key, self.signing_key.as_deref(), config)?;
        Ok(ResolvedJob {
            plan: self,
            encryption,
            compression,
            signing_key,
        })
    }

    /// A passphrase (flag, flag file or the job's file) or the recipients;
    /// a passphrase must be the only recipient.
    fn encryption(
        &self,
        flags: &JobFlags<'_>,
        ask: &dyn Fn(Option<&Path>) -> Result<Passphrase>,
    ) -> Result<Encryption> {
        if flags.passphrase || flags.passphrase_file.is_some() || self.passphrase_file.is_some() {
            if !flags.recipients.is_empty() {
                return Err(
                    config_error("a passphrase must be the only recipient (an age rule)")
                        .with_hint("drop --recipient, or drop --passphrase"),
                );
            }
            let file = flags.passphrase_file.or(self.passphrase_file.as_deref());
            return Ok(Encryption::Passphrase {
                passphrase: ask(file)?,
                log_n: coffer_core::keys::DEFAULT_SCRYPT_LOG_N,
            });
        }
        let keys = self
            .recipients
            .iter()
            .map(|r| RecipientKey::parse(r))
            .collect::<Result<Vec<_>>>()?;
        let enc = Encryption::Recipients(keys);
        enc.validate()?;
        Ok(enc)
    }
}

/// A [`JobPlan`] with its keys and codec resolved.
pub struct ResolvedJob {
    pub plan: JobPlan,
    pub encryption: Encryption,
    pub compression: Compression,
    pub signing_key: Option<Arc<SigningKey>>,
}

/// zstd worker threads: one per core.
pub fn threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(2)
}

/// The signing key of a backup: `flag` (--signing-key), else the job's,
/// else the config's top-level one.
pub fn signing_key(
    flag: Option<&Path>,
    job: Option<&Path>,
    config: Option<&Config>,
) -> Result<Option<Arc<SigningKey>>> {
    let path: Option<PathBuf> = flag
        .map(Path::to_path_buf)
        .or_else(|| job.map(Path::to_path_buf))
        .or_else(|| config.and_then(|c| c.signing_key.clone()));
    match path {
        Some(p) => Ok(Some(Arc::new(SigningKey::from_file(&p)?))),
        None => Ok(None),
    }
}

//! Job resolution: what a backup run captures, where it writes and how it
//! encrypts, from `[job.NAME]` (or one-off flags) and the flags that
//! override it. `backup` and `import-runbook` both resolve their run here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_core::{Compression, Encryption, RecipientKey, Result, SigningKey, Source, config_error};

use crate::config::Config;

/// A job resolved from `coffer.toml` and flags.
pub(crate) struct JobPlan {
    /// Job name.
    pub(crate) job: String,
    /// Whether it comes from `[job.NAME]` (hooks, checks, source places).
    pub(crate) configured: bool,
    /// The configured sources (a one-off or imported run brings its own).
    pub(crate) sources: Vec<Arc<dyn Source>>,
    /// Sinks by name, directory or URL.
    pub(crate) sinks: Vec<String>,
    pub(crate) recipients: Vec<String>,
    pub(crate) compression: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) passphrase_file: Option<PathBuf>,
    pub(crate) signing_key: Option<PathBuf>,
}

/// The flags that override a job: a non-empty list replaces the job's,
/// tags add to them.
#[derive(Default)]
pub(crate) struct JobFlags<'a> {
    pub(crate) sinks: &'a [String],
    pub(crate) recipients: &'a [String],
    pub(crate) compression: Option<&'a str>,
    pub(crate) tags: &'a [String],
    pub(crate) passphrase: bool,
    pub(crate) passphrase_file: Option<&'a Path>,
    pub(crate) signing_key: Option<&'a Path>,
}

impl JobPlan {
    /// `[job.NAME]` of `cfg` (`name`, or its only job), with the
    /// top-level recipients and compression where the job sets none.
    pub(crate) fn configured(cfg: &Config, name: Option<&str>) -> Result<JobPlan> {
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
    pub(crate) fn ad_hoc(name: String, defaults: Option<&Config>) -> JobPlan {
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
    pub(crate) fn with_flags(mut self, flags: &JobFlags<'_>) -> JobPlan {
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

    /// Resolves encryption (asking for a passphrase if needed),
    /// compression and the signing key.
    pub(crate) fn resolve(self, flags: &JobFlags<'_>, config: Option<&Config>) -> Result<ResolvedJob> {
        let encryption = self.encryption(flags)?;
        let compression = match &self.compression {
            Some(c) => Compression::parse(c)?,
            None => Compression::default(),
        };
        let signing_key = super::signing_key(flags.signing_key, self.signing_key.as_deref(), config)?;
        Ok(ResolvedJob {
            plan: self,
            encryption,
            compression,
            signing_key,
        })
    }

    /// A passphrase (flag, flag file or the job's file) or the recipients;
    /// a passphrase must be the only recipient.
    fn encryption(&self, flags: &JobFlags<'_>) -> Result<Encryption> {
        if flags.passphrase || flags.passphrase_file.is_some() || self.passphrase_file.is_some() {
            if !flags.recipients.is_empty() {
                return Err(
                    config_error("a passphrase must be the only recipient (an age rule)")
                        .with_hint("drop --recipient, or drop --passphrase"),
                );
            }
            let file = flags.passphrase_file.or(self.passphrase_file.as_deref());
            return Ok(Encryption::Passphrase {
                passphrase: super::passphrase(file, true)?,
                log_n: coffer_core::DEFAULT_SCRYPT_LOG_N,
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
pub(crate) struct ResolvedJob {
    pub(crate) plan: JobPlan,
    pub(crate) encryption: Encryption,
    pub(crate) compression: Compression,
    pub(crate) signing_key: Option<Arc<SigningKey>>,
}

/// zstd worker threads: one per core.
pub(crate) fn threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(2)
}

//! The three source kinds of this crate behind one factory: `mongo` (a
//! live server), `mongo-env` (its URI in an environment variable, one-off
//! only) and `mongodump` (an existing dump). All restore through
//! [`MongoRestorer`](crate::restore::MongoRestorer) and share its options
//! and deep check.

use std::path::Path;
use std::sync::Arc;

use coffer_core::{EntryCheck, RestoreOptionSpec, Result, Source, SourceFactory, config_error, toml};
use serde_json::Value;

use crate::config::MongoSourceConfig;
use crate::dump::MongodumpSource;
use crate::source::{MongoSource, clean_name, source_from_origin};
use crate::{DUMP_KIND, ENV_KIND, KIND};

/// One of this crate's source kinds; see the module doc.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MongoKind {
    /// `kind = "mongo"`, `--source mongo:URI`.
    Mongo,
    /// `--source mongo-env:VAR`.
    MongoEnv,
    /// `kind = "mongodump"`, `--source mongodump:PATH`.
    Mongodump,
}

impl SourceFactory for MongoKind {
    fn kind(&self) -> &'static str {
        match self {
            MongoKind::Mongo => KIND,
            MongoKind::MongoEnv => ENV_KIND,
            MongoKind::Mongodump => DUMP_KIND,
        }
    }

    fn from_config(&self, name: &str, table: toml::Table, base_dir: &Path) -> Result<Arc<dyn Source>> {
        match self {
            MongoKind::Mongo => {
                let config = MongoSourceConfig::from_table(table)?;
                Ok(Arc::new(MongoSource::with_config(name, &config, base_dir)?))
            }
            MongoKind::MongoEnv => Err(config_error(format!(
                "source `{name}`: kind `{ENV_KIND}` is for one-off sources only"
            ))
            .with_hint("in a config file write kind = \"mongo\" with uri-env = \"VAR\"")),
            MongoKind::Mongodump => Ok(Arc::new(MongodumpSource::from_table(name, table, base_dir)?)),
        }
    }

    fn spec_name(&self, spec: &str) -> String {
        match self {
            MongoKind::Mongo => crate::uri::database(spec)
                .map(|db| clean_name(&db))
                .unwrap_or_else(|| KIND.to_string()),
            MongoKind::MongoEnv => ENV_KIND.to_string(),
            MongoKind::Mongodump => MongodumpSource::spec_name(spec),
        }
    }

    fn from_spec(&self, name: &str, spec: &str) -> Result<Arc<dyn Source>> {
        match self {
            MongoKind::Mongo => Ok(Arc::new(MongoSource::from_uri(name, spec)?)),
            MongoKind::MongoEnv => {
                let config = MongoSourceConfig {
                    uri_env: Some(spec.to_string()),
                    ..MongoSourceConfig::default()
                };
                Ok(Arc::new(MongoSource::with_config(name, &config, Path::new("."))?))
            }
            MongoKind::Mongodump => Ok(Arc::new(MongodumpSource::new(name, spec))),
        }
    }

    /// Scratch copies of the databases, `<db><suffix>`, dropped after.
    fn drill_scratch(
        &self,
        run: &coffer_core::checks::ScratchRun<'_>,
    ) -> Result<Option<Box<dyn coffer_core::checks::DrillScratch>>> {
        Ok(Some(Box::new(crate::drill::MongoScratch::new(run))))
    }

    fn from_origin(&self, name: &str, origin: &Value) -> Result<Arc<dyn Source>> {
        match self {
            MongoKind::Mongo | MongoKind::MongoEnv => source_from_origin(name, origin),
            MongoKind::Mongodump => Ok(Arc::new(MongodumpSource::from_origin(name, origin))),
        }
    }

    /// `mongo-env` is a one-off way to name a `mongo` source: its
    /// snapshots restore as `mongo`, so it declares no options of its own.
    fn restore_options(&self) -> Vec<RestoreOptionSpec> {
        match self {
            MongoKind::Mongo | MongoKind::Mongodump => crate::restore_options(),
            MongoKind::MongoEnv => Vec::new(),
        }
    }

    fn entry_check(&self) -> Option<Box<dyn EntryCheck>> {
        Some(Box::new(crate::DumpCheck::new()))
    }

    /// The server is named by `--mongo-uri` (a target directory means
    /// nothing to a database restore).
    fn place_given(&self, opts: &coffer_core::RestoreOptions) -> bool {
        opts.text(crate::URI_OPTION).is_some()
    }
}

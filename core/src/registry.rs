//! Maps TOML `kind`s, one-off `--source KIND:SPEC` prefixes and sink URL
//! schemes to plugin factories, so a plugin crate registers itself with one
//! call and the CLI has no closed `match` over plugins.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result, config_error};
use crate::sink::Sink;
use crate::source::Source;

/// Builds sources of one kind.
#[allow(clippy::wrong_self_convention)] // `from_*` build from their argument, as factories do
pub trait SourceFactory: Send + Sync {
    /// The TOML `kind` and one-off prefix, e.g. `file` for `--source file:PATH`.
    fn kind(&self) -> &'static str;

    /// Builds a source from its `[source.NAME]` table (without `kind`).
    /// Relative paths are resolved against `base_dir` (the config file's
    /// directory). Unknown keys are an error.
    fn from_config(&self, name: &str, table: toml::Table, base_dir: &Path) -> Result<Arc<dyn Source>>;

    /// The name a one-off source gets from its spec (the text after
    /// `KIND:`), before the CLI makes names unique.
    fn spec_name(&self, spec: &str) -> String {
        let _ = spec;
        self.kind().to_string()
    }

    /// Builds a source from a one-off spec (the text after `KIND:`).
    fn from_spec(&self, name: &str, spec: &str) -> Result<Arc<dyn Source>>;

    /// Rebuilds a source from the origin recorded in a bundle, for a
    /// restore without a config file.
    fn from_origin(&self, name: &str, origin: &serde_json::Value) -> Result<Arc<dyn Source>>;

    /// The restore options this kind's restorer reads (typed, with help),
    /// offered on the command line as `--opt KIND.NAME=VALUE`. None by
    /// default.
    fn restore_options(&self) -> Vec<crate::RestoreOptionSpec> {
        Vec::new()
    }

    /// A deep check of this kind's entries for `verify --deep` (and
    /// drills), if it has one beyond the hashes core checks.
    fn entry_check(&self) -> Option<Box<dyn crate::EntryCheck>> {
        None
    }

    /// Whether `opts` name where a restore of this kind writes (for files,
    /// `--target`), so a source rebuilt from a bundle's origin does not go
    /// where only the bundle says. Default: a target directory is given.
    fn place_given(&self, opts: &crate::RestoreOptions) -> bool {
        opts.target.is_some()
    }

    /// Where a drill restores this kind's sources instead of their own
    /// places, and how it removes them after (see
    /// [`crate::checks::DrillScratch`]). `None` (the default): the drill's
    /// temporary directory, given as the restore's target with a folder per
    /// source, is scratch enough (files, `.env` secrets, command outputs).
    /// An error stops the drill before it writes anything.
    fn drill_scratch(
        &self,
        run: &crate::checks::ScratchRun<'_>,
    ) -> Result<Option<Box<dyn crate::checks::DrillScratch>>> {
        let _ = run;
        Ok(None)
    }
}

/// Builds sinks of one kind.
#[allow(clippy::wrong_self_convention)]
pub trait SinkFactory: Send + Sync {
    /// The TOML `kind`, e.g. `local`.
    fn kind(&self) -> &'static str;

    /// URL schemes this factory serves, e.g. `["file"]` for `file:///p`.
    fn schemes(&self) -> &'static [&'static str];

    /// Builds a sink from a URL (or a plain path, for the local sink).
    fn from_url(&self, url: &str) -> Result<Arc<dyn Sink>>;

    /// Builds a sink from its `[sink.NAME]` table (without `kind`).
    fn from_config(&self, name: &str, table: toml::Table, base_dir: &Path) -> Result<Arc<dyn Sink>>;

    /// As [`SinkFactory::from_config`], for a sink that also has coffer's
    /// retention policy (`[sink.NAME] retention = {…}`, already taken out
    /// of `table`): storage that enforces retention itself (S3 Object Lock)
    /// may derive its settings from it. The default ignores it.
    fn from_config_with_retention(
        &self,
        name: &str,
        table: toml::Table,
        base_dir: &Path,
        retention: Option<&toml::Value>,
    ) -> Result<Arc<dyn Sink>> {
        let _ = retention;
        self.from_config(name, table, base_dir)
    }
}

/// Parses a plugin's settings table into `T` with serde (give `T`
/// `#[serde(deny_unknown_fields)]` so a misspelt key is an error). `what`
/// names the settings in the message (`` `file` source ``), `hint` lists
/// the keys they take.
pub fn parse_table<T: serde::de::DeserializeOwned>(table: toml::Table, what: &str, hint: &str) -> Result<T> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            config_error(format!("invalid {what} settings: {}", e.message())).with_hint(hint)
        })
}

/// Reads the origin a source of `kind` recorded in a bundle (see
/// [`SourceFactory::from_origin`]) into `T`. A malformed origin is an
/// integrity failure of the bundle, named after the source.
pub fn parse_origin<T: serde::de::DeserializeOwned>(
    kind: &str,
    name: &str,
    origin: &serde_json::Value,
) -> Result<T> {
    serde_json::from_value(origin.clone()).map_err(|_| malformed_origin(kind, name))
}

/// The error of a source origin that does not hold what its kind records
/// (see [`parse_origin`]).
pub fn malformed_origin(kind: &str, name: &str) -> Error {
    Error::new(
        ErrorKind::Integrity,
        format!("the bundle's record of where source `{name}` (kind `{kind}`) came from is malformed"),
    )
    .with_context("source", name)
    .with_hint("restore with a config file declaring the source, or with --target")
}

/// Where a `[sink.NAME]` (or `[source.NAME]`) table stands: its name (for errors), the
/// config file's directory (relative paths resolve against it) and the
/// sink's coffer retention policy (`retention = {…}`, already taken out of
/// the table), for storage that enforces retention itself.
#[derive(Debug, Clone, Copy)]
pub struct TableContext<'a> {
    /// The sink's name in `[sink.NAME]`.
    pub name: &'a str,
    /// The config file's directory.
    pub base_dir: &'a Path,
    /// The sink's `retention` table, if it has one.
    pub retention: Option<&'a toml::Value>,
}

impl<'a> TableContext<'a> {
    /// A table of sink `name` in a config file in `base_dir`, without a
    /// retention policy.
    pub fn new(name: &'a str, base_dir: &'a Path) -> Self {
        TableContext {
            name,
            base_dir,
            retention: None,
        }
    }
}

/// A sink kind told by its settings: how a URL or a `[sink.NAME]` table
/// becomes settings, and how settings open a sink. This is all most sink
/// plugins write; [`settings_factory`] makes the [`SinkFactory`] the
/// registry keeps from it. (Implement [`SinkFactory`] by hand only for a
/// kind whose sinks are not built from one settings value.)
pub trait SinkSettings: Sized + Send + Sync + 'static {
    /// The TOML `kind`, e.g. `s3`.
    const KIND: &'static str;

    /// The URL schemes it serves, e.g. `["s3"]` for `s3://bucket/prefix`;
    /// none for a kind declared only in `coffer.toml`.
    const SCHEMES: &'static [&'static str] = &[];

    /// Settings from a URL of one of [`SinkSettings::SCHEMES`]. By default
    /// a kind has no URL form and says so.
    fn from_url(url: &str) -> Result<Self> {
        Err(config_error(format!(
            "a `{}` sink cannot be given as a URL (`{url}`)",
            Self::KIND
        ))
        .with_hint(format!(
            "declare it in coffer.toml: [sink.NAME] kind = \"{}\"",
            Self::KIND
        )))
    }

    /// Settings from a `[sink.NAME]` table (without `kind` and
    /// `retention`). Unknown keys are an error.
    fn from_table(table: toml::Table, at: &TableContext<'_>) -> Result<Self>;

    /// Opens a sink with these settings (without touching the storage:
    /// connections are made on first use).
    fn open(self) -> Result<Arc<dyn Sink>>;
}

/// The [`SinkFactory`] of a [`SinkSettings`] kind.
pub fn settings_factory<S: SinkSettings>() -> Arc<dyn SinkFactory> {
    Arc::new(SettingsFactory::<S>(std::marker::PhantomData))
}

/// See [`settings_factory`].
struct SettingsFactory<S>(std::marker::PhantomData<fn() -> S>);

impl<S: SinkSettings> SinkFactory for SettingsFactory<S> {
    fn kind(&self) -> &'static str {
        S::KIND
    }

    fn schemes(&self) -> &'static [&'static str] {
        S::SCHEMES
    }

    fn from_url(&self, url: &str) -> Result<Arc<dyn Sink>> {
        S::from_url(url)?.open()
    }

    fn from_config(&self, name: &str, table: toml::Table, base_dir: &Path) -> Result<Arc<dyn Sink>> {
        self.from_config_with_retention(name, table, base_dir, None)
    }

    fn from_config_with_retention(
        &self,
        name: &str,
        table: toml::Table,
        base_dir: &Path,
        retention: Option<&toml::Value>,
    ) -> Result<Arc<dyn Sink>> {
        let at = TableContext {
            name,
            base_dir,
            retention,
        };
        S::from_table(table, &at)?.open()
    }
}

/// A source kind told by its settings, as [`SinkSettings`] is for sinks:
/// how a `[source.NAME]` table, a one-off `KIND:SPEC` and the origin a
/// bundle recorded become settings, and how settings open a source.
/// [`source_settings_factory`] makes the [`SourceFactory`] the registry
/// keeps from it; the factory's other answers (restore options, a drill's
/// scratch place, …) are associated functions with the defaults of
/// [`SourceFactory`].
pub trait SourceSettings: Sized + Send + Sync + 'static {
    /// The TOML `kind` and one-off prefix, e.g. `kv`.
    const KIND: &'static str;

    /// Settings from a `[source.NAME]` table (without `kind`); relative
    /// paths resolve against `at.base_dir`. Unknown keys are an error.
    fn from_table(table: toml::Table, at: &TableContext<'_>) -> Result<Self>;

    /// Settings from a one-off spec (the text after `KIND:`). By default a
    /// kind has no one-off form and says so.
    fn from_spec(spec: &str) -> Result<Self> {
        Err(config_error(format!(
            "a `{}` source cannot be given on the command line (`{}:{spec}`)",
            Self::KIND,
            Self::KIND
        ))
        .with_hint(format!(
            "declare it in coffer.toml: [source.NAME] kind = \"{}\"",
            Self::KIND
        )))
    }

    /// The name a one-off source gets from its spec (default: the kind).
    fn spec_name(spec: &str) -> String {
        let _ = spec;
        Self::KIND.to_string()
    }

    /// Settings from the origin the source recorded in a bundle (its
    /// `SourceInfo::origin`), for a restore without a config file; read it
    /// with [`parse_origin`].
    fn from_origin(name: &str, origin: &serde_json::Value) -> Result<Self>;

    /// Opens the source `name` with these settings (without touching the
    /// data: [`Source::check`] does).
    fn open(self, name: &str) -> Result<Arc<dyn Source>>;

    /// See [`SourceFactory::restore_options`].
    fn restore_options() -> Vec<crate::RestoreOptionSpec> {
        Vec::new()
    }

    /// See [`SourceFactory::place_given`].
    fn place_given(opts: &crate::RestoreOptions) -> bool {
        opts.target.is_some()
    }

    /// See [`SourceFactory::drill_scratch`].
    fn drill_scratch(
        run: &crate::checks::ScratchRun<'_>,
    ) -> Result<Option<Box<dyn crate::checks::DrillScratch>>> {
        let _ = run;
        Ok(None)
    }
}

/// The [`SourceFactory`] of a [`SourceSettings`] kind.
pub fn source_settings_factory<S: SourceSettings>() -> Arc<dyn SourceFactory> {
    Arc::new(SourceSettingsFactory::<S>(std::marker::PhantomData))
}

/// See [`source_settings_factory`].
struct SourceSettingsFactory<S>(std::marker::PhantomData<fn() -> S>);

impl<S: SourceSettings> SourceFactory for SourceSettingsFactory<S> {
    fn kind(&self) -> &'static str {
        S::KIND
    }

    fn from_config(&self, name: &str, table: toml::Table, base_dir: &Path) -> Result<Arc<dyn Source>> {
        S::from_table(table, &TableContext::new(name, base_dir))?.open(name)
    }

    fn spec_name(&self, spec: &str) -> String {
        S::spec_name(spec)
    }

    fn from_spec(&self, name: &str, spec: &str) -> Result<Arc<dyn Source>> {
        S::from_spec(spec)?.open(name)
    }

    fn from_origin(&self, name: &str, origin: &serde_json::Value) -> Result<Arc<dyn Source>> {
        S::from_origin(name, origin)?.open(name)
    }

    fn restore_options(&self) -> Vec<crate::RestoreOptionSpec> {
        S::restore_options()
    }

    fn place_given(&self, opts: &crate::RestoreOptions) -> bool {
        S::place_given(opts)
    }

    fn drill_scratch(
        &self,
        run: &crate::checks::ScratchRun<'_>,
    ) -> Result<Option<Box<dyn crate::checks::DrillScratch>>> {
        S::drill_scratch(run)
    }
}

/// The set of known plugins.
#[derive(Default, Clone)]
pub struct Registry {
    sources: BTreeMap<&'static str, Arc<dyn SourceFactory>>,
    sinks: BTreeMap<&'static str, Arc<dyn SinkFactory>>,
    schemes: BTreeMap<&'static str, Arc<dyn SinkFactory>>,
    path_sink: Option<Arc<dyn SinkFactory>>,
    checks: BTreeMap<&'static str, Arc<dyn crate::checks::CheckFactory>>,
    /// Kinds and schemes registered twice without `replace_*`.
    conflicts: Vec<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .field("sinks", &self.sinks.keys().collect::<Vec<_>>())
            .field("checks", &self.checks.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source kind. Registering a kind that exists already is a
    /// conflict ([`Registry::check`] reports it) unless it is asked for
    /// with [`Registry::replace_source`]: a plugin never replaces a
    /// built-in kind by accident.
    pub fn register_source(&mut self, factory: Arc<dyn SourceFactory>) {
        if self.sources.contains_key(factory.kind()) {
            self.conflicts.push(format!("source kind `{}`", factory.kind()));
        }
        self.sources.insert(factory.kind(), factory);
    }

    /// Adds a source kind, replacing one registered before under that kind.
    pub fn replace_source(&mut self, factory: Arc<dyn SourceFactory>) {
        self.sources.insert(factory.kind(), factory);
    }

    /// Adds a sink kind and its URL schemes; a kind or scheme that exists
    /// already is a conflict unless [`Registry::replace_sink`] is used.
    pub fn register_sink(&mut self, factory: Arc<dyn SinkFactory>) {
        if self.sinks.contains_key(factory.kind()) {
            self.conflicts.push(format!("sink kind `{}`", factory.kind()));
        }
        for scheme in factory.schemes() {
            if self.schemes.contains_key(scheme) {
                self.conflicts.push(format!("URL scheme `{scheme}:`"));
            }
        }
        self.insert_sink(factory);
    }

    /// Adds a sink kind and its schemes, replacing those registered before.
    pub fn replace_sink(&mut self, factory: Arc<dyn SinkFactory>) {
        self.insert_sink(factory);
    }

    fn insert_sink(&mut self, factory: Arc<dyn SinkFactory>) {
        for scheme in factory.schemes() {
            self.schemes.insert(scheme, factory.clone());
        }
        self.sinks.insert(factory.kind(), factory);
    }

    /// Fails when a kind or scheme was registered twice without
    /// `replace_*`, naming each.
    pub fn check(&self) -> Result<()> {
        if self.conflicts.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::ConfigInvalid,
            format!("plugins registered twice: {}", self.conflicts.join(", ")),
        )
        .with_hint("a plugin that means to replace a built-in kind registers it with Registry::replace_source or replace_sink"))
    }

    /// Adds a check kind (`[[job.NAME.checks]] kind = "…"`); one that
    /// exists already is a conflict, as for sources and sinks.
    pub fn register_check(&mut self, factory: Arc<dyn crate::checks::CheckFactory>) {
        if self.checks.contains_key(factory.kind()) {
            self.conflicts.push(format!("check kind `{}`", factory.kind()));
        }
        self.checks.insert(factory.kind(), factory);
    }

    /// Known check kinds.
    pub fn check_kinds(&self) -> Vec<&'static str> {
        self.checks.keys().copied().collect()
    }

    /// Builds a check from its `[[job.NAME.checks]]` table, by its `kind`.
    pub fn check_from_config(
        &self,
        kind: &str,
        table: toml::Table,
        base_dir: &Path,
    ) -> Result<Arc<dyn crate::checks::Check>> {
        let factory = self.checks.get(kind).ok_or_else(|| {
            config_error(format!("unknown check kind `{kind}`")).with_hint(format!(
                "known kinds: {} (a kind may need a cargo feature of the coffer binary)",
                self.check_kinds().join(", ")
            ))
        })?;
        factory.from_config(table, base_dir)
    }

    /// Makes `factory` the one that handles plain paths given as sinks.
    pub fn set_path_sink(&mut self, factory: Arc<dyn SinkFactory>) {
        self.path_sink = Some(factory);
    }

    /// Known source kinds.
    pub fn source_kinds(&self) -> Vec<&'static str> {
        self.sources.keys().copied().collect()
    }

    /// Known sink kinds.
    pub fn sink_kinds(&self) -> Vec<&'static str> {
        self.sinks.keys().copied().collect()
    }

    /// Every restore option the registered sources declare, as
    /// `(kind, spec)`, by kind.
    pub fn restore_options(&self) -> Vec<(&'static str, crate::RestoreOptionSpec)> {
        self.sources
            .iter()
            .flat_map(|(kind, f)| f.restore_options().into_iter().map(move |o| (*kind, o)))
            .collect()
    }

    /// Applies one `--opt KIND.NAME=VALUE` (or `KIND.NAME` for a flag) to
    /// `opts`, checking that a registered source declares it and that the
    /// value fits its type.
    pub fn apply_restore_option(&self, opt: &str, opts: &mut crate::RestoreOptions) -> Result<()> {
        let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
        let known = self.restore_options();
        let Some((kind, spec)) = known.iter().find(|(kind, o)| format!("{kind}.{}", o.name) == key) else {
            let names: Vec<String> = known.iter().map(|(k, o)| format!("{k}.{}", o.name)).collect();
            return Err(config_error(format!("unknown restore option `{key}`")).with_hint(
                if names.is_empty() {
                    "no source kind of this binary declares restore options".to_string()
                } else {
                    format!(
                        "known: {} (`coffer restore --help` describes them)",
                        names.join(", ")
                    )
                },
            ));
        };
        opts.set(kind, spec, value)
    }

    /// The factory of a source kind.
    pub fn source_factory(&self, kind: &str) -> Result<&Arc<dyn SourceFactory>> {
        self.sources.get(kind).ok_or_else(|| {
            config_error(format!("unknown source kind `{kind}`")).with_hint(format!(
                "known kinds: {} (a kind may need a cargo feature of the coffer binary)",
                self.source_kinds().join(", ")
            ))
        })
    }

    /// The factory of a sink kind.
    pub fn sink_factory(&self, kind: &str) -> Result<&Arc<dyn SinkFactory>> {
        self.sinks.get(kind).ok_or_else(|| {
            config_error(format!("unknown sink kind `{kind}`")).with_hint(format!(
                "known kinds: {} (a kind may need a cargo feature of the coffer binary)",
                self.sink_kinds().join(", ")
            ))
        })
    }

    /// Parses a one-off `KIND:SPEC` source argument into its factory and
    /// spec.
    pub fn source_spec<'a>(&self, arg: &'a str) -> Result<(&Arc<dyn SourceFactory>, &'a str)> {
        let Some((kind, spec)) = arg.split_once(':') else {
            return Err(config_error(format!("source `{arg}` has no kind"))
                .with_hint("write KIND:SPEC, e.g. file:/etc/app.yaml or 'env:.env#APP_*'"));
        };
        if spec.is_empty() {
            return Err(config_error(format!("source `{arg}` is empty after `{kind}:`")));
        }
        Ok((self.source_factory(kind)?, spec))
    }

    /// Builds a source of `kind` from its `[source.NAME]` table; an error
    /// names the source.
    pub fn source_from_config(
        &self,
        kind: &str,
        name: &str,
        table: toml::Table,
        base_dir: &Path,
    ) -> Result<Arc<dyn Source>> {
        self.source_factory(kind)?
            .from_config(name, table, base_dir)
            .map_err(|e| e.with_context("source", name))
    }

    /// Builds a sink of `kind` from its `[sink.NAME]` table (and coffer's
    /// `retention` policy of that sink, if any; see
    /// [`SinkFactory::from_config_with_retention`]), with the layers its
    /// [`SinkInfo::remote_bound`](crate::SinkInfo) asks for.
    pub fn sink_from_config(
        &self,
        kind: &str,
        name: &str,
        table: toml::Table,
        base_dir: &Path,
        retention: Option<&toml::Value>,
    ) -> Result<Arc<dyn Sink>> {
        let factory = self.sink_factory(kind)?;
        let sink = factory.from_config_with_retention(name, table, base_dir, retention)?;
        Ok(layered(sink))
    }

    /// Builds a sink from a URL (`scheme://…` or `scheme:…`) or a plain
    /// path, with the layers it asks for (see [`Registry::sink_from_config`]).
    pub fn sink_from_url(&self, url: &str) -> Result<Arc<dyn Sink>> {
        self.bare_sink_from_url(url).map(layered)
    }

    fn bare_sink_from_url(&self, url: &str) -> Result<Arc<dyn Sink>> {
        if let Some((scheme, _)) = url.split_once(':')
            && !scheme.is_empty()
            && scheme.len() > 1 // keep Windows-like `C:` and plain paths out
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
            && !url.starts_with('.')
        {
            if let Some(f) = self.schemes.get(scheme) {
                return f.from_url(url);
            }
            if url.contains("://") {
                return Err(Error::new(
                    ErrorKind::ConfigInvalid,
                    format!("unknown sink scheme `{scheme}`"),
                )
                .with_hint(format!(
                    "known schemes: {} (a scheme may need a cargo feature of the coffer binary)",
                    self.schemes.keys().copied().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        match &self.path_sink {
            Some(f) => f.from_url(url),
            None => Err(config_error(format!("`{url}` is not a sink URL"))),
        }
    }
}

/// A remote sink (one that declares [`SinkInfo::remote_bound`]) as
/// `RetrySink(TimeoutSink(sink))`; a local one as it is. Every remote
/// sink, built-in or a plugin's, gets the same retry and time limits.
///
/// [`SinkInfo::remote_bound`]: crate::SinkInfo::remote_bound
pub fn layered(sink: Arc<dyn Sink>) -> Arc<dyn Sink> {
    match sink.info().remote_bound {
        Some(bound) => {
            let timeout = Arc::new(crate::TimeoutSink::new(
                sink,
                crate::TimeoutPolicy::new(bound, bound),
            ));
            Arc::new(crate::RetrySink::new(timeout, crate::RetryPolicy::default()))
        }
        None => sink,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::sink::{ByteStream, ObjectMeta, PutOptions, SinkInfo};

    /// Fails its first `list` with a temporary error.
    #[derive(Debug, Default)]
    struct Flaky {
        remote: bool,
        calls: AtomicU32,
    }

    #[async_trait]
    impl Sink for Flaky {
        fn info(&self) -> SinkInfo {
            let info = SinkInfo::new("flaky", "test");
            if self.remote {
                info.with_remote_bound(Duration::from_secs(5))
            } else {
                info
            }
        }
        async fn put(&self, _: &str, _: ByteStream, _: PutOptions) -> Result<u64> {
            Ok(0)
        }
        async fn get(&self, key: &str) -> Result<ByteStream> {
            Err(Error::new(ErrorKind::NotFound, key.to_string()))
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>> {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(Error::new(ErrorKind::Unreachable, "connection reset").temporary());
            }
            Ok(Vec::new())
        }
        async fn delete(&self, _: &str) -> Result<()> {
            Ok(())
        }
    }

    struct FlakyFactory;

    impl SinkFactory for FlakyFactory {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        fn schemes(&self) -> &'static [&'static str] {
            &["flaky"]
        }
        fn from_url(&self, url: &str) -> Result<Arc<dyn Sink>> {
            Ok(Arc::new(Flaky {
                remote: url.contains("remote"),
                ..Flaky::default()
            }))
        }
        fn from_config(&self, _: &str, table: toml::Table, _: &Path) -> Result<Arc<dyn Sink>> {
            Ok(Arc::new(Flaky {
                remote: table.contains_key("remote"),
                ..Flaky::default()
            }))
        }
    }

    #[tokio::test]
    async fn remote_sinks_get_the_retry_and_timeout_layers_they_declare() {
        let mut reg = Registry::new();
        reg.register_sink(Arc::new(FlakyFactory));
        let remote: toml::Table = "remote = true".parse().unwrap();
        let sink = reg
            .sink_from_config("flaky", "x", remote.clone(), Path::new("."), None)
            .unwrap();
        sink.list("").await.expect("retried by the registry's layer");
        let sink = reg.sink_from_url("flaky://remote").unwrap();
        sink.list("").await.expect("retried by the registry's layer");
        // Without the declaration, or built by the factory alone: no layer.
        let local = reg
            .sink_from_config("flaky", "x", toml::Table::new(), Path::new("."), None)
            .unwrap();
        assert!(local.list("").await.is_err());
        let bare = reg
            .sink_factory("flaky")
            .unwrap()
            .from_config("x", remote, Path::new("."))
            .unwrap();
        assert!(bare.list("").await.is_err());
    }
}

#[cfg(test)]
mod conflict_tests {
    use super::*;

    struct Kind(&'static str);

    #[allow(clippy::wrong_self_convention)]
    impl SourceFactory for Kind {
        fn kind(&self) -> &'static str {
            self.0
        }
        fn from_config(&self, _: &str, _: toml::Table, _: &Path) -> Result<Arc<dyn Source>> {
            Err(config_error("unused"))
        }
        fn from_spec(&self, _: &str, _: &str) -> Result<Arc<dyn Source>> {
            Err(config_error("unused"))
        }
        fn from_origin(&self, _: &str, _: &serde_json::Value) -> Result<Arc<dyn Source>> {
            Err(config_error("unused"))
        }
    }

    /// Registering a kind twice is an error naming it, unless replacing
    /// is asked for.
    #[test]
    fn a_kind_registered_twice_is_a_conflict_unless_replaced() {
        let mut reg = Registry::new();
        reg.register_source(Arc::new(Kind("file")));
        reg.replace_source(Arc::new(Kind("file")));
        assert!(reg.check().is_ok());
        reg.register_source(Arc::new(Kind("file")));
        let e = reg.check().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(e.to_string().contains("source kind `file`"), "{e}");
    }

    struct Check;

    #[allow(clippy::wrong_self_convention)]
    impl crate::checks::CheckFactory for Check {
        fn kind(&self) -> &'static str {
            "http"
        }
        fn from_config(&self, _: toml::Table, _: &Path) -> Result<Arc<dyn crate::checks::Check>> {
            Err(config_error("unused"))
        }
    }

    /// A check kind registered twice is a conflict too; an unknown one
    /// names those there are.
    #[test]
    fn a_check_kind_registered_twice_is_a_conflict() {
        let mut reg = Registry::new();
        reg.register_check(Arc::new(Check));
        assert!(reg.check().is_ok());
        let e = reg
            .check_from_config("smtp", toml::Table::new(), Path::new("."))
            .unwrap_err();
        assert!(e.to_string().contains("unknown check kind `smtp`"), "{e}");
        assert_eq!(
            e.hint(),
            Some("known kinds: http (a kind may need a cargo feature of the coffer binary)")
        );
        reg.register_check(Arc::new(Check));
        let e = reg.check().unwrap_err();
        assert!(e.to_string().contains("check kind `http`"), "{e}");
    }
}

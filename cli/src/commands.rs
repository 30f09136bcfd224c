//! One function per subcommand.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_core::{
    BackupRequest, CancelFlag, Catalog, CatalogEntry, CheckOnly, Compression, Encryption, Error, ErrorKind,
    GeneratedKey, Identities, Passphrase, Progress, ProgressRead, RecipientKey, Registry, RestoreOptions,
    Result, Sink, SinkTarget, Source, SourceRecord, SourceResolver, config_error,
};
use serde_json::json;

use crate::Failure;
use crate::args::{
    BackupArgs, Cli, Command, InitArgs, KeySel, KeygenArgs, RestoreArgs, ShowArgs, SinkSel, TrustSel,
    VerifyArgs,
};
use crate::config::{Config, EXAMPLE};
use crate::output::{Spinner, print_json, printable, size};

pub(crate) type CmdResult = std::result::Result<(), Failure>;

/// Runs the parsed command.
pub async fn run(cli: Cli, registry: Registry, cancel: CancelFlag) -> CmdResult {
    let ctx = Ctx {
        json: cli.json,
        quiet: cli.quiet || cli.json,
        config_path: cli.config.clone(),
        registry,
        cancel,
        verbose: cli.verbose > 0,
        create_sinks: cli.create_sink,
    };
    match cli.command {
        Command::Keygen(a) => keygen(&ctx, a),
        Command::Init(a) => init(&ctx, a),
        Command::Backup(a) => backup(&ctx, a).await,
        Command::List(a) => list(&ctx, a.sink, a.trust).await,
        Command::Show(a) => show(&ctx, a).await,
        Command::Verify(a) => verify(&ctx, a).await,
        Command::Restore(a) => restore(&ctx, a).await,
        Command::Unlock(a) => crate::trust::unlock(&ctx, a).await,
        Command::Copy(a) => crate::copy::copy(&ctx, a).await,
        Command::Export(a) => crate::copy::export(&ctx, a).await,
        Command::Import(a) => crate::copy::import(&ctx, a).await,
        Command::Media(a) => crate::copy::media(&ctx, a).await,
        Command::ImportRunbook(a) => crate::import_runbook::import_runbook(&ctx, a).await,
        Command::Prune(a) => crate::prune::prune(&ctx, a).await,
        Command::Pin(a) => crate::prune::pin(&ctx, a).await,
        Command::Unpin(a) => crate::prune::unpin(&ctx, a).await,
        Command::Sink(a) => sink_cmd(&ctx, a).await,
        Command::Keycheck(a) => crate::keycheck::keycheck(&ctx, a).await,
        Command::Completions(a) => crate::docs::completions(a),
        Command::Man(a) => crate::docs::man(a),
    }
}

/// What every command gets: global flags, the plugin registry, the
/// interrupt flag. Commands added in their own modules use it too.
pub(crate) struct Ctx {
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) registry: Registry,
    pub(crate) cancel: CancelFlag,
    pub(crate) verbose: bool,
    /// `--create-sink`: sinks written to are made where there is none.
    pub(crate) create_sinks: bool,
}

impl Ctx {
    /// The config: --config/COFFER_CONFIG (must exist), else ./coffer.toml if present.
    pub(crate) fn config(&self) -> Result<Option<Config>> {
        match &self.config_path {
            Some(p) => Config::load(p, &self.registry).map(Some),
            None => {
                let p = Path::new("coffer.toml");
                if p.exists() {
                    Config::load(p, &self.registry).map(Some)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Sinks named or given by URL on the command line, else the config's.
    pub(crate) fn read_sinks(
        &self,
        sel: &SinkSel,
        config: Option<&Config>,
    ) -> Result<Vec<(String, Arc<dyn Sink>)>> {
        if !sel.sinks.is_empty() {
            return sel
                .sinks
                .iter()
                .map(|s| Ok((s.clone(), self.sink(s, config)?)))
                .collect();
        }
        match config {
            Some(c) if !c.sinks.is_empty() => {
                Ok(c.sinks.iter().map(|(n, s)| (n.clone(), s.clone())).collect())
            }
            _ => Err(config_error("no sink given")
                .with_hint("pass --sink DIR_OR_URL (or a sink name from coffer.toml)")),
        }
    }

    pub(crate) fn sink(&self, s: &str, config: Option<&Config>) -> Result<Arc<dyn Sink>> {
        if let Some(c) = config
            && let Some(sink) = c.sinks.get(s)
        {
            return Ok(sink.clone());
        }
        self.registry.sink_from_url(s)
    }

    /// A sink the command writes to: as [`Ctx::sink`]; with
    /// `--create-sink` made a sink on its first use.
    pub(crate) fn target_sink(&self, s: &str, config: Option<&Config>) -> Result<Arc<dyn Sink>> {
        let sink = self.sink(s, config)?;
        Ok(if self.create_sinks {
            crate::create_sink::CreateOnFirstUse::wrap(sink)
        } else {
            sink
        })
    }
}

/// Fetches a snapshot's object (its SHA-256 checked against the index),
/// then decrypts it and checks every file against `SHA256SUMS` and the
/// manifest, showing both phases.
async fn deep_check(
    ctx: &Ctx,
    what: &str,
    sink: &dyn Sink,
    index: &coffer_core::Index,
    ids: Arc<Identities>,
) -> Result<coffer_core::BundleSummary> {
    let progress = Arc::new(Progress::default());
    let shown = Spinner::start(what, progress.clone(), ctx.quiet);
    let checked = async {
        let file = coffer_core::fetch_verified(sink, index, None, Some(&progress)).await?;
        let input = ProgressRead::new(file, progress.clone(), "decrypt", index.object.size, None);
        let idx = index.clone();
        tokio::task::spawn_blocking(move || {
            coffer_core::read_bundle(std::io::BufReader::new(input), &idx, &ids, &mut CheckOnly)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))?
    }
    .await;
    shown.finish();
    checked
}

/// `coffer sink init SINK`.
async fn sink_cmd(ctx: &Ctx, a: crate::args::SinkCmdArgs) -> CmdResult {
    let config = ctx.config()?;
    match a.action {
        crate::args::SinkAction::Init { sink: spec } => {
            let sink = ctx.sink(&spec, config.as_ref())?;
            sink.init()
                .await
                .map_err(|e| e.prefix(format!("sink `{spec}`")))?;
            let location = sink.info().to_string();
            if ctx.json {
                print_json(&json!({ "sink": spec, "location": location, "ready": true }));
            } else {
                println!("{location} is a coffer sink, ready for `coffer backup --sink {spec}`");
            }
            Ok(())
        }
    }
}

fn keygen(ctx: &Ctx, a: KeygenArgs) -> CmdResult {
    if a.signing {
        return crate::trust::keygen_signing(ctx, a.output.as_deref());
    }
    if let Some(pubfile) = a.ssh {
        let text = std::fs::read_to_string(&pubfile)
            .map_err(|e| Error::io(format!("reading {}", pubfile.display()), e))?;
        let key = RecipientKey::parse(text.trim())?;
        if ctx.json {
            print_json(&json!({ "recipient": key.as_str(), "fingerprint": key.fingerprint() }));
        } else {
            println!("{}", key.as_str());
        }
        return Ok(());
    }
    if ctx.json && a.output.is_none() {
        return Err(config_error(
            "--json needs -o FILE: the private key must go to a file, not into JSON output",
        )
        .into());
    }
    let key = GeneratedKey::generate();
    match &a.output {
        Some(path) => write_new_private(path, key.file_text().as_bytes())?,
        None => {
            if std::io::stdout().is_terminal() && !ctx.json {
                eprintln!("warning: writing a private key to the terminal; use -o FILE to store it");
            }
            if !ctx.json {
                print!("{}", key.file_text());
                return Ok(());
            }
        }
    }
    // The fingerprint is what indexes, `coffer show` and the wrong-key
    // hint name the recipient by.
    let fingerprint = RecipientKey::parse(&key.recipient())?.fingerprint();
    if ctx.json {
        let mut v = json!({ "recipient": key.recipient(), "fingerprint": fingerprint });
        if let Some(p) = &a.output {
            v["identity_file"] = json!(p.display().to_string());
        }
        print_json(&v);
    } else {
        println!("{}", key.recipient());
        if let Some(p) = &a.output {
            eprintln!(
                "identity written to {} (mode 0600); keep it off the backed-up host",
                p.display()
            );
        }
        eprintln!("fingerprint: {fingerprint} (as indexes and `coffer show` name this recipient)");
    }
    Ok(())
}

/// Creates `path` with mode 0600, refusing to overwrite.
pub(crate) fn write_new_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            let err = Error::io(format!("creating {}", path.display()), e);
            if err.kind() == ErrorKind::AlreadyExists {
                err.with_hint("refusing to overwrite a key; choose another file name")
            } else {
                err
            }
        })?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn init(ctx: &Ctx, a: InitArgs) -> CmdResult {
    if a.output.exists() && !a.force {
        // A usage error (exit 2): the command line asked for what it must not do.
        return Err(config_error(format!("{} exists", a.output.display()))
            .with_hint("pass --force to overwrite it, or -o another file")
            .into());
    }
    std::fs::write(&a.output, EXAMPLE)
        .map_err(|e| Error::io(format!("writing {}", a.output.display()), e))?;
    if ctx.json {
        print_json(&json!({ "written": a.output.display().to_string() }));
    } else {
        println!(
            "wrote {}: edit its recipients, sources and sinks, then run `coffer backup`",
            a.output.display()
        );
    }
    Ok(())
}

pub(crate) fn passphrase(file: Option<&Path>, confirm: bool) -> Result<Passphrase> {
    if let Some(f) = file {
        return Passphrase::from_file(f);
    }
    if let Ok(p) = std::env::var("COFFER_PASSPHRASE") {
        return Passphrase::new(p);
    }
    if std::io::stdin().is_terminal() {
        let p =
            rpassword::prompt_password("passphrase: ").map_err(|e| Error::io("reading the passphrase", e))?;
        if confirm {
            let again = rpassword::prompt_password("passphrase (again): ")
                .map_err(|e| Error::io("reading the passphrase", e))?;
            if again != p {
                return Err(config_error("the passphrases differ"));
            }
        }
        return Passphrase::new(p);
    }
    Err(config_error("a passphrase is needed but none was given")
        .with_hint("set COFFER_PASSPHRASE, pass --passphrase-file FILE, or run on a terminal"))
}

pub(crate) fn identities(keys: &KeySel) -> Result<Identities> {
    let mut ids = Identities::new();
    for f in &keys.identities {
        ids.add_file(f)?;
    }
    if keys.passphrase || keys.passphrase_file.is_some() {
        ids.set_passphrase(passphrase(keys.passphrase_file.as_deref(), false)?);
    }
    Ok(ids)
}

fn unique_name(base: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == base) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken.contains(n))
        .expect("infinite")
}

async fn backup(ctx: &Ctx, a: BackupArgs) -> CmdResult {
    let config = ctx.config()?;
    let one_off = !a.sources.is_empty();
    let (job, sources, sink_names, recipients, compression, mut tags, passfile, job_signing) = if one_off {
        if a.job.is_some() {
            return Err(config_error("give either a JOB or --source flags, not both").into());
        }
        let mut names = Vec::new();
        let mut sources: Vec<Arc<dyn Source>> = Vec::new();
        for spec in &a.sources {
            let (factory, rest) = ctx.registry.source_spec(spec)?;
            let name = unique_name(&factory.spec_name(rest), &names);
            sources.push(
                factory
                    .from_spec(&name, rest)
                    .map_err(|e| e.prefix(format!("--source {spec}")))?,
            );
            names.push(name);
        }
        if a.sink.sinks.is_empty() && a.sinks_optional.is_empty() {
            return Err(config_error("no sink given")
                .with_hint("add --sink DIR_OR_URL")
                .into());
        }
        let job = a.name.clone().unwrap_or_else(|| "one-off".into());
        (
            job,
            sources,
            a.sink.sinks.clone(),
            a.recipients.clone(),
            a.compression.clone(),
            vec![],
            None,
            None,
        )
    } else {
        let Some(cfg) = &config else {
            return Err(config_error("nothing to back up: no --source given and no coffer.toml here")
                .with_hint("pass --source KIND:SPEC --sink DIR --recipient KEY, or --config FILE (see `coffer init`)")
                .into());
        };
        let (name, job) = cfg.job(a.job.as_deref())?;
        let sources = job.sources.iter().map(|s| cfg.sources[s].clone()).collect();
        let sinks = if a.sink.sinks.is_empty() {
            job.sinks.clone()
        } else {
            a.sink.sinks.clone()
        };
        let recipients = if !a.recipients.is_empty() {
            a.recipients.clone()
        } else {
            job.recipients.clone().unwrap_or_else(|| cfg.recipients.clone())
        };
        let compression = a
            .compression
            .clone()
            .or(job.compression.clone())
            .or(cfg.compression.clone());
        (
            name,
            sources,
            sinks,
            recipients,
            compression,
            job.tags.clone(),
            job.passphrase_file.clone(),
            job.signing_key.clone(),
        )
    };
    tags.extend(a.tags.iter().cloned());
    let (targets, quorum) = fan_out(config.as_ref(), &job, one_off, sink_names, &a.sinks_optional)?;
    if a.prune {
        let names: Vec<String> = targets.iter().map(|(n, _)| n.clone()).collect();
        crate::prune::check_backup_prune(config.as_ref(), &job, &names)?;
    }

    let encryption = if a.passphrase || a.passphrase_file.is_some() || passfile.is_some() {
        if !a.recipients.is_empty() {
            return Err(
                config_error("a passphrase must be the only recipient (an age rule)")
                    .with_hint("drop --recipient, or drop --passphrase")
                    .into(),
            );
        }
        let file = a.passphrase_file.clone().or(passfile);
        Encryption::Passphrase {
            passphrase: passphrase(file.as_deref(), true)?,
            log_n: coffer_core::DEFAULT_SCRYPT_LOG_N,
        }
    } else {
        let keys = recipients
            .iter()
            .map(|r| RecipientKey::parse(r))
            .collect::<Result<Vec<_>>>()?;
        let enc = Encryption::Recipients(keys);
        enc.validate()?;
        enc
    };
    let compression = match compression {
        Some(c) => Compression::parse(&c)?,
        None => Compression::default(),
    };
    let time = match &a.time {
        Some(t) => Some(t.parse::<jiff::Timestamp>().map_err(|e| {
            config_error(format!("--time `{t}` is not an RFC 3339 time: {e}"))
                .with_hint("e.g. 2026-11-27T22:15:00Z")
        })?),
        None => None,
    };
    let mut sinks = Vec::new();
    for (s, required) in &targets {
        sinks.push(SinkTarget {
            name: s.clone(),
            sink: ctx.target_sink(s, config.as_ref())?,
            required: *required,
        });
    }
    let signing_key =
        crate::trust::signing_key(a.signing_key.as_deref(), job_signing.as_deref(), config.as_ref())?;
    // A configured source that cannot be read (a missing path) names its
    // place in the config file.
    if let Some(cfg) = config.as_ref().filter(|_| !one_off) {
        for s in &sources {
            let name = s.info().name;
            if let Some(place) = cfg.source_places.get(&name) {
                s.check().await.map_err(|e| e.prefix(place))?;
            }
        }
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(2);
    let req = BackupRequest {
        job,
        sources,
        sinks,
        encryption,
        compression,
        tags,
        time,
        threads,
        signing_key,
    };

    // A job's hooks (cold backups): `before`, then the backup, then
    // `after` whatever happened (see crate::hooks).
    let mut hooks = match (&config, one_off) {
        (Some(cfg), false) => cfg
            .jobs
            .get(&req.job)
            .map(|j| j.hooks())
            .filter(|h| !h.is_empty())
            .map(crate::hooks::HookRun::new),
        _ => None,
    };
    if let Some(h) = hooks.as_mut()
        && let Err(e) = h.before().await
    {
        let _ = h.finish(true).await;
        report_hooks_on_error(ctx, h);
        return Err(e.into());
    }
    let (outcome, secs) = match run_locked_backup(ctx, req, "backup").await {
        Ok(done) => done,
        Err(e) => {
            if let Some(h) = hooks.as_mut() {
                let _ = h.finish(true).await;
                report_hooks_on_error(ctx, h);
            }
            return Err(e.into());
        }
    };
    let after = crate::prune::after_backup(ctx, config.as_ref(), &a, &outcome).await;
    let stored = outcome.sinks.iter().filter(|s| s.result.is_ok()).count();
    let complete = match quorum {
        Some(q) => stored >= q,
        None => outcome.required_ok(),
    };
    let hooks_done = match hooks.as_mut() {
        Some(h) => h.finish(!complete || after.is_err()).await,
        None => Ok(()),
    };
    let hook_reports = hooks.as_ref().map(|h| h.reports.clone()).unwrap_or_default();

    if ctx.json {
        let mut v = json!({
            "id": outcome.index.id.as_str(),
            "job": outcome.index.job,
            "created_at": outcome.index.created_at.to_string(),
            "entries": outcome.entries,
            "plain_bytes": outcome.plain_bytes,
            "object": outcome.index.object,
            "seconds": secs,
            "sources": outcome.sources.iter().map(|s| json!({
                "name": s.name, "kind": s.kind, "summary": s.report.summary, "details": s.report.details,
            })).collect::<Vec<_>>(),
            "sinks": outcome.sinks.iter().map(|s| json!({
                "name": s.name, "location": s.location, "required": s.required,
                "optional": !s.required,
                "ok": s.result.is_ok(),
                "error": s.result.as_ref().err().map(|e| e.to_string()),
                "hint": s.result.as_ref().err().and_then(|e| e.hint()),
            })).collect::<Vec<_>>(),
            "stored_on": stored,
            "quorum": quorum,
            "partial": !complete,
        });
        if let Ok(Some(after)) = &after {
            after.add_json(&mut v);
        }
        if let Some(h) = &hooks {
            v["hooks"] = json!(hook_reports.iter().map(|r| r.to_json()).collect::<Vec<_>>());
            v["health"] = json!(h.health.as_ref().map(|r| r.to_json()));
        }
        print_json(&v);
    } else {
        println!(
            "snapshot {} (job {}): {} files, {} → {} encrypted in {:.1}s",
            outcome.index.id,
            outcome.index.job,
            outcome.entries,
            size(outcome.plain_bytes),
            size(outcome.index.object.size),
            secs
        );
        for s in &outcome.sources {
            println!("  source {} ({}): {}", s.name, s.kind, s.report.summary);
        }
        for s in &outcome.sinks {
            let optional = if s.required { "" } else { " (optional)" };
            match &s.result {
                Ok(()) => println!("  sink {} ({}){optional}: ok", s.name, s.location),
                Err(e) => {
                    println!("  sink {} ({}){optional}: FAILED: {e}", s.name, s.location);
                    if let Some(h) = e.hint() {
                        println!("    hint: {h}");
                    }
                }
            }
        }
        if let Some(q) = quorum {
            println!(
                "  quorum: stored on {stored} of {} sinks, {q} required",
                outcome.sinks.len()
            );
        } else if outcome.sinks.iter().any(|s| !s.required && s.result.is_err()) && complete {
            println!("  optional sinks failed; every required sink holds the snapshot");
        }
        if let Ok(Some(after)) = &after {
            after.print();
        }
        for r in &hook_reports {
            println!("  {}", r.line());
        }
        if let Some(health) = hooks.as_ref().and_then(|h| h.health.as_ref()) {
            println!("  {}", health.line());
        }
    }
    if !complete {
        let failed: Vec<_> = outcome
            .sinks
            .iter()
            .filter(|s| (s.required || quorum.is_some()) && s.result.is_err())
            .map(|s| s.name.as_str())
            .collect();
        return Err(Failure::Partial(match quorum {
            Some(q) => format!(
                "snapshot {} was stored on {stored} of {} sinks, short of the quorum of {q}; failed: {}",
                outcome.index.id,
                outcome.sinks.len(),
                failed.join(", ")
            ),
            None => format!(
                "snapshot {} was written, but required sink(s) failed: {}",
                outcome.index.id,
                failed.join(", ")
            ),
        }));
    }
    after?;
    hooks_done?;
    Ok(())
}

/// The hooks of a run that failed before its report: on stderr (stdout
/// carries no JSON then).
fn report_hooks_on_error(ctx: &Ctx, hooks: &crate::hooks::HookRun) {
    for r in &hooks.reports {
        if ctx.json {
            eprintln!("{}", r.to_json());
        } else {
            eprintln!("{}", r.line());
        }
    }
    if let Some(h) = &hooks.health {
        if ctx.json {
            eprintln!("{}", h.to_json());
        } else {
            eprintln!("{}", h.line());
        }
    }
}

/// A sink of a backup run: its name and whether it is required.
type SinkChoice = (String, bool);

/// The sinks of a backup run with whether each is required, and the
/// job's quorum: the run's sinks (`--sink`, else the job's) marked optional
/// by `[sink.X] optional = true` or `--sink-optional X`, then every
/// `--sink-optional` sink not among them.
fn fan_out(
    config: Option<&Config>,
    job: &str,
    one_off: bool,
    names: Vec<String>,
    optional: &[String],
) -> Result<(Vec<SinkChoice>, Option<usize>)> {
    let configured_optional = |n: &str| config.is_some_and(|c| c.sink_optional.contains(n));
    let mut targets: Vec<SinkChoice> = Vec::new();
    for n in names.into_iter().chain(optional.iter().cloned()) {
        if targets.iter().any(|(t, _)| *t == n) {
            continue;
        }
        let required = !configured_optional(&n) && !optional.contains(&n);
        targets.push((n, required));
    }
    let quorum = if one_off {
        None
    } else {
        config.and_then(|c| c.jobs.get(job)).and_then(|j| j.quorum)
    };
    if let Some(q) = quorum
        && q > targets.len()
    {
        return Err(config_error(format!(
            "job `{job}` has quorum = {q}, but this run writes to {} sink(s)",
            targets.len()
        ))
        .with_hint("name more sinks with --sink, or lower the job's quorum"));
    }
    if targets.iter().all(|(_, required)| !required) && quorum.is_none() {
        tracing::info!("every sink is optional: the run succeeds when any one stores the snapshot");
    }
    Ok((targets, quorum))
}

/// Runs a backup holding a shared lock on every sink, with a progress
/// spinner; returns the outcome and the wall time in seconds. `what` names
/// the holder in the locks (`backup`, `import-runbook`).
pub(crate) async fn run_locked_backup(
    ctx: &Ctx,
    req: BackupRequest,
    what: &str,
) -> Result<(coffer_core::BackupOutcome, f64)> {
    let progress = Arc::new(Progress::default());
    let spinner = Spinner::start(what, progress.clone(), ctx.quiet);
    let started = std::time::Instant::now();
    // Shared locks: a running prune (exclusive lock) makes the backup
    // refuse at once; a prune started later never deletes this snapshot's
    // object, which has no index yet.
    let lock_targets: Vec<(String, Arc<dyn Sink>)> = req
        .sinks
        .iter()
        .map(|t| (t.name.clone(), t.sink.clone()))
        .collect();
    let locks = match crate::trust::lock_shared(&lock_targets, what).await {
        Ok(l) => l,
        Err(e) => {
            spinner.finish();
            return Err(e);
        }
    };
    let outcome = coffer_core::run_backup(req, progress).await;
    crate::trust::release_all(locks).await;
    spinner.finish();
    Ok((outcome?, started.elapsed().as_secs_f64()))
}

fn snapshot_json(e: &CatalogEntry) -> serde_json::Value {
    json!({
        "id": e.index.id.as_str(),
        "created_at": e.index.created_at.to_string(),
        "job": e.index.job,
        "host": e.index.host,
        "tags": e.index.tags,
        "size": e.index.object.size,
        "sha256": e.index.object.sha256,
        "sources": e.index.sources,
        "state": e.state.as_str(),
        "pinned": e.pinned,
    })
}

async fn list(ctx: &Ctx, sel: SinkSel, trust: TrustSel) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.read_sinks(&sel, config.as_ref())?;
    let trust = crate::trust::trusted_signers(&trust, config.as_ref())?;
    let mut out = Vec::new();
    for (name, sink) in &sinks {
        let cat = Catalog::load(sink.as_ref())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        if ctx.json {
            out.push(json!({
                "sink": name,
                "location": sink.info().to_string(),
                "snapshots": cat.snapshots.iter().map(|e| {
                    let mut v = snapshot_json(e);
                    let t = trust.judge(&e.signature);
                    v["signature"] = json!(t.as_str());
                    v["signer"] = json!(t.fingerprint());
                    v["trusted"] = json!(crate::trust::enforce(&trust, e).is_ok());
                    v
                }).collect::<Vec<_>>(),
                "incomplete": cat.incomplete,
                "unreadable": cat.unreadable.iter().map(|(k, e)| json!({"key": k, "error": e})).collect::<Vec<_>>(),
            }));
            continue;
        }
        if sinks.len() > 1 {
            println!("sink {name} ({}):", sink.info());
        }
        if cat.snapshots.is_empty() {
            println!("no snapshots");
        } else {
            println!(
                "{:<26} {:<20} {:<16} {:>10}  {:<16} {:<9} SOURCES",
                "ID", "TIME (UTC)", "JOB", "SIZE", "STATE", "SIGNATURE"
            );
            for s in &cat.snapshots {
                let srcs: Vec<_> = s.index.sources.iter().map(|s| s.name.as_str()).collect();
                println!(
                    "{:<26} {:<20} {:<16} {:>10}  {:<16} {:<9} {}",
                    s.index.id.as_str(),
                    s.index.created_at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                    s.index.job,
                    size(s.index.object.size),
                    if s.pinned {
                        format!("{},pinned", s.state.as_str())
                    } else {
                        s.state.as_str().to_string()
                    },
                    signature_column(&trust, s),
                    srcs.join(",")
                );
            }
        }
        if !cat.incomplete.is_empty() {
            println!(
                "{} incomplete object(s) without an index (interrupted or running backups): {}",
                cat.incomplete.len(),
                cat.incomplete.join(", ")
            );
        }
        for (k, e) in &cat.unreadable {
            println!("unreadable index {k} (corrupt: an integrity failure, its object is kept): {e}");
        }
    }
    if ctx.json {
        print_json(&json!(out));
    }
    Ok(())
}

/// `signed` (trusted, or any valid signature when no signer is trusted),
/// `unsigned`, or `untrusted` (refused by restore: unsigned or untrusted
/// while signers are configured, or a bad signature).
fn signature_column(trust: &coffer_core::TrustedSigners, e: &CatalogEntry) -> &'static str {
    match (crate::trust::enforce(trust, e), trust.judge(&e.signature)) {
        (Err(_), _) => "untrusted",
        (Ok(_), coffer_core::TrustState::Unsigned) => "unsigned",
        (Ok(_), _) => "signed",
    }
}

/// Finds `spec` on the first of `sinks` that has it.
pub(crate) async fn find_snapshot(
    sinks: &[(String, Arc<dyn Sink>)],
    spec: &str,
) -> Result<(String, Arc<dyn Sink>, CatalogEntry)> {
    let mut last_err = None;
    for (name, sink) in sinks {
        let cat = Catalog::load(sink.as_ref())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        match cat.resolve(spec) {
            Ok(e) => return Ok((name.clone(), sink.clone(), e.clone())),
            // Another sink may hold a good copy; if none does, a corrupt
            // index is what the user must hear about, not "not found".
            Err(e) => {
                let worse = last_err
                    .as_ref()
                    .is_none_or(|l: &Error| l.kind() != ErrorKind::Integrity);
                if worse {
                    last_err = Some(e);
                }
            }
        }
    }
    Err(last_err.unwrap_or_else(|| Error::new(ErrorKind::NotFound, "no sink")))
}

async fn show(ctx: &Ctx, a: ShowArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.read_sinks(&a.sink, config.as_ref())?;
    let trust = crate::trust::trusted_signers(&a.trust, config.as_ref())?;
    let (sink_name, sink, entry) = find_snapshot(&sinks, &a.snapshot).await?;
    let signature = crate::trust::enforce(&trust, &entry)?;
    let ids = identities(&a.keys)?;
    let manifest = if ids.is_empty() {
        None
    } else {
        Some(deep_check(ctx, "show", sink.as_ref(), &entry.index, Arc::new(ids)).await?)
    };
    if ctx.json {
        let mut v = json!({
            "sink": sink_name, "state": entry.state.as_str(), "index": entry.index,
            "signature": signature.as_str(), "signer": signature.fingerprint(),
        });
        if let Some(s) = &manifest {
            v["manifest"] = serde_json::to_value(&s.manifest).expect("json");
            v["sources"] = serde_json::to_value(&s.sources.sources).expect("json");
        }
        print_json(&v);
        return Ok(());
    }
    let i = &entry.index;
    println!("snapshot   {}", i.id);
    println!("sink       {sink_name} ({})", sink.info());
    println!("state      {}", entry.state.as_str());
    match signature.fingerprint() {
        Some(fp) => println!("signature  {} ({fp})", signature.as_str()),
        None => println!("signature  {}", signature.as_str()),
    }
    println!("job        {}", i.job);
    println!("created    {}", i.created_at);
    println!("host       {}", i.host);
    if !i.tags.is_empty() {
        println!("tags       {}", i.tags.join(", "));
    }
    println!(
        "object     {} ({}, sha256 {})",
        i.object.key,
        size(i.object.size),
        i.object.sha256
    );
    println!("compressed {}", i.compression);
    println!(
        "encryption age, {} {}",
        i.encryption.mode,
        i.encryption.recipients.join(" ")
    );
    for s in &i.sources {
        println!("source     {} ({})", s.name, s.kind);
    }
    if let Some(s) = manifest {
        println!(
            "manifest   {} files, {} (all checked)",
            s.files_checked,
            size(s.manifest.total_bytes)
        );
        for (src, rec) in s.manifest.sources.iter().zip(&s.sources.sources) {
            println!("  {}: {} — {}", src.name, rec.description, src.report.summary);
        }
    }
    Ok(())
}

async fn verify(ctx: &Ctx, a: VerifyArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.read_sinks(&a.sink, config.as_ref())?;
    let trust = crate::trust::trusted_signers(&a.trust, config.as_ref())?;
    let ids = if a.deep {
        Some(Arc::new(identities(&a.keys)?))
    } else {
        None
    };
    if let Some(ids) = &ids
        && ids.is_empty()
    {
        return Err(config_error("--deep needs a key to decrypt")
            .with_hint("add --identity FILE or --passphrase")
            .into());
    }
    let mut results = Vec::new();
    let mut failed = 0;
    // Integrity failures give exit 3; any other failure (unreachable sink,
    // permission) is reported as that error instead.
    let mut other_error: Option<Error> = None;
    let mut no_key: Vec<String> = Vec::new();
    for (name, sink) in &sinks {
        let cat = Catalog::load(sink.as_ref())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        if a.all {
            for (key, err) in &cat.unreadable {
                failed += 1;
                if !ctx.json {
                    println!("{name} {key}: FAILED: unreadable index: {err}");
                }
                results.push(json!({
                    "sink": name, "id": key, "ok": false, "deep": a.deep, "files_checked": null,
                    "error": {"kind": "integrity", "message": format!("unreadable index: {err}")},
                }));
            }
        }
        let mut sampled = None;
        let chosen: Vec<CatalogEntry> = if let Some(sample) = a.sample {
            let state = crate::sample::load(sink.as_ref())
                .await
                .map_err(|e| e.prefix(format!("sink `{name}`")))?;
            let all: Vec<String> = cat.snapshots.iter().map(|e| e.index.id.to_string()).collect();
            let (ids, next) = crate::sample::pick(&all, &state, sample);
            sampled = Some((next, all.len()));
            cat.snapshots
                .iter()
                .filter(|e| ids.contains(&e.index.id.to_string()))
                .cloned()
                .collect()
        } else if a.all {
            cat.snapshots.clone()
        } else {
            vec![cat.resolve(a.snapshot.as_deref().unwrap_or("latest"))?.clone()]
        };
        for entry in chosen {
            let index = entry.index.clone();
            let check = async {
                // The signature first: nothing is fetched for a refused one.
                crate::trust::enforce(&trust, &entry)?;
                match &ids {
                    None => {
                        let progress = Arc::new(Progress::default());
                        let shown = Spinner::start("verify", progress.clone(), ctx.quiet);
                        let r =
                            coffer_core::verify_object(sink.as_ref(), &index, None, Some(&progress)).await;
                        shown.finish();
                        r.map(|_| None)
                    }
                    Some(ids) => deep_check(ctx, "verify", sink.as_ref(), &index, ids.clone())
                        .await
                        .map(|s| Some(s.files_checked)),
                }
            };
            let r = check.await;
            if let Err(e) = &r {
                match e.kind() {
                    ErrorKind::Integrity => failed += 1,
                    // No key for this one: the others are still checked.
                    ErrorKind::Decryption => no_key.push(index.id.to_string()),
                    _ if other_error.is_none() => other_error = Some(Error::new(e.kind(), e.to_string())),
                    _ => {}
                }
            }
            if !ctx.json {
                match &r {
                    Ok(None) => println!("{} {}: ok (size and SHA-256 match the index)", name, index.id),
                    Ok(Some(n)) => println!(
                        "{} {}: ok (decrypted, {n} files match SHA256SUMS)",
                        name, index.id
                    ),
                    Err(e) if e.kind() == ErrorKind::Decryption => {
                        println!("{} {}: NO KEY: {e}", name, index.id)
                    }
                    Err(e) => println!("{} {}: FAILED: {e}", name, index.id),
                }
            }
            let mut v = json!({
                "sink": name, "id": index.id.as_str(), "ok": r.is_ok(), "deep": a.deep,
                "files_checked": r.as_ref().ok().copied().flatten(),
                "error": r.as_ref().err().map(|e| json!({"kind": e.kind().as_str(), "message": e.to_string()})),
            });
            if let Some((state, total)) = &sampled {
                v["sample"] = json!({ "cycle": state.cycle, "covered": state.covered.len(), "of": total });
            }
            results.push(v);
        }
        if let Some((state, total)) = sampled {
            crate::sample::save(sink.as_ref(), &state).await;
            if !ctx.json {
                println!(
                    "{name}: sample cycle {}: {} of {total} snapshots checked so far{}",
                    state.cycle,
                    state.covered.len(),
                    if state.covered.len() == total {
                        " (complete)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    if ctx.json {
        print_json(&json!(results));
    }
    if let Some(e) = other_error {
        return Err(e.into());
    }
    if failed > 0 {
        return Err(Failure::Integrity(format!(
            "{failed} snapshot(s) failed verification"
        )));
    }
    if !no_key.is_empty() {
        return Err(Error::new(
            ErrorKind::Decryption,
            format!(
                "no key given decrypts {} snapshot(s): {}",
                no_key.len(),
                no_key.join(", ")
            ),
        )
        .with_hint("pass the identity (or passphrase) of those snapshots' recipients; `coffer show ID` lists their fingerprints")
        .into());
    }
    Ok(())
}

async fn restore(ctx: &Ctx, a: RestoreArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.read_sinks(&a.sink, config.as_ref())?;
    let ids = identities(&a.keys)?;
    if ids.is_empty() {
        return Err(config_error("restore needs a key")
            .with_hint("pass --identity FILE (or --passphrase for passphrase bundles)")
            .into());
    }
    let trust = crate::trust::trusted_signers(&a.trust, config.as_ref())?;
    let (sink_name, sink, entry) = find_snapshot(&sinks, &a.snapshot).await?;
    // Before fetching or decrypting anything: a forged snapshot stops here.
    crate::trust::enforce(&trust, &entry)?;
    let index = entry.index.clone();
    for only in &a.only {
        if !index.sources.iter().any(|s| &s.name == only || &s.kind == only) {
            let names: Vec<_> = index
                .sources
                .iter()
                .map(|s| format!("{} ({})", s.name, s.kind))
                .collect();
            return Err(
                config_error(format!("--only {only}: the snapshot has no such source"))
                    .with_hint(format!("its sources: {}", names.join(", ")))
                    .into(),
            );
        }
    }
    if let Some(t) = &a.target
        && t.exists()
        && !t.is_dir()
    {
        return Err(config_error(format!("--target {} is not a directory", t.display())).into());
    }

    // Phases shown: verify (the ciphertext's SHA-256), decrypt (and write
    // the staged files), commit.
    let progress = Arc::new(Progress::default());
    let spinner = Spinner::start("restore", progress.clone(), ctx.quiet);
    let file =
        coffer_core::fetch_verified(sink.as_ref(), &index, a.cache_dir.as_deref(), Some(&progress)).await;
    let file = match file {
        Ok(f) => ProgressRead::new(f, progress.clone(), "decrypt", index.object.size, Some("commit")),
        Err(e) => {
            spinner.finish();
            return Err(e.into());
        }
    };

    let config_sources = config.as_ref().map(|c| c.sources.clone()).unwrap_or_default();
    let registry = ctx.registry.clone();
    let only = a.only.clone();
    let resolve: SourceResolver = Box::new(move |rec: &SourceRecord| {
        if !only.is_empty() && !only.iter().any(|o| o == &rec.name || o == &rec.kind) {
            return Ok(None);
        }
        if let Some(s) = config_sources.get(&rec.name)
            && s.info().kind == rec.kind
        {
            return Ok(Some(s.clone()));
        }
        let factory = registry.source_factory(&rec.kind)?;
        factory.from_origin(&rec.name, &rec.origin).map(Some)
    });
    let mut opts = RestoreOptions::default();
    opts.target = a.target.clone();
    opts.dry_run = a.dry_run;
    if let Some(uri) = &a.mongo_uri {
        opts.params.insert("mongo-uri".into(), uri.clone());
    }
    if a.drop {
        opts.params.insert("drop".into(), "true".into());
    }
    if a.unsafe_in_place {
        opts.params.insert("unsafe-in-place".into(), "true".into());
    }
    if let Some(ns) = &a.k8s_namespace {
        opts.params.insert("k8s-namespace".into(), ns.clone());
    }
    for (key, list) in [
        ("ns-include", &a.ns_include),
        ("ns-exclude", &a.ns_exclude),
        ("ns-from", &a.ns_from),
        ("ns-to", &a.ns_to),
    ] {
        if !list.is_empty() {
            opts.params.insert(key.into(), list.join("\n"));
        }
    }
    opts.cancel = ctx.cancel.clone();
    let handle = tokio::runtime::Handle::current();
    let idx = index.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        coffer_core::restore_bundle(file, &idx, &ids, resolve, opts, handle)
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()));
    spinner.finish();
    let outcome = outcome??;

    if ctx.json {
        print_json(&json!({
            "snapshot": index.id.as_str(),
            "sink": sink_name,
            "dry_run": a.dry_run,
            "files_checked": outcome.summary.files_checked,
            "sources": outcome.reports.iter().map(|(n, r)| json!({
                "name": n, "summary": r.summary, "actions": r.actions,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let verb = if a.dry_run { "would restore" } else { "restored" };
    println!(
        "{verb} snapshot {} from {sink_name} ({} files verified against SHA256SUMS)",
        index.id, outcome.summary.files_checked
    );
    for (name, r) in &outcome.reports {
        println!("  source {name}: {}", r.summary);
        // A dry run lists every change; a real restore only when short
        // (or with -v; --json always has them).
        if a.dry_run || r.actions.len() <= 20 || ctx.verbose {
            for act in &r.actions {
                println!("    {:<11} {}", act.action, printable(&act.target));
            }
        } else {
            println!("    ({} changes; -v or --json lists them)", r.actions.len());
        }
    }
    if a.dry_run {
        println!("dry run: nothing was changed");
    }
    Ok(())
}

//! [`K8sRestorer`]: puts Secrets back into a cluster (or, with `--target`,
//! writes their manifests to a directory).
//!
//! Runs on a blocking thread; API calls run on the runtime through
//! `Handle::block_on`. Staging reads every Secret of the bundle and the
//! live Secret it replaces (no write); commit creates or replaces them in
//! bundle order, each replace carrying the `resourceVersion` read while
//! staging (a concurrent change fails with 409 instead of being lost). If
//! a write fails, the Secrets this restore already wrote are put back as
//! they were: created ones deleted, replaced ones replaced again with
//! their previous content.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read};
use std::path::PathBuf;

use coffer_core::fsutil::{StagedFile, remove_created, stage_file};
use coffer_core::{
    Area, Error, RestoreAction, RestoreEntry, RestoreEntryKind, RestoreOptions, RestoreReport, Restorer,
    Result, check_relative_path,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use tokio::runtime::Handle;

use crate::client::Connection;
use crate::config::{file_stem, valid_name};
use crate::error::api_error;
use crate::sanitize::sanitize;

/// Kubernetes caps a Secret at 1 MiB; a stored one far larger is forged.
const MAX_SIZE: u64 = 4 << 20;

/// One Secret to create or replace.
struct Plan {
    namespace: String,
    name: String,
    secret: Secret,
    /// The live Secret it replaces, read while staging.
    existing: Option<Secret>,
}

enum Mode {
    Cluster {
        client: Client,
        server: String,
        /// Restore every Secret into this namespace instead of its own.
        namespace: Option<String>,
        plans: Vec<Plan>,
    },
    Dir {
        root: PathBuf,
        staged: Vec<StagedFile>,
        created: Vec<PathBuf>,
    },
}

/// Restores the Secrets of one `k8s` source.
pub(crate) struct K8sRestorer {
    source: String,
    /// The source's namespace (configured, or recorded at backup): the
    /// only one its Secrets are restored into unless `--k8s-namespace`.
    namespace: String,
    mode: Mode,
    handle: Handle,
    dry_run: bool,
    seen: BTreeSet<String>,
    actions: Vec<RestoreAction>,
}

impl K8sRestorer {
    /// Connects (unless `--target` without `--k8s-namespace` asks for files)
    /// before any entry is read.
    pub(crate) async fn new(
        source: String,
        own_namespace: String,
        connection: Connection,
        namespace: Option<String>,
        opts: &RestoreOptions,
    ) -> Result<Self> {
        let mode = match (&opts.target, &namespace) {
            (Some(target), None) => {
                let root = std::path::absolute(target)
                    .map_err(|e| Error::io(format!("cannot resolve {}", target.display()), e))?;
                coffer_core::fsutil::check_writable_dir(&root)?;
                Mode::Dir {
                    root,
                    staged: Vec::new(),
                    created: Vec::new(),
                }
            }
            _ => {
                let (client, server) = connection.client().await?;
                Mode::Cluster {
                    client,
                    server,
                    namespace,
                    plans: Vec::new(),
                }
            }
        };
        Ok(K8sRestorer {
            source,
            namespace: own_namespace,
            mode,
            handle: Handle::current(),
            dry_run: opts.dry_run,
            seen: BTreeSet::new(),
            actions: Vec::new(),
        })
    }

    fn action(&mut self, action: &str, target: String) {
        self.actions.push(RestoreAction {
            action: action.to_string(),
            target,
        });
    }

    /// Refuses an entry whose path names another namespace than the
    /// source's, unless `--k8s-namespace` chooses one.
    fn check_namespace(&self, namespace: &str, path: &str) -> Result<()> {
        // Only into the source's own namespace (or the one --k8s-namespace
        // gives): a bundle whose paths name another namespace (re-packed by
        // someone with write access to a sink) never chooses where a
        // Secret goes.
        let overridden = matches!(
            &self.mode,
            Mode::Cluster {
                namespace: Some(_),
                ..
            }
        );
        if !overridden && namespace != self.namespace {
            return Err(coffer_core::forged_entry(
                format!(
                    "a stored Secret names namespace `{namespace}`, not the source's `{}`",
                    self.namespace
                ),
                path,
            ));
        }
        Ok(())
    }

    /// Stages the manifest `NAMESPACE/STEM.json` under the `--target`
    /// directory (a dry run only records what it would do).
    fn stage_manifest(&mut self, namespace: &str, stem: &str, body: Vec<u8>, size: u64) -> Result<()> {
        let dry_run = self.dry_run;
        let Mode::Dir {
            root,
            staged,
            created,
        } = &mut self.mode
        else {
            unreachable!("staged in directory mode only")
        };
        let dest = root.join(namespace).join(format!("{stem}.json"));
        let target = dest.display().to_string();
        if dry_run {
            let verb = if dest.is_file() { "replace" } else { "create" };
            self.action(verb, target);
        } else {
            let file = stage_file(&dest, &mut Cursor::new(body), size, 0o600, created)?;
            let verb = if file.replaces() { "replace" } else { "create" };
            staged.push(file);
            self.action(verb, target);
        }
        Ok(())
    }

    /// Reads the live Secret and records what restoring `secret` changes.
    fn plan(&mut self, namespace: String, name: String, mut value: Value) -> Result<()> {
        let Mode::Cluster { client, server, .. } = &self.mode else {
            unreachable!("planned in cluster mode only")
        };
        value["metadata"]["namespace"] = Value::from(namespace.as_str());
        let secret: Secret = serde_json::from_value(value)
            .map_err(|_| coffer_core::forged_entry("a stored Secret is malformed", &name))?;
        let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let existing = self
            .handle
            .block_on(api.get_opt(&name))
            .map_err(|e| api_error(e, &format!("get Secret {namespace}/{name}"), server))?;
        let what = format!("{namespace}/{name}");
        let wanted = values(&secret);
        let (verb, had) = match &existing {
            Some(live) => ("replace", values(live)),
            None => ("create", BTreeMap::new()),
        };
        self.action(verb, format!("Secret {what}"));
        for (key, value) in &wanted {
            let action = match had.get(key) {
                None => "add-key",
                Some(v) if v == value => "keep-key",
                Some(_) => "change-key",
            };
            self.action(action, format!("{what}: {key}"));
        }
        for key in had.keys().filter(|k| !wanted.contains_key(*k)) {
            self.action("remove-key", format!("{what}: {key}"));
        }
        let Mode::Cluster { plans, .. } = &mut self.mode else {
            unreachable!()
        };
        plans.push(Plan {
            namespace,
            name,
            secret,
            existing,
        });
        Ok(())
    }

    fn apply(&self, client: &Client, server: &str, plans: &[Plan]) -> Result<()> {
        let pp = PostParams::default();
        let mut written: Vec<(&Plan, Secret)> = Vec::new();
        for plan in plans {
            let api: Api<Secret> = Api::namespaced(client.clone(), &plan.namespace);
            let what = format!("{}/{}", plan.namespace, plan.name);
            let result = match &plan.existing {
                None => self
                    .handle
                    .block_on(api.create(&pp, &plan.secret))
                    .map_err(|e| api_error(e, &format!("create Secret {what}"), server)),
                Some(live) => {
                    let mut secret = plan.secret.clone();
                    secret.metadata.resource_version = live.metadata.resource_version.clone();
                    self.handle
                        .block_on(api.replace(&plan.name, &pp, &secret))
                        .map_err(|e| api_error(e, &format!("replace Secret {what}"), server))
                }
            };
            match result {
                Ok(done) => {
                    tracing::info!(source = %self.source, secret = %what, "restored");
                    written.push((plan, done));
                }
                Err(e) => {
                    let undone = self.undo(client, written);
                    return Err(match undone {
                        Ok(0) => e,
                        Ok(n) => e.with_context(
                            "rolled back",
                            format!(
                                "the {n} Secret(s) this restore had already written are back as they were"
                            ),
                        ),
                        Err(undo) => e.with_context("rollback failed", undo),
                    });
                }
            }
        }
        Ok(())
    }

    /// Puts back what `written` changed, newest first; the count undone.
    fn undo(&self, client: &Client, written: Vec<(&Plan, Secret)>) -> std::result::Result<usize, String> {
        let mut failures = Vec::new();
        let n = written.len();
        for (plan, done) in written.into_iter().rev() {
            let api: Api<Secret> = Api::namespaced(client.clone(), &plan.namespace);
            let result = match &plan.existing {
                None => self
                    .handle
                    .block_on(api.delete(&plan.name, &DeleteParams::default()))
                    .map(|_| ()),
                Some(previous) => {
                    let mut previous = previous.clone();
                    previous.metadata.resource_version = done.metadata.resource_version;
                    previous.metadata.managed_fields = None;
                    self.handle
                        .block_on(api.replace(&plan.name, &PostParams::default(), &previous))
                        .map(|_| ())
                }
            };
            if let Err(e) = result {
                failures.push(format!(
                    "{}/{}: {}",
                    plan.namespace,
                    plan.name,
                    crate::error::chain(&e)
                ));
            }
        }
        if failures.is_empty() {
            Ok(n)
        } else {
            Err(failures.join("; "))
        }
    }

    fn report(&self) -> RestoreReport {
        let count = |a: &str| self.actions.iter().filter(|x| x.action == a).count();
        let summary = match &self.mode {
            Mode::Dir { root, .. } => {
                format!("{} Secret manifest(s) under {}", self.seen.len(), root.display())
            }
            Mode::Cluster { .. } => format!(
                "{} Secret(s): {} created, {} replaced; keys {} added, {} changed, {} kept, {} removed",
                self.seen.len(),
                count("create"),
                count("replace"),
                count("add-key"),
                count("change-key"),
                count("keep-key"),
                count("remove-key"),
            ),
        };
        RestoreReport {
            summary,
            actions: self.actions.clone(),
            ..Default::default()
        }
    }
}

/// Key → bytes of a Secret's `data` and `stringData`.
fn values(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.as_bytes().to_vec());
    }
    out
}

/// The namespace and file stem of an entry path `NAMESPACE/NAME.json`.
fn split_entry_path(path: &str) -> Result<(&str, &str)> {
    path.split_once('/')
        .and_then(|(ns, file)| Some((ns, file.strip_suffix(".json")?)))
        .filter(|(ns, stem)| valid_name(ns) && !stem.is_empty() && !stem.contains('/'))
        .ok_or_else(|| coffer_core::forged_entry("a `k8s` entry is not NAMESPACE/NAME.json", path))
}

/// Reads the stored Secret at `path`, exactly `size` bytes.
fn read_body(reader: &mut dyn Read, size: u64, path: &str) -> Result<Vec<u8>> {
    coffer_core::read_entry_body(reader, size, "a stored Secret", path)
}

/// The name inside a stored Secret, checked against the file `stem`.
fn secret_name<'v>(value: &'v Value, stem: &str, path: &str) -> Result<&'v str> {
    // The real name is inside; the file name is it, or its short form.
    value["metadata"]["name"]
        .as_str()
        .filter(|n| value["kind"] == "Secret" && valid_name(n) && file_stem(n) == stem)
        .ok_or_else(|| coffer_core::forged_entry("a stored Secret does not match its name", path))
}

impl Restorer for K8sRestorer {
    fn entry(&mut self, entry: RestoreEntry<'_>) -> Result<()> {
        check_relative_path(entry.path)?;
        let size = match entry.kind {
            RestoreEntryKind::File { size } if entry.area == Area::Secrets => size,
            _ => {
                return Err(coffer_core::forged_entry(
                    "a `k8s` source holds Secret files only",
                    entry.path,
                ));
            }
        };
        let (namespace, stem) = split_entry_path(entry.path)?;
        self.check_namespace(namespace, entry.path)?;
        if size > MAX_SIZE {
            return Err(coffer_core::forged_entry(
                "a stored Secret is implausibly large",
                entry.path,
            ));
        }
        if !self.seen.insert(entry.path.to_string()) {
            return Err(coffer_core::forged_entry("a Secret is stored twice", entry.path));
        }
        let body = read_body(entry.reader, size, entry.path)?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|_| coffer_core::forged_entry("a stored Secret is not JSON", entry.path))?;
        let name = secret_name(&value, stem, entry.path)?;
        let (namespace, name, stem) = (namespace.to_string(), name.to_string(), stem.to_string());
        match &self.mode {
            Mode::Dir { .. } => self.stage_manifest(&namespace, &stem, body, size),
            Mode::Cluster { namespace: into, .. } => {
                let into = into.clone().unwrap_or(namespace);
                self.plan(into, name, sanitize(&value))
            }
        }
    }

    fn finish(mut self: Box<Self>, commit: bool) -> Result<RestoreReport> {
        let report = self.report();
        let commit = commit && !self.dry_run;
        match std::mem::replace(
            &mut self.mode,
            Mode::Dir {
                root: PathBuf::new(),
                staged: Vec::new(),
                created: Vec::new(),
            },
        ) {
            Mode::Dir {
                staged, mut created, ..
            } => {
                if commit {
                    for file in staged {
                        file.commit()?;
                    }
                } else {
                    drop(staged);
                    remove_created(&mut created);
                }
            }
            Mode::Cluster {
                client,
                server,
                plans,
                ..
            } => {
                if commit {
                    self.apply(&client, &server, &plans)?;
                }
            }
        }
        Ok(report)
    }
}

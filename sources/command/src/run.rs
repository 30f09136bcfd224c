//! Running the configured programs: their environment, their stderr
//! (logged with secret values masked), their time limit.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use coffer_core::{Error, ErrorKind};

/// Variables every command gets from coffer's environment (when set).
const BASE_ENV: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER"];

/// Lines of stderr kept for an error message.
const TAIL_LINES: usize = 20;

/// A program and the environment it runs in.
#[derive(Clone)]
pub(crate) struct Program {
    /// What to run (a shell line is already `/bin/sh -c LINE`).
    pub(crate) argv: Vec<String>,
    /// The whole environment of the child.
    env: BTreeMap<String, OsString>,
    /// Values masked in its stderr: those of `env` and `pass-env`.
    secrets: Vec<String>,
    dir: Option<PathBuf>,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("argv", &self.argv)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("dir", &self.dir)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Program {
    /// `argv` with the base variables, `pass_env` taken from this process
    /// and `env` set.
    pub(crate) fn new(
        argv: Vec<String>,
        env: &BTreeMap<String, String>,
        pass_env: &[String],
        dir: Option<PathBuf>,
        timeout: Duration,
    ) -> Self {
        let mut vars = BTreeMap::new();
        let mut secrets = Vec::new();
        for name in BASE_ENV {
            if let Some(v) = std::env::var_os(name) {
                vars.insert(name.to_string(), v);
            }
        }
        for name in pass_env {
            if let Some(v) = std::env::var_os(name) {
                secrets.push(v.to_string_lossy().into_owned());
                vars.insert(name.clone(), v);
            }
        }
        for (name, value) in env {
            secrets.push(value.clone());
            vars.insert(name.clone(), value.into());
        }
        // Stderr is masked line by line, so a multi-line value (a PEM key,
        // a JSON credential) is masked by each of its lines too.
        let lines: Vec<String> = secrets
            .iter()
            .filter(|s| s.contains('\n'))
            .flat_map(|s| s.lines().map(|l| l.trim().to_string()).collect::<Vec<_>>())
            .collect();
        secrets.extend(lines);
        // Mask longer values first, so one that contains another is masked
        // whole; values too short to be secrets ("1", "on", "}") stay.
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Program {
            argv,
            env: vars,
            secrets,
            dir,
            timeout,
        }
    }

    /// The program's name for messages (its file name, never arguments).
    pub(crate) fn name(&self) -> String {
        let first = std::path::Path::new(&self.argv[0])
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.argv[0].clone());
        match first.as_str() {
            "sh" | "bash" if self.argv.get(1).is_some_and(|a| a == "-c") => "shell command".to_string(),
            _ => first,
        }
    }

    /// The command, in its own process group, stdout and stderr piped.
    pub(crate) fn command(&self, stdin: Stdio) -> std::process::Command {
        let mut c = std::process::Command::new(&self.argv[0]);
        c.args(&self.argv[1..])
            .env_clear()
            .envs(&self.env)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(dir) = &self.dir {
            c.current_dir(dir);
        }
        c
    }

    /// `line` with every secret value replaced by `***`.
    pub(crate) fn mask(&self, line: &str) -> String {
        let mut line = line.to_string();
        for s in &self.secrets {
            if line.contains(s.as_str()) {
                line = line.replace(s.as_str(), "***");
            }
        }
        line
    }

    /// Why the program could not start.
    pub(crate) fn start_error(&self, source: &str, err: std::io::Error) -> Error {
        let hint = match err.kind() {
            std::io::ErrorKind::NotFound => {
                "check that the program is installed and on PATH (or give its full path)"
            }
            std::io::ErrorKind::PermissionDenied => "check that the program is executable by coffer's user",
            _ => "check the source's `command`",
        };
        Error::io(format!("cannot start `{}`", self.name()), err)
            .with_context("source", source)
            .with_hint(hint)
    }

    /// The error for a run that did not succeed: its exit status (or the
    /// timeout) and the last lines of its stderr, masked.
    pub(crate) fn failure(&self, source: &str, what: &str, end: End, tail: &StderrTail) -> Error {
        let how = match end {
            End::TimedOut => format!(
                "did not finish within {} s and was killed",
                self.timeout.as_secs()
            ),
            End::Exited(status) => match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => "was killed by a signal".to_string(),
            },
        };
        let mut e = Error::new(ErrorKind::Unexpected, format!("{what} `{}` {how}", self.name()))
            .with_context("source", source);
        if !tail.is_empty() {
            e = e.with_context("stderr", tail.text());
        }
        let hint = match end {
            End::TimedOut => "raise the source's `timeout`, or find out why the command hangs",
            End::Exited(_) => "run the command by hand to see what fails; nothing of its output was kept",
        };
        e.with_hint(hint)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum End {
    Exited(ExitStatus),
    TimedOut,
}

/// The last lines of a program's stderr, already masked.
#[derive(Debug, Default)]
pub(crate) struct StderrTail(VecDeque<String>);

impl StderrTail {
    /// Logs one line of `program`'s stderr (masked) and keeps it.
    pub(crate) fn line(&mut self, program: &Program, source: &str, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_end();
        if text.trim().is_empty() {
            return;
        }
        let masked = coffer_core::printable(&program.mask(text)).into_owned();
        tracing::info!(source, program = program.name(), "stderr: {masked}");
        if self.0.len() == TAIL_LINES {
            self.0.pop_front();
        }
        self.0.push_back(masked);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn text(&self) -> String {
        self.0.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_stderr_and_absent_from_debug() {
        let env = BTreeMap::from([
            ("TOKEN".to_string(), "s3cr3t-value".to_string()),
            ("LEVEL".to_string(), "1".to_string()),
        ]);
        let p = Program::new(vec!["x".into()], &env, &[], None, Duration::from_secs(1));
        assert_eq!(
            p.mask("auth s3cr3t-value failed, level 1"),
            "auth *** failed, level 1"
        );
        assert!(!format!("{p:?}").contains("s3cr3t"));
        let mut tail = StderrTail::default();
        tail.line(&p, "src", b"token=s3cr3t-value\x1b[31m\n");
        assert_eq!(tail.text(), "token=***\\u{1b}[31m");
    }

    #[test]
    fn each_line_of_a_multi_line_secret_is_masked() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n}\n-----END PRIVATE KEY-----\n";
        let env = BTreeMap::from([("KEY".to_string(), pem.to_string())]);
        let p = Program::new(vec!["x".into()], &env, &[], None, Duration::from_secs(1));
        let mut tail = StderrTail::default();
        for line in pem.lines() {
            tail.line(&p, "src", format!("bad key line: {line}\n").as_bytes());
        }
        let shown = tail.text();
        for secret in [
            "MIIEvQIBADANBgkqhkiG9w0B",
            "AQEFAASCBKcwggSjAgEAAoIB",
            "BEGIN PRIVATE",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        // A line too short to be a secret stays readable.
        assert!(shown.contains("bad key line: }"), "{shown}");
    }

    #[test]
    fn the_environment_is_explicit() {
        let env = BTreeMap::from([("A".to_string(), "b".to_string())]);
        let p = Program::new(vec!["env".into()], &env, &[], None, Duration::from_secs(5));
        let out = p.command(Stdio::null()).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.lines().any(|l| l == "A=b"), "{text}");
        for line in text.lines() {
            let name = line.split('=').next().unwrap();
            assert!(
                name == "A" || BASE_ENV.contains(&name),
                "{line} leaked into the environment"
            );
        }
    }
}

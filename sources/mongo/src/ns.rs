//! Namespace selection and renaming on restore, as mongorestore's
//! `--nsInclude`, `--nsExclude`, `--nsFrom` / `--nsTo` do.
//!
//! Patterns are on `db.collection` of the *bundle* (before renaming). `*`
//! matches any run of characters (dots included). In `--ns-from` each `*`
//! captures what it matched, and the `*`s of the matching `--ns-to` are
//! replaced by the captures in order: `--ns-from 'issuer-directory.*'
//! --ns-to 'issuer-directory-staging.*'` moves a whole database. The first
//! `--ns-from` that matches wins; a namespace no pattern matches keeps its
//! name.
//!
//! The flags reach the restorer as its kind's options in
//! [`RestoreOptions::params`] (`ns-include`, `ns-exclude`, `ns-from`,
//! `ns-to`), each a list of patterns separated by newlines.
//!
//! [`RestoreOptions::params`]: coffer_core::RestoreOptions

use std::collections::BTreeMap;

use coffer_core::{Result, config_error};

/// A glob of literal parts separated by `*`.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    parts: Vec<String>,
}

impl Pattern {
    fn new(text: &str) -> Pattern {
        Pattern {
            text: text.to_string(),
            parts: text.split('*').map(str::to_string).collect(),
        }
    }

    fn stars(&self) -> usize {
        self.parts.len() - 1
    }

    /// The captures of the `*`s when `s` matches (leftmost-shortest).
    fn captures(&self, s: &str) -> Option<Vec<String>> {
        let first = &self.parts[0];
        let rest = s.strip_prefix(first.as_str())?;
        let mut caps = Vec::with_capacity(self.stars());
        match_parts(&self.parts[1..], rest, &mut caps).then_some(caps)
    }

    fn matches(&self, s: &str) -> bool {
        self.captures(s).is_some()
    }
}

/// Matches `s` against `*part0*part1…`: each part follows a star.
fn match_parts(parts: &[String], s: &str, caps: &mut Vec<String>) -> bool {
    let Some((part, rest_parts)) = parts.split_first() else {
        return s.is_empty();
    };
    if rest_parts.is_empty() {
        // The last star takes everything up to the final literal.
        return match s.strip_suffix(part.as_str()) {
            Some(cap) => {
                caps.push(cap.to_string());
                true
            }
            None => false,
        };
    }
    let mut from = 0;
    while let Some(i) = s[from..].find(part.as_str()) {
        let at = from + i;
        caps.push(s[..at].to_string());
        if match_parts(rest_parts, &s[at + part.len()..], caps) {
            return true;
        }
        caps.pop();
        // Step over one character (UTF-8 aware).
        from = at + s[at..].chars().next().map_or(1, char::len_utf8);
        if from > s.len() {
            break;
        }
    }
    false
}

/// The namespace rules of one restore.
#[derive(Debug, Clone, Default)]
pub(crate) struct NsRules {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
    renames: Vec<(Pattern, Pattern)>,
}

impl NsRules {
    /// Reads the rules from a restore's `params`, checking them.
    pub(crate) fn from_params(params: &BTreeMap<String, String>) -> Result<NsRules> {
        let list = |key: &str| -> Vec<String> {
            params
                .get(key)
                .map(|v| v.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
                .unwrap_or_default()
        };
        let (from, to) = (list("ns-from"), list("ns-to"));
        if from.len() != to.len() {
            return Err(
                config_error(format!("{} --ns-from but {} --ns-to", from.len(), to.len()))
                    .with_hint("give them in pairs: --ns-from 'app.*' --ns-to 'app-staging.*'"),
            );
        }
        let mut rules = NsRules {
            include: list("ns-include").iter().map(|p| Pattern::new(p)).collect(),
            exclude: list("ns-exclude").iter().map(|p| Pattern::new(p)).collect(),
            renames: Vec::new(),
        };
        for p in rules.include.iter().chain(&rules.exclude) {
            check_ns_pattern(&p.text, "--ns-include/--ns-exclude")?;
        }
        for (f, t) in from.iter().zip(&to) {
            let (f, t) = (Pattern::new(f), Pattern::new(t));
            if f.stars() != t.stars() {
                return Err(config_error(format!(
                    "--ns-from `{}` has {} `*` but --ns-to `{}` has {}",
                    f.text,
                    f.stars(),
                    t.text,
                    t.stars()
                ))
                .with_hint("each `*` of --ns-to takes what the matching `*` of --ns-from matched"));
            }
            rules.renames.push((f, t));
        }
        Ok(rules)
    }

    /// Where `db.coll` of the bundle goes: `None` when the include and
    /// exclude patterns leave it out, else the target `(db, coll)`.
    pub(crate) fn map(&self, db: &str, coll: &str) -> Result<Option<(String, String)>> {
        let ns = format!("{db}.{coll}");
        if !self.include.is_empty() && !self.include.iter().any(|p| p.matches(&ns)) {
            return Ok(None);
        }
        if self.exclude.iter().any(|p| p.matches(&ns)) {
            return Ok(None);
        }
        for (from, to) in &self.renames {
            let Some(caps) = from.captures(&ns) else { continue };
            let mut out = to.parts[0].clone();
            for (cap, part) in caps.iter().zip(&to.parts[1..]) {
                out.push_str(cap);
                out.push_str(part);
            }
            return match out.split_once('.') {
                Some((d, c)) if valid_db(d) && !c.is_empty() => Ok(Some((d.to_string(), c.to_string()))),
                _ => Err(config_error(format!(
                    "--ns-from `{}` --ns-to `{}` turns `{ns}` into `{out}`, not a valid `db.collection`",
                    from.text, to.text
                ))
                .with_hint(
                    "the target needs a database name (no `/\\. \"$`; MongoDB allows at most 63 bytes), a dot and \
                     a collection name (for a drill: a shorter --scratch-suffix)",
                )),
            };
        }
        Ok(Some((db.to_string(), coll.to_string())))
    }
}

fn valid_db(db: &str) -> bool {
    !db.is_empty() && db.len() < 64 && !db.contains(['/', '\\', '.', ' ', '"', '$', '\0'])
}

fn check_ns_pattern(p: &str, flag: &str) -> Result<()> {
    if !p.contains('.') {
        return Err(
            config_error(format!("{flag} `{p}` is not a `db.collection` pattern"))
                .with_hint("write e.g. `app.users`, `app.*` or `*.cache_*`"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pairs: &[(&str, &str)]) -> Result<NsRules> {
        let params = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NsRules::from_params(&params)
    }

    fn to(r: &NsRules, db: &str, c: &str) -> Option<String> {
        r.map(db, c).unwrap().map(|(d, c)| format!("{d}.{c}"))
    }

    #[test]
    fn include_exclude_and_rename() {
        let r = rules(&[
            ("ns-include", "issuer-directory.*\nother.keep"),
            ("ns-exclude", "*.cache_*"),
            ("ns-from", "issuer-directory.*"),
            ("ns-to", "issuer-directory-staging.*"),
        ])
        .unwrap();
        assert_eq!(
            to(&r, "issuer-directory", "issuers").as_deref(),
            Some("issuer-directory-staging.issuers")
        );
        assert_eq!(
            to(&r, "issuer-directory", "a.b c").as_deref(),
            Some("issuer-directory-staging.a.b c")
        );
        assert_eq!(to(&r, "issuer-directory", "cache_x"), None);
        assert_eq!(to(&r, "other", "keep").as_deref(), Some("other.keep"));
        assert_eq!(to(&r, "other", "drop"), None);
        assert_eq!(to(&rules(&[]).unwrap(), "a", "b").as_deref(), Some("a.b"));
    }

    #[test]
    fn several_captures_in_order() {
        let r = rules(&[("ns-from", "*.users_*"), ("ns-to", "archive_*.u_*")]).unwrap();
        assert_eq!(to(&r, "app", "users_2024").as_deref(), Some("archive_app.u_2024"));
        assert_eq!(to(&r, "app", "orders").as_deref(), Some("app.orders"));
        let r = rules(&[("ns-from", "a.*x*"), ("ns-to", "b.*-*")]).unwrap();
        assert_eq!(to(&r, "a", "1x2x3").as_deref(), Some("b.1-2x3"));
        let r = rules(&[("ns-from", "a.cafés"), ("ns-to", "b.cafés")]).unwrap();
        assert_eq!(to(&r, "a", "cafés").as_deref(), Some("b.cafés"));
    }

    #[test]
    fn rejects_bad_rules() {
        for bad in [
            vec![("ns-from", "a.*")],
            vec![("ns-from", "a.*"), ("ns-to", "b.c")],
            vec![("ns-include", "nodot")],
        ] {
            assert!(rules(&bad).is_err(), "{bad:?}");
        }
        let r = rules(&[("ns-from", "a.*"), ("ns-to", "*")]).unwrap();
        assert!(r.map("a", "x").is_err(), "no dot in the target");
    }
}

//! Connection strings: the password never leaves this module unredacted
//! except into the driver.

/// `uri` with the password of its `user:password@` part replaced by `***`
/// (and any `…Password=` query option), for logs, errors and manifests.
pub(crate) fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        // Not a URI: it may be anything, even a bare secret.
        return "<unparsable connection string>".to_string();
    };
    let (before_query, query) = match rest.find('?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    match before_query.rfind('@') {
        Some(at) => {
            let userinfo = &before_query[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str(&format!("{userinfo}@")),
            }
            out.push_str(&before_query[at + 1..]);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        let parts: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&parts.join("&"));
    }
    out
}

/// The password of `uri`'s `user:password@` part (percent-decoded), so it
/// can be scrubbed from driver error messages.
pub(crate) fn password(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let before_query = rest.split('?').next().unwrap_or(rest);
    let userinfo = &before_query[..before_query.rfind('@')?];
    let (_, pass) = userinfo.split_once(':')?;
    (!pass.is_empty()).then(|| percent_decode(pass))
}

/// The database named in `uri`'s path (`mongodb://h/db?…` → `db`), if any.
pub(crate) fn database(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let before_query = rest.split('?').next().unwrap_or(rest);
    let hosts_start = before_query.rfind('@').map_or(0, |i| i + 1);
    let (_, db) = before_query[hosts_start..].split_once('/')?;
    let db = percent_decode(db);
    (!db.is_empty()).then_some(db)
}

/// Removes every occurrence of the password (raw and as written in the
/// URI) from `text`.
pub(crate) fn scrub(text: &str, uri: &str) -> String {
    let mut out = text.to_string();
    if let Some(p) = password(uri) {
        out = out.replace(&p, "***");
    }
    if let Some(rest) = uri.split_once("://").map(|x| x.1)
        && let Some(at) = rest.split('?').next().and_then(|b| b.rfind('@'))
        && let Some((_, raw)) = rest[..at].split_once(':')
        && !raw.is_empty()
    {
        out = out.replace(raw, "***");
    }
    out.replace(uri, &redact(uri))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_only() {
        assert_eq!(
            redact("mongodb://app:s3cr%40t@db1:27017,db2/issuer?authSource=admin"),
            "mongodb://app:***@db1:27017,db2/issuer?authSource=admin"
        );
        assert_eq!(redact("mongodb://h:1/x"), "mongodb://h:1/x");
        assert_eq!(redact("mongodb://user@h"), "mongodb://user@h");
        assert_eq!(
            redact("mongodb+srv://u:p@c.example/?tlsCertificateKeyFilePassword=zz"),
            "mongodb+srv://u:***@c.example/?tlsCertificateKeyFilePassword=***"
        );
        assert_eq!(redact("hunter2"), "<unparsable connection string>");
    }

    #[test]
    fn finds_password_and_database() {
        assert_eq!(password("mongodb://app:s3cr%40t@h/db").as_deref(), Some("s3cr@t"));
        assert_eq!(password("mongodb://app@h/db"), None);
        assert_eq!(
            database("mongodb://app:p@h:1/issuer-directory?x=1").as_deref(),
            Some("issuer-directory")
        );
        assert_eq!(database("mongodb://h:1/"), None);
        assert_eq!(database("mongodb://h:1"), None);
        assert_eq!(database("mongodb://h:1/?directConnection=true"), None);
    }

    #[test]
    fn scrubs_messages() {
        let uri = "mongodb://app:s3cr%40t@h/db";
        let msg = format!("failed for {uri}: bad s3cr@t and s3cr%40t");
        let clean = scrub(&msg, uri);
        assert!(!clean.contains("s3cr"), "{clean}");
    }
}

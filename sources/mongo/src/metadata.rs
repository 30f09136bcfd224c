//! `<coll>.metadata.json` as mongodump writes it (canonical Extended JSON
//! v2, key order preserved) and collection-name escaping as mongodump
//! escapes file names (Go's `url.QueryEscape`, truncated past 238 bytes).

use coffer_core::{Error, ErrorKind, Result};
use mongodb::bson::{Bson, Document, spec::BinarySubtype};
use serde_json::{Map, Value};

/// What a collection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CollectionType {
    /// A regular collection: documents and indexes.
    Collection,
    /// A view: metadata only.
    View,
}

impl CollectionType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CollectionType::Collection => "collection",
            CollectionType::View => "view",
        }
    }
}

/// The metadata of one collection, as read from a bundle.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    /// `options` from `listCollections`.
    pub options: Document,
    /// Index specs from `listIndexes`, in order.
    pub indexes: Vec<Document>,
    /// The collection's name (absent in old dumps: taken from the file name).
    pub collection_name: Option<String>,
    /// `collection` or `view`.
    pub kind: CollectionType,
}

/// The `.metadata.json` text of a collection.
pub(crate) fn to_json(
    name: &str,
    kind: CollectionType,
    options: &Document,
    indexes: &[Document],
    uuid: Option<&[u8]>,
) -> String {
    let mut m = Map::new();
    m.insert(
        "options".into(),
        Bson::Document(options.clone()).into_canonical_extjson(),
    );
    m.insert(
        "indexes".into(),
        Value::Array(
            indexes
                .iter()
                .map(|d| Bson::Document(d.clone()).into_canonical_extjson())
                .collect(),
        ),
    );
    if let Some(uuid) = uuid {
        m.insert("uuid".into(), Value::String(hex::encode(uuid)));
    }
    m.insert("collectionName".into(), Value::String(name.to_string()));
    m.insert("type".into(), Value::String(kind.as_str().to_string()));
    Value::Object(m).to_string()
}

/// Parses a `.metadata.json` (mongodump's or ours).
pub(crate) fn parse(text: &[u8], path: &str) -> Result<Metadata> {
    let bad = |what: String| {
        Error::new(
            ErrorKind::Integrity,
            format!("malformed collection metadata: {what}"),
        )
        .with_context("path", path)
        .with_hint("the bundle or dump is damaged; restore another snapshot")
    };
    let value: Value = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(bad("not a JSON object".into()));
    };
    let doc = |key: &str| -> Result<Document> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(Document::new()),
            Some(v) => match Bson::try_from(v.clone()) {
                Ok(Bson::Document(d)) => Ok(d),
                Ok(_) => Err(bad(format!("`{key}` is not an object"))),
                Err(e) => Err(bad(format!("`{key}`: {e}"))),
            },
        }
    };
    let options = doc("options")?;
    let indexes = match map.get("indexes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match Bson::try_from(v.clone()) {
                Ok(Bson::Document(d)) => Ok(d),
                Ok(_) => Err(bad("an index is not an object".into())),
                Err(e) => Err(bad(format!("index: {e}"))),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad("`indexes` is not an array".into())),
    };
    let kind = match map.get("type").and_then(Value::as_str) {
        Some("view") => CollectionType::View,
        None | Some("collection") => {
            if options.contains_key("viewOn") {
                CollectionType::View
            } else {
                CollectionType::Collection
            }
        }
        Some(other) => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("collections of type `{other}` cannot be restored yet"),
            )
            .with_context("path", path));
        }
    };
    Ok(Metadata {
        options,
        indexes,
        collection_name: map
            .get("collectionName")
            .and_then(Value::as_str)
            .map(str::to_string),
        kind,
    })
}

/// Index options a server of 3.4 or later accepts; a legacy (`v: 1` or
/// older) spec loses any other, as mongorestore's `--convertLegacyIndexes`
/// does.
const INDEX_OPTIONS: [&str; 27] = [
    "v",
    "key",
    "name",
    "ns",
    "background",
    "unique",
    "sparse",
    "expireAfterSeconds",
    "partialFilterExpression",
    "storageEngine",
    "weights",
    "default_language",
    "language_override",
    "textIndexVersion",
    "2dsphereIndexVersion",
    "bits",
    "min",
    "max",
    "bucketSize",
    "collation",
    "wildcardProjection",
    "hidden",
    "prepareUnique",
    "columnstoreProjection",
    "clustered",
    "dropDups",
    "coarsestIndexedLevel",
];

/// An index spec of a dump as `createIndexes` takes it: without the
/// obsolete `ns`; key values that servers before 3.4 read as ascending
/// (`0`, `""`, `true`, …) written as `1`; a legacy spec (`v` < 2) without
/// options newer servers refuse (e.g. `safe`). A valid modern spec is
/// unchanged. Conversions are logged.
pub(crate) fn index_for_create(spec: &Document, ns: &str) -> Document {
    let legacy = match spec.get("v") {
        Some(Bson::Int32(v)) => *v < 2,
        Some(Bson::Int64(v)) => *v < 2,
        Some(Bson::Double(v)) => *v < 2.0,
        _ => false,
    };
    let name = spec.get_str("name").unwrap_or("?").to_string();
    let mut out = Document::new();
    for (k, v) in spec {
        match k.as_str() {
            "ns" | "dropDups" => {}
            "key" => {
                let Bson::Document(key) = v else {
                    out.insert(k.clone(), v.clone());
                    continue;
                };
                let mut fixed = Document::new();
                for (field, value) in key {
                    let ascending = match value {
                        Bson::Int32(0) | Bson::Int64(0) => true,
                        Bson::Double(d) => *d == 0.0 || d.is_nan(),
                        Bson::Decimal128(d) => {
                            d.to_string().trim_start_matches('-').parse::<f64>() == Ok(0.0)
                        }
                        Bson::String(s) => s.is_empty(),
                        Bson::Int32(_) | Bson::Int64(_) => false,
                        _ => true,
                    };
                    if ascending {
                        tracing::warn!(ns, index = %name, field = %field, "converted a legacy index key value to 1");
                        fixed.insert(field.clone(), 1);
                    } else {
                        fixed.insert(field.clone(), value.clone());
                    }
                }
                out.insert(k.clone(), fixed);
            }
            other if legacy && !INDEX_OPTIONS.contains(&other) => {
                tracing::warn!(ns, index = %name, option = other, "dropped an option of a legacy index");
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// The UUID bytes of a `listCollections` entry (`info.uuid`).
pub(crate) fn uuid_of(spec: &Document) -> Option<Vec<u8>> {
    match spec.get_document("info").ok()?.get("uuid")? {
        Bson::Binary(b) if b.subtype == BinarySubtype::Uuid => Some(b.bytes.clone()),
        _ => None,
    }
}

/// Escaped names longer than this are truncated, as mongodump does.
const MAX_ESCAPED_LEN: usize = 238;
/// How much of an over-long escaped name mongodump keeps.
const TRUNCATED_LEN: usize = 208;

/// Escapes a collection name for a file name exactly as mongodump 100.x
/// does, so mongorestore reads it back with `url.QueryUnescape`: Go's
/// `url.QueryEscape` (everything but `A-Za-z0-9-_.~` percent-encoded byte
/// by byte in upper-case hex, a space as `+`); an escaped name over 238
/// bytes becomes its first 208 bytes, `%24` and the unpadded base64url of
/// the SHA-1 of the raw name (the real name is then read from the
/// metadata's `collectionName`).
pub(crate) fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_ESCAPED_LEN {
        use base64::Engine as _;
        use sha1::Digest as _;
        let hash = sha1::Sha1::digest(name.as_bytes());
        out.truncate(TRUNCATED_LEN);
        out.push_str("%24");
        out.push_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash));
    }
    out
}

/// Reverses [`escape_name`] as Go's `url.QueryUnescape` does (`+` is a
/// space); `None` for a malformed escape or a truncated long name's stem
/// that does not decode to UTF-8.
pub(crate) fn unescape_name(file: &str) -> Option<String> {
    let bytes = file.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let h = hex(*bytes.get(i + 1)?)?;
                let l = hex(*bytes.get(i + 2)?)?;
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn escapes_like_mongodump() {
        // Go's url.QueryEscape, as mongodump 100.x writes file names.
        for (name, file) in [
            ("cafés", "caf%C3%A9s"),
            ("café %+", "caf%C3%A9+%25%2B"),
            ("odd types", "odd+types"),
            ("a$b&c=d:e@f", "a%24b%26c%3Dd%3Ae%40f"),
            ("a b%c/d", "a+b%25c%2Fd"),
            ("x.y-z_~", "x.y-z_~"),
        ] {
            assert_eq!(escape_name(name), file, "{name}");
            assert_eq!(unescape_name(file).as_deref(), Some(name), "{file}");
        }
        assert_eq!(unescape_name("😀 ?#").as_deref(), Some("😀 ?#"));
        assert!(unescape_name("bad%zz").is_none());
    }

    #[test]
    fn long_names_are_truncated_like_mongodump() {
        // The name and file of the real mongodump fixture `longcollectionname`.
        let name = format!(
            "a{}LongCollectionNameConsistingOfExactlyTwoHundredAndFortySevenCharacters",
            "Very".repeat(44)
        );
        assert_eq!(name.len(), 247);
        let file = format!(
            "a{}LongCollectionNameConsistingOfE%24xFO0VquRn7cg3QooSZD5sglTddU",
            "Very".repeat(44)
        );
        assert_eq!(escape_name(&name), file);
        assert_eq!(file.len(), 238);
        // Exactly 238 escaped bytes: kept whole.
        let edge = "x".repeat(238);
        assert_eq!(escape_name(&edge), edge);
        assert_eq!(escape_name(&"x".repeat(239)).len(), 238);
    }

    #[test]
    fn json_keeps_order_and_types() {
        let idx = vec![doc! { "v": 2, "key": { "b": 1, "a": -1.0 }, "name": "b_1_a_-1", "unique": true }];
        let text = to_json("c", CollectionType::Collection, &doc! {}, &idx, Some(&[0xab; 16]));
        assert_eq!(
            text,
            r#"{"options":{},"indexes":[{"v":{"$numberInt":"2"},"key":{"b":{"$numberInt":"1"},"a":{"$numberDouble":"-1.0"}},"name":"b_1_a_-1","unique":true}],"uuid":"abababababababababababababababab","collectionName":"c","type":"collection"}"#
        );
        let back = parse(text.as_bytes(), "c.metadata.json").unwrap();
        assert_eq!(back.indexes, idx);
        assert_eq!(back.kind, CollectionType::Collection);
        assert_eq!(back.collection_name.as_deref(), Some("c"));
    }

    #[test]
    fn converts_legacy_indexes_only() {
        let modern = doc! { "v": 2, "key": { "a": -1, "t": "text", "h": "hashed", "d": 1.5 }, "name": "x", "unique": true, "custom": 1 };
        assert_eq!(index_for_create(&modern, "a.b"), modern);
        let text = br#"{"indexes":[{"v":{"$numberInt":"1"},"key":{"a":{"$numberDouble":"1.0"},"b":true,"c":{"$numberDecimal":"0"},"d":"","e":{"$numberInt":"0"}},"name":"a_1_b_true","ns":"indextest.test_collection","safe":true}]}"#;
        let m = parse(text, "x.metadata.json").unwrap();
        assert_eq!(
            index_for_create(&m.indexes[0], "indextest.test_collection"),
            doc! { "v": 1, "key": { "a": 1.0, "b": 1, "c": 1, "d": 1, "e": 1 }, "name": "a_1_b_true" }
        );
    }

    #[test]
    fn reads_mongodump_metadata() {
        let text = br#"{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"},{"v":{"$numberInt":"2"},"key":{"f":{"$numberDouble":"1.0"}},"name":"f_1"}],"uuid":"0679db720f4944de90ae27472664e94a","collectionName":"foo"}"#;
        let m = parse(text, "foo.metadata.json").unwrap();
        assert_eq!(m.indexes.len(), 2);
        assert_eq!(m.indexes[1].get_document("key").unwrap(), &doc! { "f": 1.0 });
    }
}

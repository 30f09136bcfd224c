//! What of a Secret is worth restoring.

use serde_json::Value;

/// Server-set metadata a restore must not send back.
const DROPPED_METADATA: [&str; 9] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "ownerReferences",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The client-side apply annotation: a second full copy of the Secret.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `secret` (as the API returns it) reduced to what a restore recreates:
/// `apiVersion`, `kind`, `type`, `data`, `stringData`, `immutable`, and
/// the metadata `name`, `namespace`, `labels`, `annotations` (without the
/// last-applied one), `finalizers`. Everything else is dropped.
///
/// ```
/// let s = serde_json::json!({
///     "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
///     "metadata": {"name": "db", "namespace": "app", "uid": "x", "resourceVersion": "7",
///                  "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "a"}},
///     "data": {"password": "aHVudGVyMg=="}, "status": {}
/// });
/// let clean = coffer_source_k8s::sanitize(&s);
/// assert_eq!(clean["metadata"], serde_json::json!({"name": "db", "namespace": "app", "annotations": {"team": "a"}}));
/// assert_eq!(clean["data"]["password"], "aHVudGVyMg==");
/// assert!(clean.get("status").is_none());
/// ```
pub fn sanitize(secret: &Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("apiVersion".into(), Value::from("v1"));
    out.insert("kind".into(), Value::from("Secret"));
    let mut meta = secret["metadata"].as_object().cloned().unwrap_or_default();
    for field in DROPPED_METADATA {
        meta.remove(field);
    }
    meta.retain(|k, _| {
        matches!(
            k.as_str(),
            "name" | "namespace" | "labels" | "annotations" | "finalizers"
        )
    });
    if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.remove("annotations");
        }
    }
    out.insert("metadata".into(), Value::Object(meta));
    for field in ["type", "immutable", "data", "stringData"] {
        if let Some(v) = secret.get(field).filter(|v| !v.is_null()) {
            out.insert(field.into(), v.clone());
        }
    }
    Value::Object(out)
}

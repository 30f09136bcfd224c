//! A stand-in Kubernetes API server for the `k8s` source's tests.
//!
//! No Kubernetes API server can be installed on the test machines, so this
//! serves the part of the real API the source and `kubectl` use, with the
//! real paths, verbs, JSON shapes and status codes: discovery (`/version`,
//! `/api`, `/apis`, `/api/v1`), `GET`/`LIST` (with `labelSelector`),
//! `POST`, `PUT` (optimistic concurrency on `resourceVersion`: 409
//! `Conflict`), `PATCH` (merge) and `DELETE` of Secrets; `Status` bodies
//! for 401, 403, 404 and 409; bearer-token auth over TLS with a fresh
//! self-signed CA (given to clients in the kubeconfig's
//! `certificate-authority-data`). Like the real server it turns
//! `stringData` into base64 `data` and sets `uid`, `resourceVersion`,
//! `creationTimestamp` and `managedFields` on every write.
//!
//! Tokens: [`ADMIN_TOKEN`] may do everything, [`READER_TOKEN`] only read
//! (writes get 403), anything else gets 401.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// A token with every right.
pub const ADMIN_TOKEN: &str = "coffer-test-admin-7c1d";
/// A token that may get and list, but not write.
pub const READER_TOKEN: &str = "coffer-test-reader-52ab";

type Key = (String, String);

#[derive(Default)]
struct State {
    secrets: BTreeMap<Key, Value>,
    version: u64,
    /// Secrets whose next GET is followed by a write from "someone else".
    bump_after_get: BTreeSet<Key>,
    /// `METHOD path` of every request, in order.
    requests: Vec<String>,
    /// Every DELETE fails with 500 (a cluster refusing a cleanup).
    fail_deletes: bool,
}

impl State {
    /// Stores `secret` as the server does on a write.
    fn store(&mut self, ns: &str, mut secret: Value, previous: Option<&Value>) -> Value {
        self.version += 1;
        if let Some(string_data) = secret.as_object_mut().and_then(|o| o.remove("stringData"))
            && let Some(map) = string_data.as_object()
        {
            for (k, v) in map {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
                secret["data"][k] = json!(encoded);
            }
        }
        let name = secret["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let meta = &mut secret["metadata"];
        meta["namespace"] = json!(ns);
        meta["resourceVersion"] = json!(self.version.to_string());
        let keep =
            |field: &str, default: Value| previous.map_or(default.clone(), |p| p["metadata"][field].clone());
        meta["uid"] = keep(
            "uid",
            json!(format!("6f1c2a9e-0000-4000-8000-{:012}", self.version)),
        );
        meta["creationTimestamp"] = keep("creationTimestamp", json!("2026-12-01T10:00:00Z"));
        meta["managedFields"] = json!([{
            "manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
            "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}
        }]);
        if secret.get("type").is_none() {
            secret["type"] = json!("Opaque");
        }
        secret["apiVersion"] = json!("v1");
        secret["kind"] = json!("Secret");
        self.secrets.insert((ns.to_string(), name), secret.clone());
        secret
    }
}

/// A running stand-in API server on 127.0.0.1; stopped when dropped.
pub struct K8sServer {
    /// Its port.
    pub port: u16,
    ca_pem: String,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl K8sServer {
    /// Starts a server with a new CA and no Secrets.
    pub fn start() -> K8sServer {
        let (ca_pem, tls) = tls_config();
        let state = Arc::new(Mutex::new(State::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread =
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
                loop {
                    let tcp = tokio::select! {
                        _ = &mut rx => return,
                        conn = listener.accept() => match conn { Ok((tcp, _)) => tcp, Err(_) => continue },
                    };
                    let (acceptor, st) = (acceptor.clone(), st.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let service = hyper::service::service_fn(move |req| handle(req, st.clone()));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
            });
        K8sServer {
            port,
            ca_pem,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Writes a kubeconfig for this server (context `test`, namespace
    /// `default`) authenticating with `token` to `dir/name`.
    pub fn kubeconfig(&self, dir: &Path, name: &str, token: &str) -> PathBuf {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n    \
                 certificate-authority-data: {ca}\nusers:\n- name: coffer\n  user:\n    token: {token}\n\
                 contexts:\n- name: test\n  context:\n    cluster: standin\n    user: coffer\n    namespace: default\n\
                 current-context: test\n",
                self.url()
            ),
        )
        .expect("write kubeconfig");
        path
    }

    /// Creates or replaces a Secret as a client's write would.
    pub fn put(&self, secret: Value) -> Value {
        let ns = secret["metadata"]["namespace"]
            .as_str()
            .expect("namespace")
            .to_string();
        let name = secret["metadata"]["name"].as_str().expect("name").to_string();
        let mut st = self.state.lock().unwrap();
        let previous = st.secrets.get(&(ns.clone(), name)).cloned();
        st.store(&ns, secret, previous.as_ref())
    }

    /// The stored Secret, as the API returns it.
    pub fn get(&self, ns: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .secrets
            .get(&(ns.into(), name.into()))
            .cloned()
    }

    /// Removes a Secret.
    pub fn delete(&self, ns: &str, name: &str) {
        self.state
            .lock()
            .unwrap()
            .secrets
            .remove(&(ns.into(), name.into()));
    }

    /// Names of the Secrets in `ns`.
    pub fn names(&self, ns: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.secrets
            .keys()
            .filter(|(n, _)| n == ns)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// After the next GET of this Secret, someone else changes it (its
    /// `resourceVersion` moves on), as a concurrent writer would.
    pub fn change_after_next_get(&self, ns: &str, name: &str) {
        self.state
            .lock()
            .unwrap()
            .bump_after_get
            .insert((ns.into(), name.into()));
    }

    /// From now on every DELETE of a Secret fails with 500.
    pub fn fail_deletes(&self) {
        self.state.lock().unwrap().fail_deletes = true;
    }

    /// `METHOD /path` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for K8sServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A new CA (PEM) and a server config for 127.0.0.1 signed by it.
fn tls_config() -> (String, rustls::ServerConfig) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.distinguished_name
        .push(DnType::CommonName, "coffer stand-in CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("leaf");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .expect("server cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca_cert.pem(), config)
}

type Reply = Response<Full<Bytes>>;

fn reply(code: u16, body: &Value) -> Reply {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn status(code: u16, reason: &str, message: String, name: &str) -> Reply {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    if !name.is_empty() {
        body["details"] = json!({"name": name, "kind": "secrets"});
    }
    reply(code, &body)
}

fn not_found(name: &str) -> Reply {
    status(404, "NotFound", format!("secrets \"{name}\" not found"), name)
}

/// `%XX` and `+` decoded.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `labels` match an equality-based selector (`a=b,c!=d,e,!f`).
fn selected(labels: &Value, selector: &str) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels[k.trim()].as_str() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                labels[k.trim()].as_str() == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                labels.get(k).is_none()
            } else {
                labels.get(term).is_some()
            }
        })
}

/// JSON merge of `patch` into `dst` (`null` deletes).
fn merge(dst: &mut Value, patch: &Value) {
    match (dst, patch) {
        (Value::Object(d), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    d.remove(k);
                } else {
                    merge(d.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (d, p) => *d = p.clone(),
    }
}

async fn handle(req: Request<hyper::body::Incoming>, state: Arc<Mutex<State>>) -> Result<Reply, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (decode(k), decode(v))))
        .collect();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut st = state.lock().unwrap();
    st.requests.push(format!("{method} {path}"));
    let writer = match auth.strip_prefix("Bearer ") {
        Some(ADMIN_TOKEN) => true,
        Some(READER_TOKEN) => false,
        _ => return Ok(status(401, "Unauthorized", "Unauthorized".into(), "")),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let r = match (method.as_str(), segments.as_slice()) {
        ("GET", ["version"]) => reply(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}),
        ),
        ("GET", ["api"]) => reply(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        ("GET", ["apis"]) => reply(
            200,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        ),
        ("GET", ["api", "v1"]) => reply(
            200,
            &json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [{
                "name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret",
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
            }]}),
        ),
        ("GET", ["api", "v1", "namespaces", ns]) => reply(
            200,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}),
        ),
        (_, ["api", "v1", "namespaces", ns, "secrets", rest @ ..]) => {
            let ns = ns.to_string();
            let verb = match (method.as_str(), rest) {
                ("GET", [_]) => "get",
                ("GET", []) => "list",
                ("POST", []) => "create",
                ("PUT", [_]) => "update",
                ("PATCH", [_]) => "patch",
                ("DELETE", [_]) => "delete",
                _ => "",
            };
            if !writer && !matches!(verb, "get" | "list") {
                let name = rest.first().copied().unwrap_or("");
                let what = if name.is_empty() {
                    "secrets".to_string()
                } else {
                    format!("secrets \"{name}\"")
                };
                return Ok(status(
                    403,
                    "Forbidden",
                    format!(
                        "{what} is forbidden: User \"system:serviceaccount:coffer:reader\" cannot {verb} \
                         resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
                    ),
                    name,
                ));
            }
            secrets(&mut st, &method, &ns, rest, &query, &body)
        }
        _ => reply(
            404,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "the server could not find the requested resource", "reason": "NotFound",
                    "details": {}, "code": 404}),
        ),
    };
    Ok(r)
}

fn secrets(
    st: &mut State,
    method: &str,
    ns: &str,
    rest: &[&str],
    query: &BTreeMap<String, String>,
    body: &[u8],
) -> Reply {
    let parsed = || serde_json::from_slice::<Value>(body);
    match (method, rest) {
        ("GET", [name]) => {
            let key = (ns.to_string(), name.to_string());
            let Some(found) = st.secrets.get(&key).cloned() else {
                return not_found(name);
            };
            if st.bump_after_get.remove(&key) {
                let mut changed = found.clone();
                changed["data"]["changed-by-someone-else"] = json!("eWVz");
                st.store(ns, changed, Some(&found));
            }
            reply(200, &found)
        }
        ("GET", []) => {
            let selector = query.get("labelSelector").cloned().unwrap_or_default();
            let items: Vec<Value> = st
                .secrets
                .iter()
                .filter(|((n, _), s)| n == ns && selected(&s["metadata"]["labels"], &selector))
                .map(|(_, s)| s.clone())
                .collect();
            reply(
                200,
                &json!({"kind": "SecretList", "apiVersion": "v1",
                        "metadata": {"resourceVersion": st.version.to_string()}, "items": items}),
            )
        }
        ("POST", []) => {
            let Ok(secret) = parsed() else {
                return status(400, "BadRequest", "the body is not a Secret".into(), "");
            };
            let Some(name) = secret["metadata"]["name"].as_str().map(str::to_owned) else {
                return status(
                    422,
                    "Invalid",
                    "Secret \"\" is invalid: metadata.name: Required value".into(),
                    "",
                );
            };
            if st.secrets.contains_key(&(ns.to_string(), name.clone())) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("secrets \"{name}\" already exists"),
                    &name,
                );
            }
            reply(201, &st.store(ns, secret, None))
        }
        ("PUT", [name]) => {
            let Ok(secret) = parsed() else {
                return status(400, "BadRequest", "the body is not a Secret".into(), "");
            };
            let key = (ns.to_string(), name.to_string());
            let Some(current) = st.secrets.get(&key).cloned() else {
                return not_found(name);
            };
            if secret["metadata"]["name"].as_str() != Some(*name) {
                return status(
                    400,
                    "BadRequest",
                    "the name of the object does not match the name on the URL".into(),
                    name,
                );
            }
            let sent = &secret["metadata"]["resourceVersion"];
            if !sent.is_null() && sent != &current["metadata"]["resourceVersion"] {
                return status(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on secrets \"{name}\": the object has been modified; \
                         please apply your changes to the latest version and try again"
                    ),
                    name,
                );
            }
            reply(200, &st.store(ns, secret, Some(&current)))
        }
        ("PATCH", [name]) => {
            let key = (ns.to_string(), name.to_string());
            let Some(current) = st.secrets.get(&key).cloned() else {
                return not_found(name);
            };
            let Ok(patch) = parsed() else {
                return status(400, "BadRequest", "the body is not a patch".into(), name);
            };
            let mut merged = current.clone();
            merge(&mut merged, &patch);
            reply(200, &st.store(ns, merged, Some(&current)))
        }
        ("DELETE", [_]) if st.fail_deletes => status(
            500,
            "InternalError",
            "deletes are failing (test switch)".into(),
            "",
        ),
        ("DELETE", [name]) => match st.secrets.remove(&(ns.to_string(), name.to_string())) {
            Some(_) => reply(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "kind": "secrets"}}),
            ),
            None => not_found(name),
        },
        _ => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method".into(),
            "",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_decoding() {
        let labels = json!({"app": "issuer-directory", "tier": "db"});
        assert!(selected(&labels, "app=issuer-directory"));
        assert!(selected(&labels, "app==issuer-directory,tier"));
        assert!(!selected(&labels, "app=issuer-directory,tier!=db"));
        assert!(selected(&labels, "!missing"));
        assert!(!selected(&Value::Null, "app=x"));
        assert_eq!(
            decode("app%3Dissuer-directory%2Ctier"),
            "app=issuer-directory,tier"
        );
    }
}

//! Against a real moto_server: refused credentials (authentication
//! enforced) and S3 Object Lock.

use coffer_e2e::moto_server as common;

use std::path::Path;
use std::time::{Duration, Instant};

use coffer_core::{ByteStream, Bytes, ErrorKind, PutOptions, Registry, Sink, SinkExt, format::SnapshotId};
use coffer_sink_s3::{LockMode, ObjectLockConfig, S3Sink, S3SinkConfig};
use common::MotoServer;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};

const BUCKET: &str = "coffer-test";

fn body(len: usize) -> ByteStream {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<coffer_core::Result<Bytes>> = data
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks).boxed()
}

fn registry() -> Registry {
    let mut reg = Registry::new();
    coffer_sink_s3::register(&mut reg);
    reg
}

/// The sink as the CLI builds it from a `[sink.NAME]` table (with the
/// retry and timeout wrappers).
fn from_table(text: &str) -> std::sync::Arc<dyn Sink> {
    let table: coffer_core::toml::Table = text.parse().unwrap();
    registry()
        .sink_from_config("s3", "offsite", table, Path::new("."), None)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_clearly_in_bounded_time_and_write_nothing() {
    let Some(moto) = MotoServer::start() else { return };
    moto.create_bucket(BUCKET);
    let (key_id, secret) = moto.enforce_auth();
    let good = S3Sink::new(
        &S3SinkConfig::new(BUCKET)
            .with_prefix("auth")
            .with_endpoint(moto.endpoint())
            .with_region("us-east-1")
            .with_credentials(&key_id, &secret),
    )
    .unwrap();
    // Authentication is really enforced: moto's own dummy keys are refused…
    let dummy = S3Sink::new(
        &S3SinkConfig::new(BUCKET)
            .with_endpoint(moto.endpoint())
            .with_credentials("test", "test"),
    )
    .unwrap();
    let err = dummy.list("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err:?}");
    // …and the right key pair works.
    assert!(good.list("").await.unwrap().is_empty());

    const WRONG: &str = "wrong-secret-Hunter2-0123456789abcdefghij";
    let bad = from_table(&format!(
        "bucket = \"{BUCKET}\"\nprefix = \"auth\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
         access-key-id = \"{key_id}\"\nsecret-access-key = \"{WRONG}\"\npart-size-mib = 5",
        moto.endpoint()
    ));
    let id = SnapshotId::new(Timestamp::now());
    let started = Instant::now();
    let mut errors = vec![
        bad.put_bytes(&id.index_key(), Bytes::from_static(b"{}"), PutOptions::create())
            .await
            .unwrap_err(),
        // Larger than one part: a multipart upload.
        bad.put(&id.object_key(), body(7 << 20), PutOptions::create())
            .await
            .unwrap_err(),
        bad.list("").await.unwrap_err(),
    ];
    match bad.get(&id.index_key()).await {
        Err(e) => errors.push(e),
        Ok(_) => panic!("a get with a wrong secret succeeded"),
    }
    // Not retried (a permission error is not temporary): fails at once.
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    for err in &errors {
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err:?}");
        assert!(!err.is_temporary(), "{err:?}");
        let hint = err.hint().unwrap_or_default();
        assert!(hint.contains("check the credentials"), "{err:?}");
        let shown = format!("{err} {err:?} {hint}");
        assert!(!shown.contains(WRONG), "the secret leaked: {shown}");
    }
    // The server's reason is in the message (a HEAD answer has no body).
    assert!(
        errors[0].to_string().contains("SignatureDoesNotMatch"),
        "{}",
        errors[0]
    );
    // An unknown access key id is refused the same way.
    let unknown = S3Sink::new(
        &S3SinkConfig::new(BUCKET)
            .with_prefix("auth")
            .with_endpoint(moto.endpoint())
            .with_credentials("AKIAUNKNOWNUNKNOWN00", &secret),
    )
    .unwrap();
    let err = unknown
        .put_bytes("a", Bytes::from_static(b"x"), PutOptions::create())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err:?}");
    assert!(err.to_string().contains("InvalidAccessKeyId"), "{err}");
    // Nothing was written, and no multipart upload was left behind.
    assert!(good.list("").await.unwrap().is_empty());
    let n = good
        .put(&id.object_key(), body(7 << 20), PutOptions::create())
        .await
        .unwrap();
    assert_eq!(good.list("").await.unwrap().len(), 1);
    assert_eq!(n, 7 << 20);
}

/// The lock headers moto reports for `key` (HeadObject):
/// `(x-amz-object-lock-mode, x-amz-object-lock-retain-until-date)`.
fn lock_of(moto: &MotoServer, bucket: &str, key: &str) -> (Option<String>, Option<String>) {
    let (status, headers) = moto.head_object(bucket, key);
    assert_eq!(status, 200, "HEAD {key}: {headers:?}");
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    (
        get("x-amz-object-lock-mode"),
        get("x-amz-object-lock-retain-until-date"),
    )
}

/// The time of a snapshot id, as the sink reads it from the key.
fn id_time(id: &SnapshotId) -> Timestamp {
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", &id.as_str()[..15])
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_is_set_on_snapshot_objects_and_locked_versions_cannot_be_deleted() {
    let Some(moto) = MotoServer::start() else { return };
    moto.create_locked_bucket("locked");
    let sink = S3Sink::new(
        &S3SinkConfig::new("locked")
            .with_endpoint(moto.endpoint())
            .with_region("us-east-1")
            .with_credentials("test", "test")
            .with_parts(5, 2)
            .with_object_lock(ObjectLockConfig::days(LockMode::Governance, 3)),
    )
    .unwrap();
    let id = SnapshotId::new(Timestamp::now());
    let until = (id_time(&id) + SignedDuration::from_hours(72))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    sink.put_bytes(
        &id.object_key(),
        Bytes::from(vec![7u8; 1000]),
        PutOptions::create(),
    )
    .await
    .unwrap();
    sink.put_bytes(&id.index_key(), Bytes::from_static(b"{}"), PutOptions::create())
        .await
        .unwrap();
    sink.put_bytes(
        &id.signature_key(),
        Bytes::from_static(b"{}"),
        PutOptions::create(),
    )
    .await
    .unwrap();
    for key in [id.object_key(), id.index_key(), id.signature_key()] {
        assert_eq!(
            lock_of(&moto, "locked", &key),
            (Some("GOVERNANCE".into()), Some(until.clone())),
            "{key}"
        );
    }
    // Lock files and pins are rewritten and deleted by coffer: never locked.
    sink.put_bytes(
        "locks/shared-1.json",
        Bytes::from_static(b"{}"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    sink.put_bytes(
        &format!("{id}.pin"),
        Bytes::from_static(b"{}"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(lock_of(&moto, "locked", "locks/shared-1.json"), (None, None));
    assert_eq!(lock_of(&moto, "locked", &format!("{id}.pin")), (None, None));
    // A snapshot whose date is long past (copied late): nothing to lock.
    let old = SnapshotId::new("2020-01-01T00:00:00Z".parse().unwrap());
    sink.put_bytes(&old.index_key(), Bytes::from_static(b"{}"), PutOptions::create())
        .await
        .unwrap();
    assert_eq!(lock_of(&moto, "locked", &old.index_key()), (None, None));
    // A multipart upload with lock headers and SHA-256 checksums round-trips.
    let big = SnapshotId::new(Timestamp::now());
    let n = sink
        .put(&big.object_key(), body(12 << 20), PutOptions::create())
        .await
        .unwrap();
    assert_eq!(n, 12 << 20);
    assert_eq!(sink.get_bytes(&big.object_key()).await.unwrap().len(), 12 << 20);

    // coffer's delete (prune) only adds a delete marker: the object is gone
    // from listings, its locked version stays and cannot be deleted.
    let key = id.object_key();
    sink.delete(&key).await.unwrap();
    assert!(sink.head(&key).await.unwrap().is_none());
    let versions = moto.versions("locked", &key);
    assert_eq!(versions.len(), 1, "{versions:?}");
    let (status, response) = moto.delete_version("locked", &key, &versions[0]);
    assert_eq!(status, 403, "{response}");
    assert!(response.contains("AccessDenied"), "{response}");
    assert_eq!(moto.versions("locked", &key), versions);
    // An unlocked version (the lock file) can be deleted.
    let lock_versions = moto.versions("locked", "locks/shared-1.json");
    let (status, response) = moto.delete_version("locked", "locks/shared-1.json", &lock_versions[0]);
    assert!(status < 300, "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_derived_from_the_sinks_retention_policy() {
    let Some(moto) = MotoServer::start() else { return };
    moto.create_locked_bucket("locked");
    // As the CLI passes it: the sink's `retention` inside `object-lock`.
    let sink = from_table(&format!(
        "bucket = \"locked\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
         access-key-id = \"test\"\nsecret-access-key = \"test\"\n\
         object-lock = {{ mode = \"compliance\", retention = {{ keep-daily = 7, keep-monthly = 2 }} }}",
        moto.endpoint()
    ));
    let id = SnapshotId::new(Timestamp::now());
    sink.put_bytes(&id.index_key(), Bytes::from_static(b"{}"), PutOptions::create())
        .await
        .unwrap();
    // The monthly horizon (2 months) beats the daily one (7 days).
    let until = id_time(&id)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .checked_add(jiff::Span::new().months(2))
        .unwrap()
        .timestamp()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    assert_eq!(
        lock_of(&moto, "locked", &id.index_key()),
        (Some("COMPLIANCE".into()), Some(until))
    );
    let versions = moto.versions("locked", &id.index_key());
    let (status, response) = moto.delete_version("locked", &id.index_key(), &versions[0]);
    assert_eq!(status, 403, "{response}");
}

#[tokio::test]
async fn object_lock_on_a_bucket_without_it_says_so() {
    let Some(moto) = MotoServer::start() else { return };
    moto.create_bucket(BUCKET);
    let sink = S3Sink::new(
        &S3SinkConfig::new(BUCKET)
            .with_endpoint(moto.endpoint())
            .with_credentials("test", "test")
            .with_object_lock(ObjectLockConfig::days(LockMode::Governance, 1)),
    )
    .unwrap();
    let id = SnapshotId::new(Timestamp::now());
    let err = sink
        .put_bytes(&id.index_key(), Bytes::from_static(b"{}"), PutOptions::create())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err:?}");
    assert!(err.hint().unwrap().contains("Object Lock"), "{err:?}");
    assert!(sink.list("").await.unwrap().is_empty());
}

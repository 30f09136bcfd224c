//! The sink conformance kit against a real S3 server (moto_server) and
//! object_store's in-memory store, plus S3 fault cases.

use coffer_e2e::moto_server as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_core::{ByteStream, Bytes, Error, ErrorKind, PutOptions, Registry, Sink, SinkExt};
use coffer_sink_s3::{S3Sink, S3SinkConfig};
use common::MotoServer;
use futures::StreamExt;

const BUCKET: &str = "coffer-test";

fn config(moto: &MotoServer, prefix: &str) -> S3SinkConfig {
    S3SinkConfig::new(BUCKET)
        .with_prefix(prefix)
        .with_endpoint(moto.endpoint())
        .with_region("us-east-1")
        .with_credentials("test", "test")
        .with_parts(5, 2)
}

fn moto() -> Option<MotoServer> {
    let m = MotoServer::start()?;
    m.create_bucket(BUCKET);
    Some(m)
}

fn body(len: usize, chunk: usize) -> ByteStream {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<coffer_core::Result<Bytes>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks).boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_on_moto() {
    let Some(moto) = moto() else { return };
    let sink = S3Sink::new(&config(&moto, "suite")).unwrap();
    coffer_core::testkit::sink_suite(&sink).await;
    assert_eq!(moto.pending_uploads(BUCKET), 0, "multipart uploads left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_on_an_in_memory_object_store() {
    let store = Arc::new(object_store::memory::InMemory::new());
    let sink = S3Sink::from_store(store, "memory")
        .with_prefix("p")
        .with_parts(1 << 20, 3);
    coffer_core::testkit::sink_suite(&sink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_round_trip_and_create_only() {
    let Some(moto) = moto() else { return };
    let sink = S3Sink::new(&config(&moto, "mp")).unwrap();
    let len = 12 * 1024 * 1024 + 5;
    let n = sink
        .put("big.coffer", body(len, 100_000), PutOptions::create())
        .await
        .unwrap();
    assert_eq!(n, len as u64);
    let got = sink.get_bytes("big.coffer").await.unwrap();
    assert_eq!(got.len(), len);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    let err = sink
        .put("big.coffer", body(len, 1 << 20), PutOptions::create())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err:?}");
    assert_eq!(sink.head("big.coffer").await.unwrap().unwrap().size, len as u64);
    assert_eq!(moto.pending_uploads(BUCKET), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_dropped_multipart_uploads_are_aborted() {
    let Some(moto) = moto() else { return };
    let sink = S3Sink::new(&config(&moto, "abort")).unwrap();
    // Fails after two full parts.
    let failing = body(11 * 1024 * 1024, 1 << 20)
        .chain(futures::stream::iter(vec![Err(Error::new(
            ErrorKind::Unexpected,
            "injected",
        ))]))
        .boxed();
    let err = sink
        .put("x.coffer", failing, PutOptions::create())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(moto.pending_uploads(BUCKET), 0, "a failed upload was not aborted");
    // Dropped while parts are in flight.
    let hanging = body(11 * 1024 * 1024, 1 << 20)
        .chain(futures::stream::pending())
        .boxed();
    let put = sink.put("y.coffer", hanging, PutOptions::create());
    assert!(tokio::time::timeout(Duration::from_secs(3), put).await.is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    while moto.pending_uploads(BUCKET) > 0 {
        assert!(Instant::now() < deadline, "a dropped upload was not aborted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sink.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_upload_fails_clearly_and_a_rerun_succeeds() {
    let Some(mut moto) = moto() else { return };
    let sink: Arc<dyn Sink> = Arc::new(S3Sink::new(&config(&moto, "kill")).unwrap());
    let err = coffer_core::testkit::server_killed_mid_upload(
        sink,
        &mut Moto(&mut moto),
        1 << 20,
        Duration::from_millis(30),
        Duration::from_millis(600),
        Duration::from_secs(30),
    )
    .await;
    assert!(err.hint().is_some_and(|h| h.contains("endpoint")), "{err:?}");
}

/// moto, for the kit: it comes back empty (its state is in memory), so
/// the bucket is made again.
struct Moto<'a>(&'a mut MotoServer);

impl coffer_core::testkit::ServerControl for Moto<'_> {
    fn kill(&mut self) {
        self.0.kill();
    }
    fn restart(&mut self) {
        self.0.restart();
        self.0.create_bucket(BUCKET);
    }
}

#[tokio::test]
async fn a_missing_bucket_says_create_it() {
    let Some(moto) = moto() else { return };
    let mut c = config(&moto, "");
    c.bucket = "no-such-bucket".into();
    let sink = S3Sink::new(&c).unwrap();
    let err = sink
        .put_bytes("a", Bytes::from_static(b"x"), PutOptions::create())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert!(err.hint().unwrap().contains("create"), "{err:?}");
    let err = sink.list("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_within_seconds() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = S3SinkConfig::new("b")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_credentials("test", "test");
    let sink = S3Sink::new(&c).unwrap();
    let started = Instant::now();
    let err = sink
        .put_bytes("a", Bytes::from_static(b"x"), PutOptions::create())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
    assert!(err.is_temporary());
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    // TLS endpoints build their client without a CryptoProvider panic.
    let c = S3SinkConfig::new("b")
        .with_endpoint(format!("https://127.0.0.1:{port}"))
        .with_credentials("test", "test");
    let err = S3Sink::new(&c).unwrap().list("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let c = S3SinkConfig::new("b")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_credentials("test", "test")
        .with_timeouts(Duration::from_secs(1), Duration::from_secs(1));
    let sink = S3Sink::new(&c).unwrap();
    let started = Instant::now();
    let err = sink.list("").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
    drop(listener);
}

#[test]
fn urls_and_tables_reach_the_same_sink() {
    let mut reg = Registry::new();
    coffer_sink_s3::register(&mut reg);
    let sink = reg
        .sink_from_url("s3://bkt/some/prefix?endpoint=http://127.0.0.1:9&region=us-east-1")
        .unwrap();
    assert_eq!(sink.info().scheme, "s3");
    assert!(
        sink.info().location.starts_with("s3://bkt/some/prefix"),
        "{}",
        sink.info()
    );
    let table: coffer_core::toml::Table = "bucket = \"bkt\"\nprefix = \"some/prefix\"\nendpoint = \"http://127.0.0.1:9\"\naccess-key-id = \"AKID\"\nsecret-access-key = \"hunter2\""
        .parse()
        .unwrap();
    let sink = reg
        .sink_factory("s3")
        .unwrap()
        .from_config("x", table, std::path::Path::new("."))
        .unwrap();
    assert_eq!(sink.info().location, "s3://bkt/some/prefix at http://127.0.0.1:9");
    assert!(!format!("{sink:?}").contains("hunter2"));
}

//! `--create-sink`: a sink the command writes to is made a sink
//! ([`Sink::init`]) just before its first use, so a sink that cannot be
//! made fails like any other failing sink of a fan-out (a partial run), and
//! a run that fails before writing creates nothing.

use std::sync::Arc;

use async_trait::async_trait;
use coffer_core::{ByteStream, ObjectMeta, PutOptions, Result, Sink, SinkInfo};
use tokio::sync::OnceCell;

/// Wraps a sink so that its first operation runs `init` first.
#[derive(Debug)]
pub struct CreateOnFirstUse {
    inner: Arc<dyn Sink>,
    ready: OnceCell<()>,
}

impl CreateOnFirstUse {
    pub fn wrap(inner: Arc<dyn Sink>) -> Arc<dyn Sink> {
        Arc::new(CreateOnFirstUse {
            inner,
            ready: OnceCell::new(),
        })
    }

    async fn ready(&self) -> Result<()> {
        self.ready.get_or_try_init(|| self.inner.init()).await?;
        Ok(())
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Sink for CreateOnFirstUse {
    fn info(&self) -> SinkInfo {
        self.inner.info()
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<u64> {
        self.ready().await?;
        self.inner.put(key, body, opts).await
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        self.ready().await?;
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.ready().await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.ready().await?;
        self.inner.delete(key).await
    }

    async fn init(&self) -> Result<()> {
        self.ready().await
    }

    async fn open_local(&self, key: &str) -> Result<Option<std::fs::File>> {
        self.inner.open_local(key).await
    }
}

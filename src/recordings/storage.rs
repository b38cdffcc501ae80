//! Where recordings' sealed bytes are kept: a local directory, or an
//! S3-compatible bucket, behind `object_store`'s one interface.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, PutPayload};

use crate::configuration::RecordingSettings;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("recording storage is misconfigured: {0}")]
    Config(String),
    #[error("recording storage: {0}")]
    Store(#[from] object_store::Error),
}

#[derive(Clone, Debug)]
pub struct RecordingStorage {
    store: Arc<dyn ObjectStore>,
}

impl RecordingStorage {
    /// The store `settings` name: `url` (`s3://bucket/prefix`) when set, else
    /// the directory `path` (created if missing).
    pub fn from_settings(settings: &RecordingSettings) -> Result<Self, StorageError> {
        let url = settings.url.trim();
        if url.is_empty() {
            return Self::local(&settings.path);
        }
        let parsed = url::Url::parse(url)
            .map_err(|_| StorageError::Config(format!("recordings.url {url:?} is not a URL")))?;
        if parsed.scheme() != "s3" {
            return Err(StorageError::Config(
                "recordings.url must be s3://bucket/prefix (or empty for recordings.path)".into(),
            ));
        }
        let bucket = parsed
            .host_str()
            .filter(|bucket| !bucket.is_empty())
            .ok_or_else(|| StorageError::Config("recordings.url names no bucket".into()))?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&settings.s3_region)
            .with_allow_http(settings.s3_allow_http);
        if !settings.s3_endpoint.is_empty() {
            // MinIO, Ceph, R2 ...: most serve buckets as paths, not subdomains.
            builder = builder.with_endpoint(&settings.s3_endpoint);
        }
        // Without a key pair the builder falls back to the instance's or
        // task's role (IMDS, ECS, web identity).
        if !settings.s3_access_key_id.is_empty() {
            builder = builder
                .with_access_key_id(&settings.s3_access_key_id)
                .with_secret_access_key(settings.s3_secret_access_key.expose());
        }
        let s3 = builder.build()?;
        let prefix = parsed.path().trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Self { store })
    }

    fn local(path: &str) -> Result<Self, StorageError> {
        if path.trim().is_empty() {
            return Err(StorageError::Config(
                "recordings.path is empty and recordings.url unset".into(),
            ));
        }
        std::fs::create_dir_all(path).map_err(|error| {
            StorageError::Config(format!(
                "recordings.path {path:?} cannot be created: {error}"
            ))
        })?;
        Ok(Self {
            store: Arc::new(LocalFileSystem::new_with_prefix(path)?),
        })
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.store
            .put(&Path::from(key), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    /// The object's bytes; `None` when there is no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self.store.get(&Path::from(key)).await {
            Ok(found) => Ok(Some(found.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

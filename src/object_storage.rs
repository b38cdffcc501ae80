//! Where sealed objects are kept (call recordings, tenants' files): a local
//! directory, or an S3-compatible bucket, behind `object_store`'s one
//! interface. Small objects are put whole; large ones are streamed in parts
//! ([`ObjectWriter`]) and read back by byte range.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};

use crate::configuration::RecordingSettings;

/// An object's bytes as they arrive from the store.
pub type ByteStream =
    futures_util::stream::BoxStream<'static, Result<axum::body::Bytes, object_store::Error>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object storage is misconfigured: {0}")]
    Config(String),
    #[error("object storage: {0}")]
    Store(#[from] object_store::Error),
}

#[derive(Clone, Debug)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
}

impl ObjectStorage {
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

    /// A writer that streams one object in parts of `part_bytes` (S3
    /// multipart; a staged file renamed into place locally): nothing is
    /// visible under `key` until [`ObjectWriter::finish`].
    pub async fn writer(&self, key: &str, part_bytes: usize) -> Result<ObjectWriter, StorageError> {
        let upload = self.store.put_multipart(&Path::from(key)).await?;
        Ok(ObjectWriter {
            parts: WriteMultipart::new_with_chunk_size(upload, part_bytes),
        })
    }

    /// A stream of the object's bytes in `range` (end exclusive).
    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        Ok(self
            .store
            .get_opts(&Path::from(key), options)
            .await?
            .into_stream())
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// One object being written in parts (see [`ObjectStorage::writer`]).
pub struct ObjectWriter {
    parts: WriteMultipart,
}

impl ObjectWriter {
    /// Buffers `bytes`, first waiting while too many parts are in flight, so
    /// a fast client cannot pile up memory ahead of a slow store.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.parts.wait_for_capacity(2).await?;
        self.parts.write(bytes);
        Ok(())
    }

    pub async fn finish(self) -> Result<(), StorageError> {
        self.parts.finish().await?;
        Ok(())
    }

    /// Drops what was written: no object, and no staged parts left behind.
    pub async fn abort(self) {
        if let Err(error) = self.parts.abort().await {
            tracing::warn!(%error, "an aborted object upload was not cleaned up");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::configuration::Settings;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, crate::configuration::ConfigError> {
        let mut env: HashMap<String, String> = pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        env.insert("AGENTRY_ENV".into(), "test".into());
        Settings::load_from(env)
    }

    #[test]
    fn recordings_go_to_an_s3_bucket_when_a_url_names_one() {
        let configured = settings(&[
            (
                "AGENTRY__RECORDINGS__URL",
                "s3://agentry-recordings/prod/eu",
            ),
            ("AGENTRY__RECORDINGS__S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("AGENTRY__RECORDINGS__S3_ALLOW_HTTP", "true"),
            ("AGENTRY__RECORDINGS__S3_ACCESS_KEY_ID", "minio"),
            ("AGENTRY__RECORDINGS__S3_SECRET_ACCESS_KEY", "minio-secret"),
        ])
        .unwrap();
        // Built without a request: the bucket is only reached when used.
        assert!(ObjectStorage::from_settings(&configured.recordings).is_ok());
        for url in ["gs://bucket/x", "s3:///no-bucket", "not a url"] {
            let mut recordings = configured.recordings.clone();
            recordings.url = url.into();
            assert!(
                matches!(
                    ObjectStorage::from_settings(&recordings),
                    Err(StorageError::Config(_))
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn recording_limits_outside_their_ranges_are_refused_at_load() {
        for (key, value) in [
            ("AGENTRY__RECORDINGS__FETCH_TIMEOUT_SECS", "15"),
            ("AGENTRY__RECORDINGS__LINK_TTL_SECS", "0"),
            ("AGENTRY__RECORDINGS__MAX_STREAM_BYTES", "0"),
            ("AGENTRY__TWILIO__MEDIA_TOKEN_TTL_SECS", "0"),
        ] {
            let refused = settings(&[(key, value)]).unwrap_err().to_string();
            let name = key.rsplit("__").next().unwrap().to_ascii_lowercase();
            assert!(refused.contains(&name), "{key}={value}: {refused}");
        }
        assert!(settings(&[]).is_ok());
    }

    #[tokio::test]
    async fn an_object_written_in_parts_reads_back_by_range_and_an_aborted_one_leaves_nothing() {
        use futures_util::TryStreamExt as _;
        let dir = std::env::temp_dir().join(format!("agentry-storage-{}", uuid::Uuid::new_v4()));
        let storage = ObjectStorage::local(dir.to_str().unwrap()).unwrap();
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut writer = storage.writer("t/big", 64 * 1024).await.unwrap();
        for piece in bytes.chunks(7_000) {
            writer.write(piece).await.unwrap();
        }
        writer.finish().await.unwrap();
        let slice: Vec<u8> = storage
            .get_range("t/big", 1_000..150_001)
            .await
            .unwrap()
            .map_ok(|chunk| chunk.to_vec())
            .try_concat()
            .await
            .unwrap();
        assert_eq!(slice, bytes[1_000..150_001]);
        let mut aborted = storage.writer("t/aborted", 64 * 1024).await.unwrap();
        aborted.write(&bytes).await.unwrap();
        aborted.abort().await;
        assert_eq!(storage.get("t/aborted").await.unwrap(), None);
        let left: Vec<_> = std::fs::read_dir(dir.join("t"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("big")]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_recording_directory_keeps_objects_and_forgets_deleted_ones() {
        let dir = std::env::temp_dir().join(format!("agentry-storage-{}", uuid::Uuid::new_v4()));
        let storage = ObjectStorage::local(dir.to_str().unwrap()).unwrap();
        storage
            .put("tenant/one.sealed", b"sealed".to_vec())
            .await
            .unwrap();
        assert_eq!(
            storage.get("tenant/one.sealed").await.unwrap().as_deref(),
            Some(&b"sealed"[..])
        );
        storage.delete("tenant/one.sealed").await.unwrap();
        storage.delete("tenant/one.sealed").await.unwrap();
        assert_eq!(storage.get("tenant/one.sealed").await.unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}

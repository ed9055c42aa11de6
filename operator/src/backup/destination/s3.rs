//! Backups in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, ...).
//!
//! Big objects go up as multipart uploads, which S3 makes visible only when completed: a
//! reader sees a whole object or none. Small ones (manifests) are single PUTs, atomic too.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};

use super::local::check_name;
use super::{Destination, DestinationError, ObjectInfo, Upload};

/// The size of one part. S3 wants at least 5 MiB per part (but the last) and at most 10,000
/// parts, so this allows objects up to ~80 GB.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight per upload: bounds memory to about `PART_SIZE * (MAX_PARTS_IN_FLIGHT + 1)`.
const MAX_PARTS_IN_FLIGHT: usize = 3;

/// Where and as whom to store a target's backups.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// The target's key prefix, e.g. `backups/default/demo/pg`; may be empty.
    pub prefix: String,
    /// For S3-compatible servers (MinIO, ...); AWS when `None`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// The backups of one target under `s3://bucket/prefix/`.
pub struct S3 {
    store: AmazonS3,
    bucket: String,
    prefix: Path,
    /// Only to scrub it from error messages, should a server or a library ever echo it.
    secret: String,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix.as_ref())
            .finish_non_exhaustive()
    }
}

impl S3 {
    pub fn new(cfg: S3Config) -> Result<S3, DestinationError> {
        // reqwest 0.13 is built without a provider of its own; the binary installs one at
        // start, but a library caller (tests, benchmarks) may not have.
        crate::install_crypto_provider();
        // The default overall timeout (30 s) covers the whole response body, which would cut
        // off the download of any backup bigger than what arrives in 30 s; a stall is caught by
        // the read timeout instead.
        let options = ClientOptions::new()
            .with_timeout_disabled()
            .with_read_timeout(Duration::from_secs(60))
            .with_connect_timeout(Duration::from_secs(10));
        // A backup that fails is retried at the next slot and reported meanwhile; retrying a
        // dead endpoint for minutes (the default) would only delay that report.
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 5,
            retry_timeout: Duration::from_secs(120),
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_access_key_id(&cfg.access_key_id)
            .with_secret_access_key(&cfg.secret_access_key)
            .with_region(cfg.region.as_deref().unwrap_or("us-east-1"))
            .with_client_options(options)
            .with_retry(retry);
        if let Some(endpoint) = &cfg.endpoint {
            // S3-compatible servers address buckets by path, not by DNS name.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(|e| {
            DestinationError::Failed(scrub(
                &cfg.secret_access_key,
                format!(
                    "invalid S3 configuration for bucket {:?}: {e}; check the bucket, endpoint and region",
                    cfg.bucket
                ),
            ))
        })?;
        Ok(S3 {
            store,
            prefix: Path::from(cfg.prefix.as_str()),
            bucket: cfg.bucket,
            secret: cfg.secret_access_key,
        })
    }

    fn path(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }

    fn url(&self, path: &Path) -> String {
        format!("s3://{}/{}", self.bucket, path)
    }

    fn error(&self, path: &Path, op: &str, e: object_store::Error) -> DestinationError {
        map_error(&self.secret, &self.url(path), op, e)
    }
}

/// Removes the secret key from a message, in case an error ever echoes it.
fn scrub(secret: &str, message: String) -> String {
    if secret.is_empty() {
        message
    } else {
        message.replace(secret, "<redacted>")
    }
}

/// Maps an object_store error on `url` to what the user can act on.
///
/// object_store classifies by HTTP status only for some requests (a refused list is "Generic"),
/// so the S3 error code in the response body is looked at too.
fn map_error(secret: &str, url: &str, op: &str, e: object_store::Error) -> DestinationError {
    let mut detail = e.to_string();
    // The top of the chain can be as vague as "error sending request"; the root cause says
    // "Connection refused" or which DNS name did not resolve.
    let mut root: &dyn std::error::Error = &e;
    while let Some(source) = root.source() {
        root = source;
    }
    let cause = root.to_string();
    if !detail.contains(&cause) {
        detail = format!("{detail}: {cause}");
    }
    // Response bodies are XML over several lines; a condition message is one line.
    let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
    let has = |codes: &[&str]| codes.iter().any(|c| detail.contains(c));

    let (full, hint) = if has(&["NoSuchBucket"]) {
        // S3 says 404 for a missing bucket too; that is not a missing object.
        (
            false,
            "the bucket does not exist: create it or fix the bucket name",
        )
    } else if matches!(e, object_store::Error::NotFound { .. }) {
        return DestinationError::NotFound(url.to_owned());
    } else if matches!(
        e,
        object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. }
    ) || has(&[
        "401 Unauthorized",
        "403 Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
    ]) {
        (
            false,
            "check the access key, the secret key and the key's permissions on the bucket",
        )
    } else if has(&["StorageFull", "QuotaExceeded", "507 Insufficient Storage"]) {
        // MinIO answers 507 / XMinioStorageFull; quota-enforcing servers QuotaExceeded.
        (true, "free space or lower the retention")
    } else {
        (
            false,
            "check the endpoint, the region and that the bucket exists",
        )
    };
    let message = scrub(secret, format!("cannot {op} {url}: {detail}; {hint}"));
    if full {
        DestinationError::Full(message)
    } else {
        DestinationError::Failed(message)
    }
}

#[async_trait]
impl Destination for S3 {
    fn location(&self, name: &str) -> String {
        self.url(&self.path(name))
    }

    async fn create(&self, name: &str) -> Result<Box<dyn Upload>, DestinationError> {
        check_name(name)?;
        let path = self.path(name);
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.error(&path, "start an upload to", e))?;
        Ok(Box::new(S3Upload {
            url: self.url(&path),
            secret: self.secret.clone(),
            writer: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
        }))
    }

    async fn put_small(&self, name: &str, bytes: Bytes) -> Result<(), DestinationError> {
        check_name(name)?;
        let path = self.path(name);
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(|e| self.error(&path, "write", e))
    }

    async fn get_small(&self, name: &str) -> Result<Bytes, DestinationError> {
        check_name(name)?;
        let path = self.path(name);
        let get = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.error(&path, "read", e))?;
        get.bytes().await.map_err(|e| self.error(&path, "read", e))
    }

    async fn open(
        &self,
        name: &str,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, DestinationError> {
        check_name(name)?;
        let path = self.path(name);
        let get = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.error(&path, "read", e))?;
        // The reader sees io errors; give them the same bucket/key context and scrubbing.
        let (secret, url) = (self.secret.clone(), self.url(&path));
        let stream = get.into_stream().map_err(move |e| {
            std::io::Error::other(map_error(&secret, &url, "read", e).to_string())
        });
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, DestinationError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        // With the delimiter, keys deeper down (other targets under this prefix) come back as
        // common prefixes and are left out.
        let listing = self
            .store
            .list_with_delimiter(prefix)
            .await
            .map_err(|e| self.error(&self.prefix, "list", e))?;
        let mut objects: Vec<ObjectInfo> = listing
            .objects
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?.to_owned();
                Some(ObjectInfo {
                    name,
                    size: meta.size,
                })
            })
            .collect();
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(objects)
    }

    async fn delete(&self, name: &str) -> Result<(), DestinationError> {
        check_name(name)?;
        let path = self.path(name);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(&path, "delete", e)),
        }
    }

    /// Does nothing: object_store cannot list unfinished multipart uploads. An upload is
    /// aborted by [`Upload::abort`] (and, best effort, when dropped unfinished); uploads left
    /// by a crash are invisible to readers but their parts are billed, so the bucket should
    /// have a lifecycle rule that aborts incomplete multipart uploads after a day or so.
    async fn clean_partial(&self) -> Result<(), DestinationError> {
        Ok(())
    }
}

/// A multipart upload, completed by `commit`.
struct S3Upload {
    url: String,
    secret: String,
    /// `None` once committed or aborted.
    writer: Option<WriteMultipart>,
}

impl S3Upload {
    fn error(&self, op: &str, e: object_store::Error) -> DestinationError {
        map_error(&self.secret, &self.url, op, e)
    }

    fn gone(&self) -> DestinationError {
        DestinationError::Failed(format!(
            "use of the upload to {} after it was committed, aborted or failed",
            self.url
        ))
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), DestinationError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(self.gone());
        };
        // `put` starts part uploads without waiting; without this the whole backup could end
        // up buffered in memory behind a slow link.
        if let Err(e) = writer.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await {
            let err = self.error("upload", e);
            if let Some(writer) = self.writer.take() {
                // Failed parts leave the upload unusable; don't leave it billed either.
                let _ = writer.abort().await;
            }
            return Err(err);
        }
        writer.put(chunk);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), DestinationError> {
        let Some(writer) = self.writer.take() else {
            return Err(self.gone());
        };
        // `finish` aborts the upload itself when a part or the completion fails.
        writer
            .finish()
            .await
            .map(drop)
            .map_err(|e| self.error("complete the upload of", e))
    }

    async fn abort(mut self: Box<Self>) -> Result<(), DestinationError> {
        match self.writer.take() {
            Some(writer) => writer.abort().await.map_err(|e| self.error("abort", e)),
            None => Ok(()),
        }
    }
}

impl Drop for S3Upload {
    /// A backup whose task was cancelled neither commits nor aborts; abort its upload in the
    /// background so its parts are not kept (and billed) until a lifecycle rule catches them.
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = writer.abort().await;
                });
            }
        }
    }
}

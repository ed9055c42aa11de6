//! Where backups are stored: a local directory ([`local`]) or S3-compatible object storage
//! ([`s3`]). Writes are atomic: a reader sees a whole object or none.

pub mod local;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;

/// Why a destination call failed.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// No space left (ENOSPC / EDQUOT, or the server's equivalent).
    #[error("{0}")]
    Full(String),
    #[error("{0} not found")]
    NotFound(String),
    /// Anything else: permissions, network, server errors.
    #[error("{0}")]
    Failed(String),
}

/// An object in the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
}

/// The backups of one target (one directory, one key prefix). Names are plain file names.
#[async_trait]
pub trait Destination: Send + Sync {
    /// Where `name` is, for people: a path or an `s3://bucket/key` URL.
    fn location(&self, name: &str) -> String;
    /// Starts writing `name`; nothing is visible under that name before `commit`.
    async fn create(&self, name: &str) -> Result<Box<dyn Upload>, DestinationError>;
    /// Writes a small object (manifests) atomically.
    async fn put_small(&self, name: &str, bytes: Bytes) -> Result<(), DestinationError>;
    async fn get_small(&self, name: &str) -> Result<Bytes, DestinationError>;
    /// Reads an object as a stream, without holding it in memory.
    async fn open(
        &self,
        name: &str,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, DestinationError>;
    /// Committed objects, in name order.
    async fn list(&self) -> Result<Vec<ObjectInfo>, DestinationError>;
    /// Removes an object; a missing one is not an error.
    async fn delete(&self, name: &str) -> Result<(), DestinationError>;
    /// Removes what interrupted writes left behind (temporary files, unfinished uploads).
    async fn clean_partial(&self) -> Result<(), DestinationError>;
}

/// An object being written.
#[async_trait]
pub trait Upload: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), DestinationError>;
    /// Makes the object visible under its name, durably (fsync, or a completed upload).
    async fn commit(self: Box<Self>) -> Result<(), DestinationError>;
    /// Throws the partial object away.
    async fn abort(self: Box<Self>) -> Result<(), DestinationError>;
}

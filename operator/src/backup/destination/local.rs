//! Backups in a local directory (a mounted disk, NFS, a host path).
//!
//! An object is written to a hidden temporary file (`.NAME.partial`) and renamed into place
//! after an fsync of the file; the directory is fsynced after the rename so that the new name
//! survives a power cut. A reader therefore sees a whole object or none, and whatever an
//! interrupted write leaves behind is hidden from [`Destination::list`] and removed by
//! [`Destination::clean_partial`].

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufWriter};

use super::{Destination, DestinationError, ObjectInfo, Upload};

/// Chunks from the pipeline can be small (a compressor's output); batching them keeps the
/// number of blocking-pool round trips per object low.
const WRITE_BUFFER: usize = 1024 * 1024;

/// ENOSPC and EDQUOT on Linux: the disk or the user's quota is full.
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

/// The directory of one backup target.
#[derive(Clone, Debug)]
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    /// `dir` need not exist: it is created on the first write.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn final_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.partial"))
    }

    async fn ensure_dir(&self) -> Result<(), DestinationError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| io_error(&self.dir, &self.dir, "create", e))
    }

    /// Opens the temporary file of `name`, creating the directory first.
    async fn start(&self, name: &str) -> Result<LocalUpload, DestinationError> {
        check_name(name)?;
        self.ensure_dir().await?;
        let temp = self.temp_path(name);
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| io_error(&self.dir, &temp, "create", e))?;
        Ok(LocalUpload {
            dir: self.dir.clone(),
            temp,
            dest: self.final_path(name),
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            done: false,
        })
    }
}

#[async_trait]
impl Destination for LocalDir {
    fn location(&self, name: &str) -> String {
        let path = self.final_path(name);
        // A relative directory would mean nothing to someone reading a status from elsewhere.
        std::path::absolute(&path)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    async fn create(&self, name: &str) -> Result<Box<dyn Upload>, DestinationError> {
        Ok(Box::new(self.start(name).await?))
    }

    async fn put_small(&self, name: &str, bytes: Bytes) -> Result<(), DestinationError> {
        let mut upload = Box::new(self.start(name).await?);
        upload.write(bytes).await?;
        upload.commit().await
    }

    async fn get_small(&self, name: &str) -> Result<Bytes, DestinationError> {
        check_name(name)?;
        let path = self.final_path(name);
        tokio::fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(|e| io_error(&self.dir, &path, "read", e))
    }

    async fn open(
        &self,
        name: &str,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, DestinationError> {
        check_name(name)?;
        let path = self.final_path(name);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error(&self.dir, &path, "open", e))?;
        Ok(Box::new(file))
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, DestinationError> {
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            // Nothing was ever written to this target.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.dir, &self.dir, "list", e)),
        };
        let mut objects = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_error(&self.dir, &self.dir, "list", e))?
        {
            // Non-UTF-8 names were not written by us, and cannot be passed back as a name.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let meta = match entry.metadata().await {
                Ok(meta) => meta,
                // Deleted between the listing and the stat (retention running concurrently).
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&self.dir, &entry.path(), "stat", e)),
            };
            if meta.is_file() {
                objects.push(ObjectInfo {
                    name,
                    size: meta.len(),
                });
            }
        }
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(objects)
    }

    async fn delete(&self, name: &str) -> Result<(), DestinationError> {
        check_name(name)?;
        let path = self.final_path(name);
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(io_error(&self.dir, &path, "delete", e))
            }
            _ => Ok(()),
        }
    }

    async fn clean_partial(&self) -> Result<(), DestinationError> {
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&self.dir, &self.dir, "list", e)),
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_error(&self.dir, &self.dir, "list", e))?
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".partial") {
                let path = entry.path();
                match tokio::fs::remove_file(&path).await {
                    Err(e) if e.kind() != ErrorKind::NotFound => {
                        return Err(io_error(&self.dir, &path, "delete", e));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// A write to `.NAME.partial`, renamed to `NAME` on commit.
struct LocalUpload {
    dir: PathBuf,
    temp: PathBuf,
    dest: PathBuf,
    /// `None` once the commit has begun or the upload was given up.
    file: Option<BufWriter<tokio::fs::File>>,
    /// Committed, or the temporary file removed: nothing left for `drop` to clean.
    done: bool,
}

impl LocalUpload {
    async fn finish(&mut self) -> Result<(), DestinationError> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        // tokio's File writes in the background: a full disk may only show in the flush.
        file.flush()
            .await
            .map_err(|e| io_error(&self.dir, &self.temp, "write", e))?;
        let file = file.into_inner();
        file.sync_all()
            .await
            .map_err(|e| io_error(&self.dir, &self.temp, "sync", e))?;
        drop(file);
        tokio::fs::rename(&self.temp, &self.dest)
            .await
            .map_err(|e| io_error(&self.dir, &self.dest, "rename", e))?;
        // The rename is an entry in the directory: without this it can be lost on power loss,
        // leaving a manifest that points at a backup that is not there.
        let dir = tokio::fs::File::open(&self.dir)
            .await
            .map_err(|e| io_error(&self.dir, &self.dir, "open", e))?;
        dir.sync_all()
            .await
            .map_err(|e| io_error(&self.dir, &self.dir, "sync", e))
    }

    /// Removes the temporary file; the error to report is the one that made us give up.
    async fn discard(&mut self) {
        self.file = None;
        self.done = true;
        if let Err(e) = tokio::fs::remove_file(&self.temp).await {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(path = %self.temp.display(), error = %e, "could not remove a partial backup");
            }
        }
    }
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), DestinationError> {
        let Some(file) = self.file.as_mut() else {
            return Err(DestinationError::Failed(format!(
                "write to {} after it was committed or aborted",
                self.temp.display()
            )));
        };
        if let Err(e) = file.write_all(&chunk).await {
            // A full disk must not stay full because of our own half-written file.
            self.discard().await;
            return Err(io_error(&self.dir, &self.temp, "write", e));
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), DestinationError> {
        if let Err(e) = self.finish().await {
            self.discard().await;
            return Err(e);
        }
        self.done = true;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> Result<(), DestinationError> {
        self.file = None;
        self.done = true;
        match tokio::fs::remove_file(&self.temp).await {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(io_error(&self.dir, &self.temp, "delete", e))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for LocalUpload {
    /// A backup whose task was cancelled (shutdown, timeout) neither commits nor aborts; its
    /// temporary file would otherwise hold disk space until the next `clean_partial`.
    fn drop(&mut self) {
        if !self.done {
            self.file = None;
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Names are single path components that `list` can show: no separators, no hidden names
/// (which are ours), nothing that climbs out of the directory.
pub(super) fn check_name(name: &str) -> Result<(), DestinationError> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return Err(DestinationError::Failed(format!(
            "invalid backup object name {name:?}: it must be a plain file name not starting with '.'"
        )));
    }
    Ok(())
}

/// Maps an io error on `path` (inside the target directory `dir`) to what the user can act on.
fn io_error(dir: &Path, path: &Path, op: &str, e: std::io::Error) -> DestinationError {
    match e.raw_os_error() {
        Some(ENOSPC) => {
            return DestinationError::Full(format!(
                "no space left on {}: free space or lower the retention",
                dir.display()
            ))
        }
        Some(EDQUOT) => {
            return DestinationError::Full(format!(
                "disk quota exceeded on {}: raise the quota or lower the retention",
                dir.display()
            ))
        }
        _ => {}
    }
    match e.kind() {
        ErrorKind::NotFound if op == "read" || op == "open" => {
            DestinationError::NotFound(path.display().to_string())
        }
        ErrorKind::PermissionDenied => DestinationError::Failed(format!(
            "cannot {op} {}: {e}; check that the operator may write to {}",
            path.display(),
            dir.display()
        )),
        _ => DestinationError::Failed(format!("cannot {op} {}: {e}", path.display())),
    }
}

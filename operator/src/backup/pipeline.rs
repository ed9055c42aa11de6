//! The byte path of a backup: dump output → zstd → sha256 → destination, and back.
//!
//! Everything streams through fixed-size buffers, so the operator's memory does not grow with
//! the database: a stalled destination stops reading, which stops the Docker stream, which
//! blocks `pg_dump` in its pipe.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{ZstdDecoder, ZstdEncoder};
use async_compression::Level;
use bytes::BytesMut;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};

use super::destination::{DestinationError, Upload};
use crate::act::reading::{poll_seen, Seen, Tally};
use crate::api::{Failure, Reason};

/// Size of the chunks handed to the destination.
const CHUNK: usize = 1 << 20;

/// What was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Compressed bytes written.
    pub size: u64,
    /// Bytes read from the source.
    pub raw_size: u64,
    /// sha256 (hex) of the compressed bytes.
    pub sha256: String,
}

/// Reads `source` to its end, compresses it with zstd at `level` and writes it to `upload`,
/// hashing what is written. `progress` counts compressed bytes written so far. The upload is
/// neither committed nor aborted here: only the caller knows whether the source ended because
/// it was complete or because the dump failed.
pub async fn store(
    source: impl AsyncRead + Unpin + Send,
    level: i32,
    upload: &mut dyn Upload,
    progress: &AtomicU64,
) -> Result<Sealed, Failure> {
    let raw = Tally::new(source);
    let raw_count = raw.count();
    let mut encoder =
        ZstdEncoder::with_quality(BufReader::with_capacity(CHUNK, raw), Level::Precise(level));
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let mut buf = BytesMut::with_capacity(CHUNK);
        // Fill a whole chunk when the source allows: fewer, larger writes to the destination.
        while buf.len() < CHUNK {
            let n = encoder.read_buf(&mut buf).await.map_err(|e| {
                Failure::new(
                    Reason::DumpFailed,
                    format!("reading the dump stream failed: {e}"),
                )
            })?;
            if n == 0 {
                break;
            }
        }
        if buf.is_empty() {
            break;
        }
        hasher.update(&buf);
        size += buf.len() as u64;
        upload
            .write(buf.freeze())
            .await
            .map_err(destination_error)?;
        progress.store(size, Ordering::Relaxed);
    }
    let raw_size = raw_count.load(Ordering::Relaxed);
    Ok(Sealed {
        size,
        raw_size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Commits `upload` when the backup that wrote it succeeded, aborts it otherwise, so nothing
/// partial is ever visible.
pub async fn settle<T>(upload: Box<dyn Upload>, written: Result<T, Failure>) -> Result<T, Failure> {
    match written {
        Ok(done) => {
            upload.commit().await.map_err(destination_error)?;
            Ok(done)
        }
        Err(e) => {
            // The failure is what matters; an abort that fails leaves a temporary object that
            // the destination's clean_partial removes.
            if let Err(a) = upload.abort().await {
                tracing::warn!("aborting the upload of a failed backup failed too: {a}");
            }
            Err(e)
        }
    }
}

/// A destination failure as a backup failure.
pub fn destination_error(e: DestinationError) -> Failure {
    match e {
        DestinationError::Full(m) => Failure::new(Reason::DiskFull, m),
        other => Failure::new(Reason::DestinationUnreachable, other.to_string()),
    }
}

/// The sha256 of what a [`Restored`] stream read, known once it is read to the end.
#[derive(Clone, Default)]
pub struct Digest256(Arc<Mutex<Option<String>>>);

impl Digest256 {
    /// The hex digest, once the stream reached its end.
    pub fn get(&self) -> Option<String> {
        self.0.lock().expect("digest lock").clone()
    }

    /// Fails with ChecksumMismatch unless the whole stream was read and hashed to `expected`.
    pub fn check(&self, expected: &str, what: &str) -> Result<(), Failure> {
        match self.get() {
            Some(d) if d == expected => Ok(()),
            Some(d) => Err(Failure::new(Reason::ChecksumMismatch, format!(
                "{what}: the stored bytes hash to sha256 {d}, but the manifest records {expected}; the backup is damaged, use an older one"
            ))),
            None => Err(Failure::new(Reason::ChecksumMismatch, format!(
                "{what}: the stored object was not read to its end, so its checksum is unknown"
            ))),
        }
    }
}

/// Decompresses a stored backup, hashing the stored (compressed) bytes on the way. The digest
/// is known after the stream ends; the caller compares it before trusting what it restored.
pub fn restored(
    stored: Box<dyn AsyncRead + Send + Unpin>,
) -> (impl AsyncRead + Send + Unpin, Digest256) {
    let digest = Digest256::default();
    let hashing = Hashing {
        inner: stored,
        hasher: Some(Sha256::new()),
        out: digest.clone(),
    };
    let mut decoder = ZstdDecoder::new(BufReader::with_capacity(CHUNK, hashing));
    // A dump is one zstd frame; multiple_members lets concatenated frames through as well.
    decoder.multiple_members(true);
    (decoder, digest)
}

/// Hashes the bytes read through it; publishes the digest at end of stream.
struct Hashing<R> {
    inner: R,
    hasher: Option<Sha256>,
    out: Digest256,
}

impl<R: AsyncRead + Unpin> AsyncRead for Hashing<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let (hasher, out) = (&mut this.hasher, &this.out);
        poll_seen(&mut this.inner, cx, buf, |seen| match seen {
            Seen::Bytes([]) => {
                if let Some(h) = hasher.take() {
                    *out.0.lock().expect("digest lock") = Some(hex::encode(h.finalize()));
                }
            }
            Seen::Bytes(new) => {
                if let Some(h) = hasher.as_mut() {
                    h.update(new);
                }
            }
            Seen::Failed(_) => {}
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use bytes::Bytes;

    #[derive(Default)]
    struct Memory(Vec<u8>);

    #[async_trait]
    impl Upload for Memory {
        async fn write(&mut self, chunk: Bytes) -> Result<(), DestinationError> {
            self.0.extend_from_slice(&chunk);
            Ok(())
        }
        async fn commit(self: Box<Self>) -> Result<(), DestinationError> {
            Ok(())
        }
        async fn abort(self: Box<Self>) -> Result<(), DestinationError> {
            Ok(())
        }
    }

    struct Full;

    #[async_trait]
    impl Upload for Full {
        async fn write(&mut self, _: Bytes) -> Result<(), DestinationError> {
            Err(DestinationError::Full("no space left on /x".into()))
        }
        async fn commit(self: Box<Self>) -> Result<(), DestinationError> {
            Ok(())
        }
        async fn abort(self: Box<Self>) -> Result<(), DestinationError> {
            Ok(())
        }
    }

    fn data() -> Vec<u8> {
        // Compressible but not trivial: 5 MiB of a repeating sentence with a counter.
        (0..200_000u32)
            .flat_map(|i| format!("row {i} of the table\n").into_bytes())
            .collect()
    }

    #[tokio::test]
    async fn round_trip_hashes_what_is_stored() {
        let input = data();
        let mut mem = Memory::default();
        let progress = AtomicU64::new(0);
        let sealed = store(&input[..], 3, &mut mem, &progress).await.unwrap();
        assert_eq!(sealed.raw_size, input.len() as u64);
        assert_eq!(sealed.size, mem.0.len() as u64);
        assert!(sealed.size < sealed.raw_size / 4, "{sealed:?}");
        assert_eq!(progress.load(Ordering::Relaxed), sealed.size);
        assert_eq!(sealed.sha256, hex::encode(Sha256::digest(&mem.0)));

        let (mut out, digest) = restored(Box::new(std::io::Cursor::new(mem.0.clone())));
        let mut back = Vec::new();
        out.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, input);
        digest.check(&sealed.sha256, "b").unwrap();
    }

    #[tokio::test]
    async fn a_flipped_byte_is_a_checksum_mismatch() {
        let input = data();
        let mut mem = Memory::default();
        let sealed = store(&input[..], 3, &mut mem, &AtomicU64::new(0))
            .await
            .unwrap();
        let mut damaged = mem.0.clone();
        // Inside the frame's content, where zstd itself may not notice.
        let at = damaged.len() / 2;
        damaged[at] ^= 0x01;
        let (mut out, digest) = restored(Box::new(std::io::Cursor::new(damaged)));
        let mut back = Vec::new();
        // zstd's own frame checksum may or may not catch it; ours must.
        let read = out.read_to_end(&mut back).await;
        let err = match read {
            Ok(_) => digest.check(&sealed.sha256, "pg-1").unwrap_err(),
            Err(_) => digest.check(&sealed.sha256, "pg-1").unwrap_err(),
        };
        assert!(err.reason == Reason::ChecksumMismatch, "{err}");
    }

    #[tokio::test]
    async fn a_full_destination_is_disk_full() {
        let err = store(&data()[..], 3, &mut Full, &AtomicU64::new(0))
            .await
            .unwrap_err();
        assert!(err.reason == Reason::DiskFull, "{err}");
    }
}

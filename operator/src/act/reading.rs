//! What passes through a reader, watched on the way: the mechanics every byte-path wrapper
//! shares ([`poll_seen`]), and the one that counts bytes and keeps the first error ([`Tally`]),
//! so a failure deep inside a stream can be told apart: the stored object, the
//! decompression, or Docker.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// What one read brought.
pub enum Seen<'a> {
    /// These bytes; none at the end of the stream.
    Bytes(&'a [u8]),
    Failed(&'a io::Error),
}

/// Reads from `inner` into `buf` and shows `seen` what came, before the caller gets it.
pub fn poll_seen<R: AsyncRead + Unpin + ?Sized>(
    inner: &mut R,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    seen: impl FnOnce(Seen<'_>),
) -> Poll<io::Result<()>> {
    let before = buf.filled().len();
    let r = Pin::new(inner).poll_read(cx, buf);
    match &r {
        Poll::Ready(Ok(())) => seen(Seen::Bytes(&buf.filled()[before..])),
        Poll::Ready(Err(e)) => seen(Seen::Failed(e)),
        Poll::Pending => {}
    }
    r
}

/// The first error a reader returned, as text.
#[derive(Clone, Default)]
pub struct FirstError(Arc<Mutex<Option<String>>>);

impl FirstError {
    pub fn get(&self) -> Option<String> {
        self.0.lock().expect("first error lock").clone()
    }

    fn keep(&self, e: &io::Error) {
        self.0
            .lock()
            .expect("first error lock")
            .get_or_insert_with(|| e.to_string());
    }
}

/// Counts the bytes read through it and keeps the first error.
pub struct Tally<R> {
    inner: R,
    count: Arc<AtomicU64>,
    error: FirstError,
}

impl<R> Tally<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            count: Arc::default(),
            error: FirstError::default(),
        }
    }

    /// Bytes read so far, readable while the reader is elsewhere.
    pub fn count(&self) -> Arc<AtomicU64> {
        self.count.clone()
    }

    pub fn error(&self) -> FirstError {
        self.error.clone()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Tally<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (count, error) = (&this.count, &this.error);
        poll_seen(&mut this.inner, cx, buf, |seen| match seen {
            Seen::Bytes(b) => {
                count.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            Seen::Failed(e) => error.keep(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_tally_counts_every_byte_and_keeps_the_first_error() {
        let mut ok = Tally::new(&b"twelve bytes"[..]);
        let (count, error) = (ok.count(), ok.error());
        let mut out = Vec::new();
        ok.read_to_end(&mut out).await.unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 12);
        assert_eq!(error.get(), None);

        let failing = tokio_util::io::StreamReader::new(futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"abc")),
            Err(io::Error::other("first")),
        ]));
        let mut bad = Tally::new(failing);
        let (count, error) = (bad.count(), bad.error());
        assert!(bad.read_to_end(&mut Vec::new()).await.is_err());
        assert_eq!(count.load(Ordering::Relaxed), 3);
        assert_eq!(error.get().as_deref(), Some("first"));
    }
}

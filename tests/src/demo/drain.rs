//! The listener the demo app serves from, and how it stops taking connections on SIGTERM.
//!
//! Docker's DNS answers with a container under its service alias until it leaves the network,
//! so clients keep connecting to the old container of a surged service until it has exited.
//! axum's own graceful shutdown loses two kinds of those connections: the ones the kernel has
//! accepted into the listen queue are reset when the listener is dropped, and an accepted one
//! whose first bytes were not read yet (hyper-util's auto builder, still telling HTTP/1 from
//! HTTP/2) is closed without an answer. So on SIGTERM the listener first takes what the
//! kernel queued and closes (later connections are refused, and the client moves on to the
//! next address at once); the graceful shutdown comes [`DRAIN`] later, when those have been
//! read and are answered like any request in flight.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// From closing the listener to the graceful shutdown: time for the connections taken from
/// the queue to be read.
pub const DRAIN: Duration = Duration::from_millis(250);

pub struct DrainingListener {
    listener: Option<TcpListener>,
    /// Connections taken from the queue when closing, handed out before nothing more comes.
    queued: VecDeque<(TcpStream, SocketAddr)>,
    close: watch::Receiver<bool>,
}

impl DrainingListener {
    /// Serves `listener` until `close` turns true.
    pub fn new(listener: TcpListener, close: watch::Receiver<bool>) -> Self {
        Self {
            listener: Some(listener),
            queued: VecDeque::new(),
            close,
        }
    }

    /// Takes every connection the kernel has queued, then closes the listener: a queued
    /// connection would be reset by the close.
    fn close_after_queue(&mut self) {
        let Some(std) = self.listener.take().and_then(|l| l.into_std().ok()) else {
            return;
        };
        // Non-blocking (tokio's listeners are): WouldBlock ends the queue.
        while let Ok((stream, addr)) = std.accept() {
            let stream = stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream));
            if let Ok(stream) = stream {
                self.queued.push_back((stream, addr));
            }
        }
    }
}

impl axum::serve::Listener for DrainingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Some(queued) = self.queued.pop_front() {
                return queued;
            }
            let Self {
                listener, close, ..
            } = self;
            let Some(listener) = listener.as_ref() else {
                return std::future::pending().await;
            };
            let accepted = tokio::select! {
                biased;
                _ = close.wait_for(|closing| *closing) => None,
                accepted = listener.accept() => Some(accepted),
            };
            match accepted {
                None => self.close_after_queue(),
                Some(Ok(conn)) => return conn,
                // As axum's own listener does: out of file descriptors and the like pass.
                Some(Err(e)) => {
                    eprintln!("demo-app: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(std::io::Error::other("the listener is closed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_connection_queued_when_closing_is_answered_and_later_ones_are_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (close, closing) = watch::channel(false);
        let mut listener = DrainingListener::new(listener, closing);
        // Connected, so queued by the kernel; nobody has accepted it yet.
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        close.send(true).unwrap();
        let (mut server, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the queued connection is handed out, not lost");
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        let refused = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}

//! Streaming exec: a command in a container whose stdout is read as a byte stream and whose
//! stdin can be fed from one, for dumps and restores of any size.
//!
//! Nothing here buffers more than one frame of Docker's output: stdout is read straight from the
//! attached connection when the consumer asks for bytes, so a slow consumer leaves the
//! connection unread, which blocks the command in its pipe (backpressure end to end). Only the
//! last few KiB of stderr are kept, for the error message.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::task::JoinHandle;

use super::{short_id, BollardEngine, EngineError};

/// How much of stderr is kept for messages.
const STDERR_TAIL: usize = 4096;
/// After the output ended, how long Docker may still report the command as running.
const EXIT_LAG: Duration = Duration::from_secs(10);
/// After the output ended (the command is gone), how long the stdin copy may take to notice.
const STDIN_LAG: Duration = Duration::from_secs(5);

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// A command running in a container with its stdout as a byte stream.
pub struct ExecStream {
    /// The command's stdout. Read it to its end (or drop it) before [`ExecDone::wait`].
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub done: ExecDone,
}

/// Resolves after stdout ended: the exit code and the last ~4 KiB of stderr. Dropping it (or
/// the whole [`ExecStream`]) closes the connection, which ends the command with SIGPIPE at its
/// next write, and stops feeding its stdin. Any [`Engine`](super::Engine) builds one from the
/// future that waits for its command.
pub struct ExecDone(Pin<Box<dyn Future<Output = Exited> + Send>>);

/// The exit code and the last ~4 KiB of stderr of a command, or why they are unknown.
pub type Exited = Result<(i64, String), EngineError>;

impl ExecDone {
    pub fn new(
        wait: impl Future<Output = Result<(i64, String), EngineError>> + Send + 'static,
    ) -> Self {
        Self(Box::pin(wait))
    }

    /// The exit code and the end of stderr, once the output ended. Fails when the connection
    /// broke, when reading the stdin source failed (the command saw a truncated input,
    /// whatever its exit code), or when no exit is reported.
    pub async fn wait(self) -> Exited {
        self.0.await
    }
}

/// Bollard's side of an [`ExecDone`].
struct Attached {
    shared: Arc<Mutex<Shared>>,
    stdin: Option<JoinHandle<StdinEnd>>,
    engine: BollardEngine,
    exec_id: String,
    context: String,
}

/// State shared by the stdout reader and [`Attached`].
struct Shared {
    output: Output,
    /// Bytes of a stdout frame not yet handed to the reader.
    pending: Bytes,
    stderr: Vec<u8>,
    ended: bool,
    error: Option<EngineError>,
    host: String,
    context: String,
}

impl Shared {
    fn keep_stderr(&mut self, bytes: &[u8]) {
        self.stderr.extend_from_slice(bytes);
        if self.stderr.len() > 2 * STDERR_TAIL {
            let cut = self.stderr.len() - STDERR_TAIL;
            self.stderr.drain(..cut);
        }
    }

    fn stderr_tail(&self) -> String {
        let start = self.stderr.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&self.stderr[start..]).into_owned()
    }

    /// The next stdout bytes; `None` at the end of the output. Stderr frames are kept on the way.
    fn poll_stdout(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Option<Bytes>>> {
        if !self.pending.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))));
        }
        if self.ended {
            return Poll::Ready(Ok(None));
        }
        if let Some(e) = &self.error {
            return Poll::Ready(Err(std::io::Error::other(e.to_string())));
        }
        loop {
            match self.output.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.ended = true;
                    return Poll::Ready(Ok(None));
                }
                Poll::Ready(Some(Err(e))) => {
                    let e = EngineError::from_bollard(&self.host, self.context.clone(), e);
                    let io = std::io::Error::other(e.to_string());
                    self.error = Some(e);
                    return Poll::Ready(Err(io));
                }
                Poll::Ready(Some(Ok(frame))) => match frame {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        if !message.is_empty() {
                            return Poll::Ready(Ok(Some(message)));
                        }
                    }
                    LogOutput::StdErr { message } => self.keep_stderr(&message),
                    LogOutput::StdIn { .. } => {}
                },
            }
        }
    }
}

/// A command started in a container with its output (and, if asked, its input) attached.
pub(super) struct Attach {
    pub exec_id: String,
    pub output: Output,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    /// `running "CMD" in container ID`, for messages.
    pub context: String,
}

impl BollardEngine {
    /// Starts `command` in the running container `id`; `env` entries (`K=V`) go to the exec
    /// only.
    pub(super) async fn attach(
        &self,
        id: &str,
        command: &[String],
        env: &[String],
        stdin: bool,
    ) -> Result<Attach, EngineError> {
        let context = format!(
            "running {:?} in container {}",
            command.first().map(String::as_str).unwrap_or(""),
            short_id(id)
        );
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(command.to_vec()),
                    env: (!env.is_empty()).then(|| env.to_vec()),
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(self.err(context.clone()))?;
        let started = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(self.err(context.clone()))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(EngineError::Api {
                context,
                status: None,
                message: "Docker started the command detached".into(),
            });
        };
        Ok(Attach {
            exec_id: created.id,
            output,
            input,
            context,
        })
    }
}

/// The stdout of an [`ExecStream`].
struct Stdout(Arc<Mutex<Shared>>);

impl AsyncRead for Stdout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut shared = self.0.lock().expect("exec stream lock");
        match shared.poll_stdout(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(None)) => Poll::Ready(Ok(())),
            Poll::Ready(Ok(Some(mut bytes))) => {
                let n = bytes.len().min(buf.remaining());
                buf.put_slice(&bytes.split_to(n));
                shared.pending = bytes;
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// How feeding stdin ended.
enum StdinEnd {
    /// All of the source was written and stdin closed.
    Complete,
    /// Reading the source failed: the command saw a truncated input.
    Source(std::io::Error),
    /// Writing failed: the command (or the connection) went away first. Its exit code says
    /// whether that was a failure.
    Sink,
}

async fn feed(
    mut source: Box<dyn AsyncRead + Send + Unpin>,
    mut input: Pin<Box<dyn AsyncWrite + Send>>,
) -> StdinEnd {
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        let n = match source.read(&mut buf).await {
            Ok(0) => break StdinEnd::Complete,
            Ok(n) => n,
            Err(e) => break StdinEnd::Source(e),
        };
        if input.write_all(&buf[..n]).await.is_err() {
            break StdinEnd::Sink;
        }
    };
    // EOF for the command in every case, so a failed source cannot leave it waiting forever.
    // A failure here means the command is gone already, which its exit code reports.
    let _ = input.shutdown().await;
    end
}

impl Attached {
    /// Waits for the end of the output (draining whatever stdout was not read), then for Docker
    /// to report the command's exit.
    async fn wait(mut self) -> Result<(i64, String), EngineError> {
        let shared = self.shared.clone();
        let drained = std::future::poll_fn(|cx| {
            let mut s = shared.lock().expect("exec stream lock");
            loop {
                match s.poll_stdout(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Some(_))) => continue,
                    Poll::Ready(Ok(None)) => return Poll::Ready(Ok(())),
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                }
            }
        })
        .await;
        if drained.is_err() {
            let mut s = shared.lock().expect("exec stream lock");
            return Err(s.error.take().unwrap_or_else(|| EngineError::Api {
                context: self.context.clone(),
                status: None,
                message: "the output stream failed".into(),
            }));
        }
        let stdin = match self.stdin.take() {
            None => StdinEnd::Complete,
            Some(mut task) => match tokio::time::timeout(STDIN_LAG, &mut task).await {
                Ok(Ok(end)) => end,
                Ok(Err(_)) => StdinEnd::Sink,
                Err(_) => {
                    task.abort();
                    StdinEnd::Sink
                }
            },
        };
        let code = self.exit_code().await?;
        if let StdinEnd::Source(e) = stdin {
            return Err(EngineError::Api {
                context: format!("{} (feeding its input)", self.context),
                status: None,
                message: format!("reading the input failed after part of it was sent: {e}"),
            });
        }
        let tail = shared.lock().expect("exec stream lock").stderr_tail();
        Ok((code, tail))
    }

    /// Docker may report the exec as running for a moment after its output ended.
    async fn exit_code(&self) -> Result<i64, EngineError> {
        let deadline = tokio::time::Instant::now() + EXIT_LAG;
        let mut pause = Duration::from_millis(20);
        loop {
            let inspect = self
                .engine
                .docker
                .inspect_exec(&self.exec_id)
                .await
                .map_err(self.engine.err(self.context.clone()))?;
            if inspect.running != Some(true) {
                return Ok(inspect.exit_code.unwrap_or(-1));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Api {
                    context: self.context.clone(),
                    status: None,
                    message: format!(
                        "the output ended but Docker still reports the command running after {}s",
                        EXIT_LAG.as_secs()
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(task) = self.stdin.take() {
            task.abort();
        }
    }
}

impl BollardEngine {
    /// Runs `command` in the running container `id` with its stdout as a stream. `env` entries
    /// (`K=V`) are passed to the exec (for PGPASSWORD; they appear in no message). With `stdin`
    /// given, it is copied into the command's stdin, which is closed at its end (for
    /// pg_restore). Fails, naming the container, when it is not running.
    pub(super) async fn exec_stream(
        &self,
        id: &str,
        command: &[String],
        env: &[String],
        stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    ) -> Result<ExecStream, EngineError> {
        let Attach {
            exec_id,
            output,
            input,
            context,
        } = self.attach(id, command, env, stdin.is_some()).await?;
        let stdin = stdin.map(|source| tokio::spawn(feed(source, input)));
        let shared = Arc::new(Mutex::new(Shared {
            output,
            pending: Bytes::new(),
            stderr: Vec::new(),
            ended: false,
            error: None,
            host: self.host.clone(),
            context: context.clone(),
        }));
        Ok(ExecStream {
            stdout: Box::new(Stdout(shared.clone())),
            done: ExecDone::new(
                Attached {
                    shared,
                    stdin,
                    engine: self.clone(),
                    exec_id,
                    context,
                }
                .wait(),
            ),
        })
    }
}

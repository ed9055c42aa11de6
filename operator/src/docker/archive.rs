//! Files in and out of containers over the archive API, and throwaway ("scratch") containers
//! for restore tests. Everything streams: a file goes through as tar blocks, never whole in
//! memory, so a multi-gigabyte dump costs the operator a few buffers.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_tar as tar;

use super::{short_id, BollardEngine, EngineError, ExecOutcome};

/// Label of every scratch container, so leftovers can be found and removed.
pub const SCRATCH_LABEL: &str = "stackwarden.dev/scratch";

/// Size of the chunks sent to Docker on upload.
const CHUNK: usize = 256 * 1024;
/// Tar block size.
const BLOCK: u64 = 512;

/// What the archive API says about a file it streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
}

/// A container as far as backups and restores need to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Brief {
    pub running: bool,
    /// Docker's state word: `running`, `exited`, `created`...
    pub status: String,
    /// Its addresses on the networks it is attached to.
    pub addresses: Vec<IpAddr>,
}

impl BollardEngine {
    /// Streams one regular file out of a container (running or stopped) via the archive API,
    /// with its size, owner and mode: the tar stream is unpacked on the fly, so only the file's
    /// bytes come out, with bounded memory. A stream that ends before the file's recorded size
    /// is an error, not a short file.
    pub(super) async fn open_file(
        &self,
        id: &str,
        path: &str,
    ) -> Result<(FileStat, Box<dyn AsyncRead + Send + Unpin>), EngineError> {
        let context = format!("reading {path} from container {}", short_id(id));
        let api = |message: String| EngineError::Api {
            context: context.clone(),
            status: None,
            message,
        };
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut body = self.docker.download_from_container(id, Some(opts)).boxed();
        // The first item carries the HTTP status: a missing file or container is a 404 here,
        // reported as such rather than as a broken tar stream.
        let first = match body.next().await {
            Some(Ok(b)) => b,
            Some(Err(e)) => return Err(EngineError::from_bollard(&self.host, context, e)),
            None => return Err(api("the engine sent an empty archive".into())),
        };
        let bytes = futures::stream::once(async { Ok(first) })
            .chain(body)
            .map_err(io::Error::other);
        let reader = tokio_util::io::StreamReader::new(Box::pin(bytes));
        let mut archive = tar::Archive::new(reader);
        let mut entries = archive
            .entries()
            .map_err(|e| api(format!("the archive does not read: {e}")))?;
        let entry = match entries.next().await {
            Some(Ok(entry)) => entry,
            Some(Err(e)) => return Err(api(format!("the archive does not read: {e}"))),
            None => return Err(api("the engine sent an empty archive".into())),
        };
        let header = entry.header();
        if !header.entry_type().is_file() {
            return Err(api(format!(
                "not a regular file (tar entry type {:?})",
                header.entry_type()
            )));
        }
        let stat = FileStat {
            size: entry.effective_size(),
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            mode: header.mode().unwrap_or(0o644),
        };
        let exact = Exact {
            inner: entry,
            remaining: stat.size,
            what: format!("{path} from container {}", short_id(id)),
        };
        Ok((stat, Box::new(exact)))
    }

    /// Writes `data`, which must be exactly `stat.size` bytes long, as file `path` (owner and
    /// mode from `stat`) into a container, running or stopped. The tar stream is generated on the fly: a
    /// header, the bytes as they are read, padding. If `data` fails or its length is not `size`,
    /// the upload is cut off and fails with that reason; Docker may have left a partial file.
    pub(super) async fn upload_file(
        &self,
        id: &str,
        path: &str,
        data: Box<dyn AsyncRead + Send + Unpin>,
        stat: FileStat,
    ) -> Result<(), EngineError> {
        let context = format!("writing {path} into container {}", short_id(id));
        let api = |message: String| EngineError::Api {
            context: context.clone(),
            status: None,
            message,
        };
        let p = Path::new(path);
        let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
            return Err(api("the path must name a file in a directory".into()));
        };
        if !p.is_absolute() {
            return Err(api("the path must be absolute".into()));
        }
        let head = tar_header(name, &stat).map_err(api)?;
        let padding = (BLOCK - stat.size % BLOCK) % BLOCK;
        // Padding to the block, then the two zero blocks that end an archive.
        let tail = Bytes::from(vec![0u8; (padding + 2 * BLOCK) as usize]);
        // hyper reports a failing body as a bare "user body error": keep the reason here.
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let failed = failure.clone();
        let body = exactly(data, stat.size).inspect_err(move |e| {
            let mut f = failed.lock().expect("upload failure lock");
            if f.is_none() {
                *f = Some(e.to_string());
            }
        });
        let stream = futures::stream::once(async move { Ok(head) })
            .chain(body)
            .chain(futures::stream::once(async move { Ok(tail) }));
        let opts = UploadToContainerOptionsBuilder::default()
            .path(&dir.to_string_lossy())
            .build();
        let res = self
            .docker
            .upload_to_container(id, Some(opts), bollard::body_try_stream(stream))
            .await;
        if let Some(reason) = failure.lock().expect("upload failure lock").take() {
            return Err(api(reason));
        }
        res.map_err(self.err(context.clone()))
    }

    /// Whether a container runs, and where it can be reached.
    pub(super) async fn brief(&self, id: &str) -> Result<Brief, EngineError> {
        let i = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(self.err(format!("inspecting container {}", short_id(id))))?;
        let state = i.state.unwrap_or_default();
        let addresses = i
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_values()
            .filter_map(|e| e.ip_address)
            .filter_map(|a| a.parse().ok())
            .collect();
        Ok(Brief {
            running: state.running.unwrap_or(false),
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            addresses,
        })
    }

    /// Creates (does not start) a throwaway container from `image` running `cmd`: no network,
    /// labelled [`SCRATCH_LABEL`]`=true`, not auto-removed (so its logs can be read when it
    /// fails; [`remove_container`](Engine::remove_container) it when done). Returns its id.
    pub(super) async fn create_scratch(
        &self,
        image: &str,
        name: &str,
        cmd: &[String],
        entrypoint: Option<&[String]>,
    ) -> Result<String, EngineError> {
        let body = bollard::models::ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: Some(cmd.to_vec()),
            entrypoint: entrypoint.map(<[String]>::to_vec),
            labels: Some(HashMap::from([(
                SCRATCH_LABEL.to_owned(),
                "true".to_owned(),
            )])),
            network_disabled: Some(true),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some("none".into()),
                auto_remove: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        Ok(self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(self.err(format!("creating scratch container {name} from {image}")))?
            .id)
    }

    /// Ids of the scratch containers (any state) whose name starts with `prefix`.
    pub(super) async fn scratch_containers(
        &self,
        prefix: &str,
    ) -> Result<Vec<String>, EngineError> {
        let list = self
            .labelled_containers(SCRATCH_LABEL, "true", "listing scratch containers")
            .await?;
        Ok(list
            .into_iter()
            .filter(|c| {
                c.names
                    .iter()
                    .flatten()
                    .any(|n| n.trim_start_matches('/').starts_with(prefix))
            })
            .filter_map(|c| c.id)
            .collect())
    }

    /// Every container (any state) whose `label` is `value`.
    pub(super) async fn labelled_containers(
        &self,
        label: &str,
        value: &str,
        what: &str,
    ) -> Result<Vec<bollard::models::ContainerSummary>, EngineError> {
        let filters = Self::label_filter(label, value);
        self.docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(self.err(what))
    }

    /// The last `lines` lines of a container's output, for a failure message.
    pub(super) async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, EngineError> {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(id, Some(opts));
        let mut out = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.err(format!("reading logs of {}", short_id(id))))?;
            if out.len() < 16 * 1024 {
                out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        }
        Ok(out)
    }

    /// Like [`super::Engine::exec`], keeping up to `limit` bytes of output instead of a message's
    /// worth (command output that is parsed, such as `INFO`).
    pub(super) async fn exec_capture(
        &self,
        id: &str,
        command: &[String],
        limit: usize,
    ) -> Result<ExecOutcome, EngineError> {
        let mut exec = self.attach(id, command, &[], false).await?;
        let mut output = Vec::new();
        while let Some(chunk) = exec.output.next().await {
            let chunk = chunk.map_err(self.err(exec.context.clone()))?;
            // Keep what is asked for; drain the rest so the command is not blocked.
            if output.len() < limit {
                output.extend_from_slice(&chunk.into_bytes());
            }
        }
        output.truncate(limit);
        let inspect = self
            .docker
            .inspect_exec(&exec.exec_id)
            .await
            .map_err(self.err(exec.context))?;
        Ok(ExecOutcome {
            exit_code: inspect.exit_code.unwrap_or(-1),
            output: String::from_utf8_lossy(&output).into_owned(),
        })
    }
}

/// The tar header of one regular file `name` with `stat`'s size, owner and mode, dated now.
fn tar_header(name: &std::ffi::OsStr, stat: &FileStat) -> Result<Bytes, String> {
    let mut header = tar::Header::new_gnu();
    header
        .set_path(name)
        .map_err(|e| format!("the file name does not fit a tar header: {e}"))?;
    header.set_size(stat.size);
    header.set_uid(stat.uid);
    header.set_gid(stat.gid);
    header.set_mode(stat.mode);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(Bytes::copy_from_slice(header.as_bytes()))
}

/// `data` in chunks, failing unless it is exactly `size` bytes long.
fn exactly(
    data: Box<dyn AsyncRead + Send + Unpin>,
    size: u64,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send {
    futures::stream::try_unfold(
        (data, size, false),
        move |(mut data, remaining, done)| async move {
            if done {
                return Ok(None);
            }
            if remaining == 0 {
                let mut probe = [0u8; 1];
                if data.read(&mut probe).await? != 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the data is longer than the {size} bytes announced"),
                    ));
                }
                return Ok(Some((None, (data, 0, true))));
            }
            let mut buf = BytesMut::with_capacity(CHUNK.min(remaining as usize));
            let n = (&mut data).take(remaining).read_buf(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the data ended after {} of the {size} bytes announced",
                        size - remaining
                    ),
                ));
            }
            Ok(Some((
                Some(buf.freeze()),
                (data, remaining - n as u64, false),
            )))
        },
    )
    .try_filter_map(|b| async move { Ok(b) })
}

/// Passes exactly `remaining` bytes through; an earlier end is an error (a cut connection must
/// not look like a short file).
struct Exact<R> {
    inner: R,
    remaining: u64,
    what: String,
}

impl<R: AsyncRead + Unpin> AsyncRead for Exact<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.remaining == 0 {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the archive stream of {} ended {} bytes early",
                        self.what, self.remaining
                    ),
                )));
            }
            self.remaining = self.remaining.saturating_sub(n);
        }
        r
    }
}

impl EngineError {
    /// Whether Docker answered 404: no such container, or no such file in it.
    pub fn is_missing(&self) -> bool {
        self.is_not_found()
    }
}

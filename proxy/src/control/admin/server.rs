//! The admin socket: a Unix stream socket speaking [`super::protocol`], one task per client.
//!
//! Access control is the file mode plus the kernel's word on who connects: the socket is
//! created with mode 0660, and a client whose UID (from `SO_PEERCRED`) is neither the proxy's
//! own nor in `allowed_uids` gets one error line and is closed. Requests are answered in
//! order; a line longer than [`MAX_REQUEST_BYTES`] or a flood of bad lines closes the client.
//! Clients are capped, so a runaway script cannot starve the proxy.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::protocol::{MAX_REQUEST_BYTES, Request, Response};

/// Admin clients served at once.
const MAX_CLIENTS: usize = 64;
/// Consecutive unparsable lines after which a client is closed.
const MAX_BAD_LINES: u32 = 16;

/// How a request reached the control plane, as far as it can be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The admin socket: the kernel's word on the client.
    Socket {
        /// UID of the connecting process (`SO_PEERCRED`).
        uid: u32,
        /// Process id, when the kernel reports it.
        pid: Option<i32>,
    },
    /// The HTTP API, with a valid token, from this address.
    Http {
        /// The client's address.
        peer: std::net::SocketAddr,
    },
    /// Another instance of the site's cluster received it and forwarded it to this one, the
    /// power leader. The audit log names both the operator and that instance.
    Forwarded {
        /// The original caller as the receiving instance wrote it (`alice (uid 1000)`);
        /// checked for length and control characters by the forwarder.
        caller: String,
        /// The instance that received it.
        instance: String,
    },
}

/// Who sent a request: where it came from and the name the client claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// How it reached us.
    pub origin: Origin,
    /// Operator name claimed in the request (`by`), unverified.
    pub claimed: Option<String>,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.claimed.as_deref().unwrap_or("anonymous");
        match &self.origin {
            Origin::Socket { uid, .. } => write!(f, "{name} (uid {uid})"),
            Origin::Http { peer } => write!(f, "{name} (http {})", peer.ip()),
            Origin::Forwarded { caller, instance } => write!(f, "{caller} via {instance}"),
        }
    }
}

/// What answers requests: the control plane, or a stub in tests.
pub trait Handler: Send + Sync + 'static {
    /// Carries out one request.
    fn handle(
        &self,
        request: Request,
        caller: Caller,
    ) -> Pin<Box<dyn Future<Output = Response> + Send + '_>>;
}

/// A bound admin socket.
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    own_uid: u32,
}

impl AdminSocket {
    /// Binds `path` with mode 0660. A stale socket file left by a dead proxy is replaced; a
    /// live one (something answers on it) or any other kind of file is an error.
    pub async fn bind(path: &Path) -> io::Result<AdminSocket> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another process serves {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        // The socket file is ours: its owner is the UID this process runs as.
        let own_uid = std::fs::metadata(path)?.uid();
        Ok(AdminSocket {
            listener,
            path: path.to_owned(),
            own_uid,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves clients until `shutdown`, then removes the socket file. Each client runs on
    /// `tracker`.
    pub async fn serve(
        self,
        handler: Arc<dyn Handler>,
        allowed_uids: Vec<u32>,
        idle_timeout: Duration,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
        let allowed: Arc<[u32]> = allowed_uids.into();
        info!(socket = %self.path.display(), "admin socket ready");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = clients.clone().try_acquire_owned() else {
                warn!("too many admin clients; refusing one");
                continue;
            };
            let cred = match stream.peer_cred() {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "admin client without credentials; refused");
                    continue;
                }
            };
            let uid = cred.uid();
            let allowed_here = uid == self.own_uid || allowed.contains(&uid);
            let span = info_span!("admin", uid, pid = cred.pid());
            let handler = handler.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(
                async move {
                    let _permit = permit;
                    client(
                        stream,
                        handler,
                        uid,
                        cred.pid(),
                        allowed_here,
                        idle_timeout,
                        shutdown,
                    )
                    .await;
                }
                .instrument(span),
            );
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn client(
    stream: UnixStream,
    handler: Arc<dyn Handler>,
    uid: u32,
    pid: Option<i32>,
    allowed: bool,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(MAX_REQUEST_BYTES));
    if !allowed {
        warn!("admin client refused: UID not allowed");
        let line = to_line(&Response::error(format!(
            "uid {uid} may not use this socket (see [admin] allowed_uids)"
        )));
        let _ = lines.send(line).await;
        return;
    }
    debug!("admin client connected");
    let mut bad_lines = 0;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            n = tokio::time::timeout(idle_timeout, lines.next()) => n,
        };
        let line = match next {
            Err(_) | Ok(None) => break,
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(LinesCodecError::MaxLineLengthExceeded))) => {
                let _ = lines
                    .send(to_line(&Response::error("request line too long")))
                    .await;
                break;
            }
            Ok(Some(Err(LinesCodecError::Io(e)))) => {
                debug!(error = %e, "admin client I/O error");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                bad_lines = 0;
                let caller = Caller {
                    origin: Origin::Socket { uid, pid },
                    claimed: request.by.clone(),
                };
                handler.handle(request, caller).await
            }
            Err(e) => {
                bad_lines += 1;
                Response::error(format!("bad request: {e}"))
            }
        };
        if lines.send(to_line(&response)).await.is_err() || bad_lines >= MAX_BAD_LINES {
            break;
        }
    }
    debug!("admin client gone");
}

fn to_line(response: &Response) -> String {
    serde_json::to_string(response)
        .unwrap_or_else(|_| r#"{"ok":false,"error":"unencodable response"}"#.to_owned())
}

//! The Unix socket between the CLI and its local daemon: one JSON request line, one JSON
//! response line. The socket is mode 0660 so that an operator group can be given access
//! without root; it must never accept connections from the network.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::protocol::{Request, Response};

/// Longest request line accepted; requests are tiny, this bounds a confused client.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot reach the havip daemon at {path}: {source} (is `havip run` running with this config? pass --socket or --config to pick another)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: {why}")]
    Exchange { path: PathBuf, why: String },
}

pub type Handler =
    Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// Binds the socket, replacing a stale file from a previous run (a live daemon would
/// still hold it; the caller's data-dir lock already ensures there is none).
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let err = |source| SocketError::Bind {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

/// Serves requests until `shutdown` fires; each connection in its own task.
pub async fn serve(
    listener: UnixListener,
    handler: Handler,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_one(stream, handler).await {
                            tracing::debug!("control connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn serve_one(stream: UnixStream, handler: Handler) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_LINE as u64);
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => handler(request).await,
        Err(e) => Response::Error {
            message: format!("malformed request: {e}"),
        },
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|e| {
        format!("{{\"result\":\"error\",\"message\":\"cannot encode response: {e}\"}}")
    });
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

/// Sends one request to the daemon and waits (bounded) for its response.
pub async fn call(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, SocketError> {
    let exchange = |why: String| SocketError::Exchange {
        path: path.into(),
        why,
    };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| SocketError::Connect {
            path: path.into(),
            source,
        })?;
    let work = async {
        let (read, mut write) = stream.into_split();
        let mut text = serde_json::to_string(request).map_err(|e| exchange(e.to_string()))?;
        text.push('\n');
        write
            .write_all(text.as_bytes())
            .await
            .map_err(|e| exchange(e.to_string()))?;
        let mut line = String::new();
        BufReader::new(read)
            .read_line(&mut line)
            .await
            .map_err(|e| exchange(e.to_string()))?;
        serde_json::from_str::<Response>(&line)
            .map_err(|e| exchange(format!("malformed response: {e}")))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| exchange(format!("no answer within {timeout:?}")))?
}

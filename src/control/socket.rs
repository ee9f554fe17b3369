//! The Unix socket between the CLI and its local daemon: one JSON request line, one JSON
//! response line. The socket is mode 0660 so that an operator group can be given access
//! without root; it is created with that mode already set (bound in a private directory,
//! then renamed into place), never through a symbolic link, and every connection's
//! credentials (SO_PEERCRED) go with its request, so that a request that changes the
//! cluster is answered only for root, the daemon's user or a member of the socket's group.
//! It must never accept connections from the network.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::protocol::{Request, Response};

/// Longest request line accepted; requests are tiny, this bounds a confused client.
const MAX_LINE: usize = 64 * 1024;

/// How long a connection may take to send its request line: a client that connects and
/// says nothing must not hold a task and a descriptor for ever.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; more are closed at once (a watcher polls over one at a
/// time, an operator runs a command or two: 64 is far above any honest use).
const MAX_CONNECTIONS: usize = 64;

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
    Arc<dyn Fn(Request, Caller) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// Who sent a request, from the kernel (SO_PEERCRED), not from the request; `None`: the
/// kernel did not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub cred: Option<(u32, u32)>,
    daemon_uid: u32,
    socket_gid: Option<u32>,
}

impl Caller {
    /// "uid 1000", or "an unknown caller", for messages.
    pub fn describe(&self) -> String {
        self.cred.map_or_else(
            || "an unknown caller".into(),
            |(uid, _)| format!("uid {uid}"),
        )
    }

    /// May the caller change the cluster (failover, maintenance, reload)? Asked only for
    /// such a request: the group lookup reads the user database, which a watcher's poll
    /// every 10 ms must not pay for.
    pub fn may_change(&self) -> bool {
        self.cred.is_some_and(|(uid, gid)| {
            may_change(uid, &groups_of(uid, gid), self.daemon_uid, self.socket_gid)
        })
    }
}

/// Whether a process of `uid` (in `groups`) may send requests that change the cluster to
/// a daemon running as `daemon_uid` whose socket belongs to group `socket_gid`: root, the
/// daemon's own user, or a member of the socket's group (the operators the package's
/// `havip` group names). Pure, so the rule is tested without sockets.
pub fn may_change(uid: u32, groups: &[u32], daemon_uid: u32, socket_gid: Option<u32>) -> bool {
    uid == 0 || uid == daemon_uid || socket_gid.is_some_and(|g| groups.contains(&g))
}

/// The groups of `uid`, from the user database (primary and supplementary); the kernel's
/// credentials carry only the primary one.
fn groups_of(uid: u32, primary: u32) -> Vec<u32> {
    use nix::unistd::{Gid, Uid, User, getgrouplist};
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let mut groups = user
        .and_then(|u| {
            let name = std::ffi::CString::new(u.name).ok()?;
            getgrouplist(&name, Gid::from_raw(primary)).ok()
        })
        .map(|gs| gs.into_iter().map(Gid::as_raw).collect::<Vec<_>>())
        .unwrap_or_default();
    groups.push(primary);
    groups
}

/// Binds the socket, replacing a stale socket from a previous run (a live daemon would
/// still hold it; the caller's data-dir lock already ensures there is none). Anything else
/// at the path (a file, a symbolic link) is refused, not removed. The socket is bound in a
/// private directory beside it, given mode 0660 there, and renamed into place, so it is
/// never reachable with a wider mode.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let err = |source| SocketError::Bind {
        path: path.into(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(std::io::Error::other(
                "something other than a socket is there (a file or a symbolic link); havip does not remove it: remove it or pick another [control] socket",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let private = dir.join(format!(".havip-sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(err)?;
    let staged = private.join("sock");
    let bound = UnixListener::bind(&staged)
        .and_then(|listener| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o660))?;
            std::fs::rename(&staged, path)?;
            Ok(listener)
        })
        .map_err(err);
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// Serves requests until `shutdown` fires; each connection in its own task.
pub async fn serve(
    listener: UnixListener,
    handler: Handler,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let daemon_uid = nix::unistd::geteuid().as_raw();
    let socket_gid = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.gid());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut refused: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        refused += 1;
                        // The first, then every 1000th: a flood must not flood the log.
                        if refused % 1000 == 1 {
                            tracing::warn!(refused, "control socket: {MAX_CONNECTIONS} connections open already; closing new ones");
                        }
                        continue;
                    };
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        let caller = Caller {
                            cred: stream.peer_cred().ok().map(|c| (c.uid(), c.gid())),
                            daemon_uid,
                            socket_gid,
                        };
                        if let Err(e) = serve_one(stream, handler, caller).await {
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

async fn serve_one(stream: UnixStream, handler: Handler, caller: Caller) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_LINE as u64);
    tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request line"))??;
    let response = match read_request(&line) {
        Ok(request) => handler(request, caller).await,
        Err(message) => Response::Error { message },
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|e| {
        format!("{{\"result\":\"error\",\"message\":\"cannot encode response: {e}\"}}")
    });
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

/// One request line as the daemon reads it, or what its error response says of a line
/// that is no request. Pure, and apart from `serve_one` so that the fuzz target
/// `control_request` (fuzz/) feeds it exactly what a local user can write to the socket.
pub fn read_request(line: &str) -> Result<Request, String> {
    serde_json::from_str::<Request>(line).map_err(|e| format!("malformed request: {e}"))
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt;

    use super::*;

    #[test]
    fn only_root_the_daemons_user_and_the_sockets_group_may_change_the_cluster() {
        let (daemon, operators) = (998, Some(997));
        assert!(may_change(0, &[0], daemon, operators), "root");
        assert!(
            may_change(998, &[998], daemon, operators),
            "the daemon's user"
        );
        assert!(
            may_change(1000, &[1000, 997], daemon, operators),
            "an operator"
        );
        assert!(
            !may_change(1001, &[1001, 100], daemon, operators),
            "anyone else"
        );
        assert!(!may_change(1001, &[1001], daemon, None), "no group known");
    }

    #[tokio::test]
    async fn the_socket_is_created_0660_and_a_symlink_at_its_path_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("havip.sock");
        let first = bind(&path).expect("bind");
        let meta = std::fs::symlink_metadata(&path).expect("socket");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        drop(first);
        // A stale socket from a previous run is replaced.
        let _second = bind(&path).expect("rebind over a stale socket");
        // A symbolic link (or any other file) at the path is refused, not followed.
        let link = dir.path().join("link.sock");
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep me").expect("target");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let refused = bind(&link).expect_err("a symlink is refused");
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
        assert_eq!(std::fs::read(&target).expect("target"), b"keep me");
        // Nothing is left of the private staging directory.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".havip-sock"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// Issue 14 item 1: silent connections cannot take the socket: past `MAX_CONNECTIONS`
    /// a new one is closed at once, and the silent ones are dropped after `READ_TIMEOUT`.
    #[tokio::test]
    async fn silent_connections_are_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("havip.sock");
        let listener = bind(&path).expect("bind");
        let handler: Handler = Arc::new(|_, _| {
            Box::pin(async {
                Response::Done {
                    message: "ok".into(),
                }
            })
        });
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(serve(listener, handler, stopped));
        let mut silent = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            silent.push(UnixStream::connect(&path).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = call(&path, &Request::Status, Duration::from_secs(2)).await;
        assert!(
            refused.is_err(),
            "the 65th connection must be closed: {refused:?}"
        );
        drop(silent);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let served = call(&path, &Request::Status, Duration::from_secs(2)).await;
        assert!(matches!(served, Ok(Response::Done { .. })), "{served:?}");
    }
}

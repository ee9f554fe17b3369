//! One operator request in, one response out: routes each `Request` from the control
//! socket to its command (one file per command family, as mini-redis's `cmd/`). It must
//! never do a command's work itself beyond a one-line read.

use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::backend::backend;
use super::context::Control;
use super::failover::failover;
use super::history::history;
use super::maintenance::maintenance;
use super::member_change::member_check;
use super::members::member_list;
use super::metrics::{self as prometheus, SnapshotSource};
use super::metrics_snapshot::metrics_snapshot;
use super::protocol::{Request, Response};
use super::socket;
use super::status::status;

/// The response to `request`.
pub async fn handle_request(control: &Control, request: Request) -> Response {
    let members = &*control.members();
    let proposer = &control.proposer;
    let groups = &*control.groups();
    match request {
        Request::Status => Response::Status(status(control).await),
        Request::Holdings => Response::Holdings {
            groups: groups.holdings(),
        },
        Request::Held => Response::held(control.data_plane.kind(), control.data_plane.held()),
        Request::History { group } => history(groups, group),
        Request::Failover { group, to } => failover(groups, members, proposer, group, to).await,
        Request::Maintenance { node, on } => maintenance(groups, members, proposer, node, on).await,
        Request::Backend {
            pool,
            server,
            change,
        } => backend(control, pool, server, change).await,
        Request::Reload => reload(control).await,
        Request::Members => member_list(groups, members),
        Request::MemberCheck { add, remove } => member_check(control, add, remove).await,
    }
}

/// Hands the reload to the daemon and waits for its answer.
async fn reload(control: &Control) -> Response {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let stopping = || Response::Error {
        message: "the daemon is shutting down; nothing was reloaded".into(),
    };
    if control.reloads.send(reply).await.is_err() {
        return stopping();
    }
    answer.await.unwrap_or_else(|_| stopping())
}

/// The control socket's server, answering until `stop`.
pub struct Serving {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Serving {
    /// Stops answering on the control socket, once the connection in hand is done.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Answers the control socket on `listener` until stopped, and Prometheus scrapes on
/// `prometheus_listener` until `shutdown`. The control socket answers until the groups have released
/// and handed over, so that a watcher asking what the data plane holds (`Request::Held`)
/// sees the release.
pub fn serve(
    control: Arc<Control>,
    listener: UnixListener,
    prometheus_listener: Option<TcpListener>,
    shutdown: watch::Receiver<bool>,
) -> Serving {
    let (stop, stopped) = watch::channel(false);
    let handler = socket_handler(control.clone());
    let task = tokio::spawn(socket::serve(listener, handler, stopped));
    if let Some(listener) = prometheus_listener {
        let source = snapshot_source(control);
        tokio::spawn(prometheus::serve(listener, source, shutdown));
    }
    Serving { stop, task }
}

/// The control socket's handler over `control`: requests that change the cluster only
/// from a caller allowed to (`socket::may_change`), the others from anyone who can reach
/// the socket.
fn socket_handler(control: Arc<Control>) -> socket::Handler {
    Arc::new(move |request, caller| {
        let control = control.clone();
        Box::pin(async move {
            if request.changes_the_cluster() && !caller.may_change() {
                return Response::Error {
                    message: format!(
                        "permission denied: {} changes the cluster; run it as root or as a member of the control socket's group ({} is neither)",
                        request.command_name(),
                        caller.describe()
                    ),
                };
            }
            handle_request(&control, request).await
        })
    })
}

/// The metrics server's snapshot source over `control`.
fn snapshot_source(control: Arc<Control>) -> SnapshotSource {
    Arc::new(move || {
        let control = control.clone();
        Box::pin(async move { metrics_snapshot(&control) })
    })
}

//! `havip run`: wires the store, the peer mesh, one Raft and one control loop per VIP
//! group, the fact feeds, and the control socket, then waits for SIGTERM/SIGINT and shuts
//! down in the order that keeps the VIP safe: release the VIPs, hand leadership over,
//! flush the store, exit. It decides nothing and answers no request itself (the group
//! loops decide, `control/` answers); it must never hold a VIP it has not been told to by
//! the hold rule.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consensus::Raft;
use crate::consensus::bootstrap::{self, Bootstrap};
use crate::consensus::group_raft::{self, GroupRaft, GroupRaftError};
use crate::consensus::proposer::Proposer;
use crate::consensus::store::{Store, StoreError};
use crate::control::dispatch::{self, Serving};
use crate::control::metrics::{self as prometheus, MetricsError};
use crate::control::notify::Notifier;
use crate::control::peer::PeerHandler;
use crate::control::{Control, GroupHandle, Groups, Members, socket};
use crate::group::GroupStopped;
use crate::group::reannounce::Reannouncer;
use crate::group::tasks::{self, NodeParts, RunningGroup};
use crate::health::{self, HealthMonitor, HealthReport};
use crate::key::ClusterKey;
use crate::peer::{Mesh, MeshConfig, MeshError};
use crate::policy::Role;
use crate::systemd::{GroupLoopFeed, Systemd};
use crate::vip::link::LinkWatch;
use crate::vip::open::OpenError;
use crate::vip::{self, DataPlane, VipSet};

/// Errors that stop the daemon before it runs; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] crate::key::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Missing privileges, a netlink failure, the link watch.
    #[error(transparent)]
    DataPlane(#[from] OpenError),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A group's Raft (its timers, its store, openraft itself); names the file or group.
    #[error(transparent)]
    Raft(#[from] GroupRaftError),
    /// Not a start error: the daemon ran and a group's Raft stopped under it.
    #[error(transparent)]
    Fatal(#[from] GroupStopped),
}

pub struct RunOptions {
    pub config: Config,
    pub observe_only: bool,
}

/// How long the control socket keeps answering after the groups have released.
const CONTROL_LINGER: Duration = Duration::from_millis(200);

/// Graceful shutdown must be done within this, whatever the peers do.
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(1900);

/// Runs the daemon until SIGTERM/SIGINT. Returns after a graceful shutdown.
pub async fn run(options: RunOptions) -> Result<(), StartError> {
    let (shutdown_tx, shutdown) = watch::channel(false);
    let systemd = Systemd::from_env();
    let (node, sockets) = Node::open(options, &shutdown).await?;
    // A node that restarts has forgotten the leader leases it granted before it died;
    // sitting out one lease before joining makes sure none of them is still running.
    tokio::time::sleep(node.config.timers.leader_lease()).await;
    let mut joined = node.join(&shutdown).await?;
    // Ready once every group's Raft and loop runs (`Type=notify`); the status lines and
    // the watchdog come from the group loops.
    systemd.joined(std::mem::take(&mut joined.systemd), &shutdown);
    let control = joined.control.clone();
    let serving = dispatch::serve(control, sockets.control, sockets.metrics, shutdown);
    let config = &node.config;
    tracing::info!(node = %config.node.name, role = ?config.node.role, groups = config.vip_groups.len(),
        data_plane = node.data_plane.kind(), "havip running");
    let fatal = tokio::select! {
        _ = wait_for_signal() => None,
        Some(error) = joined.fatal.recv() => Some(error),
    };
    match &fatal {
        Some(error) => tracing::error!("stopping: {error}"),
        None => tracing::info!("shutting down: releasing VIPs, handing leadership over"),
    }
    systemd.stopping();
    node.stop(joined, serving, shutdown_tx).await;
    match fatal {
        Some(error) => Err(error.into()),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// What the daemon opens before it joins the cluster, kept until it stops.
struct Node {
    config: Config,
    store: Store,
    vip_sets: Vec<VipSet>,
    data_plane: Arc<dyn DataPlane>,
    links: Option<LinkWatch>,
    /// No group had any state in the store at start.
    pristine: bool,
    peer_handler: Arc<PeerHandler>,
    health: Option<(HealthMonitor, watch::Receiver<HealthReport>)>,
    mesh: Arc<Mesh>,
    mesh_shutdown: CancellationToken,
}

/// The control socket and the metrics listener, bound at start, served once the groups
/// run.
struct Sockets {
    control: UnixListener,
    metrics: Option<TcpListener>,
}

/// The running groups.
struct Joined {
    control: Arc<Control>,
    loops: Vec<JoinHandle<()>>,
    /// A group loop that stopped on its own.
    fatal: mpsc::UnboundedReceiver<GroupStopped>,
    /// What systemd is told about each loop (taken once the node is ready).
    systemd: Vec<GroupLoopFeed>,
}

impl Node {
    /// Opens the store, the data plane, the health checks, the mesh and the sockets.
    async fn open(
        options: RunOptions,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(Node, Sockets), StartError> {
        let config = options.config;
        let key = ClusterKey::load(&config.cluster.key_file)?;
        // The store's lock also proves no other havip runs here, so reconciling below
        // cannot remove a live daemon's VIPs.
        let store = Store::open(&config.node.data_dir)?;
        let vip_sets: Vec<VipSet> = config.vip_groups.iter().map(VipSet::of).collect();
        let (data_plane, links) = vip::open::open(options.observe_only, &vip_sets).await?;
        let mut pristine = true;
        for group in &config.vip_groups {
            pristine &= store.is_pristine(&group.name)?;
        }
        let peer_handler = Arc::new(PeerHandler::new(pristine));
        // Health checks start before Raft, so their first results are in when it runs.
        let has_checks = config.node.role == Role::Gateway && !config.health.checks.is_empty();
        let health = has_checks.then(|| HealthMonitor::start(&config.health, shutdown.clone()));
        // The mesh outlives the group loops: they still need it to hand leadership over.
        let mesh_shutdown = CancellationToken::new();
        let peers = config.cluster.peers.iter();
        let mesh_config = MeshConfig {
            self_name: config.node.name.clone(),
            listen: config.cluster.listen,
            peers: peers.map(|p| (p.name.clone(), p.address)).collect(),
            key,
        };
        let mesh = Mesh::start(mesh_config, peer_handler.clone(), mesh_shutdown.clone()).await?;
        let sockets = Sockets {
            control: socket::bind(&config.control.socket)?,
            metrics: match config.control.metrics {
                Some(addr) => Some(prometheus::bind(addr).await?),
                None => None,
            },
        };
        let mesh = Arc::new(mesh);
        let node = Node {
            config,
            store,
            vip_sets,
            data_plane,
            links,
            pristine,
            peer_handler,
            health,
            mesh,
            mesh_shutdown,
        };
        Ok((node, sockets))
    }

    /// Joins the cluster: every group's Raft, loop and ticks, the control context over
    /// them, the re-announcements, and bootstrap (on a pristine store).
    async fn join(&self, shutdown: &watch::Receiver<bool>) -> Result<Joined, StartError> {
        let config = &self.config;
        let service = &self.peer_handler.raft;
        let rafts = group_raft::start_all(config, &self.store, &self.mesh, service).await?;
        let by_name: BTreeMap<String, Raft> = (config.vip_groups.iter().zip(&rafts))
            .map(|(group, r)| (group.name.clone(), r.raft.clone()))
            .collect();
        let members = Members::of(config);
        let proposer = Proposer::new(
            &members.me,
            &members.all,
            self.mesh.clone(),
            by_name.clone(),
        );
        let proposer = Arc::new(proposer);
        let (groups, fatal) = self.spawn_groups(rafts, &proposer, shutdown);
        let control = Arc::new(Control {
            members,
            groups: Groups(groups.iter().map(GroupHandle::of).collect()),
            proposer: proposer.clone(),
            health: self.health.as_ref().map(|(_, reports)| reports.clone()),
            data_plane: self.data_plane.clone(),
            mesh: self.mesh.clone(),
            store: self.store.clone(),
        });
        let _ = self.peer_handler.control.set(control.clone());
        let reannouncer = Reannouncer::of(&groups, self.data_plane.clone());
        reannouncer.spawn(self.links.as_ref(), self.mesh.connected(), shutdown);
        if self.pristine {
            let bootstrap = Bootstrap {
                self_name: config.node.name.clone(),
                members: bootstrap::voters(config),
                rafts: by_name,
                proposer,
                connected: self.mesh.connected(),
            };
            tokio::spawn(bootstrap.run(shutdown.clone()));
        }
        let systemd = groups
            .iter()
            .map(|g| GroupLoopFeed {
                group: g.vips.group.clone(),
                beat: g.beat.clone(),
                state: g.reported.clone(),
            })
            .collect();
        let loops = groups.into_iter().map(|g| g.task).collect();
        Ok(Joined {
            control,
            loops,
            fatal,
            systemd,
        })
    }

    /// Spawns each group's loop and ticks (`group::tasks`) and the node's health feed.
    fn spawn_groups(
        &self,
        rafts: Vec<GroupRaft>,
        proposer: &Arc<Proposer>,
        shutdown: &watch::Receiver<bool>,
    ) -> (Vec<RunningGroup>, mpsc::UnboundedReceiver<GroupStopped>) {
        let config = &self.config;
        let health = self.health.as_ref().map(|(_, reports)| {
            let checks = config.health.checks.clone();
            health::facts_feed(reports.clone(), checks, shutdown.clone())
        });
        let node = NodeParts {
            config,
            data_plane: self.data_plane.clone(),
            proposer: proposer.clone(),
            links: self.links.as_ref(),
            health,
            raft_service: self.peer_handler.raft.clone(),
            notifier: Notifier::start(config.notify.command.clone(), config.notify.timeout),
        };
        let (fatal_tx, fatal) = mpsc::unbounded_channel();
        let groups = config.vip_groups.iter().zip(&self.vip_sets).zip(rafts);
        let running = groups
            .map(|((group, vips), raft)| {
                tasks::spawn(&node, group, vips, raft, shutdown, &fatal_tx)
            })
            .collect();
        (running, fatal)
    }

    /// Releases, hands over, flushes and closes, within `SHUTDOWN_LIMIT`.
    async fn stop(self, joined: Joined, serving: Serving, shutdown: watch::Sender<bool>) {
        // A node on its way out must not be elected again while it hands over: with the
        // shutdown signal its `ticks` tasks stop standing for election, and openraft's own
        // elections are off (`group_raft::raft_config`).
        let _ = shutdown.send(true);
        let rest = async {
            for task in joined.loops {
                let _ = task.await;
            }
            for (_, group) in joined.control.groups.iter() {
                let _ = group.raft.shutdown().await;
            }
            self.store.drain().await;
            // The VIPs are gone by now; whoever watches this node (`status --watch`, a
            // test's watcher asking `Request::Held` every 10 ms) gets to see that before
            // the socket closes, instead of finding it silent and having to assume it
            // still holds until its last lease ends.
            tokio::time::sleep(CONTROL_LINGER).await;
            serving.stop().await;
            self.mesh_shutdown.cancel();
            self.mesh.stopped().await;
            if let Some((monitor, _)) = self.health {
                monitor.stopped().await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_LIMIT, rest).await.is_err() {
            tracing::warn!("shutdown did not finish within {SHUTDOWN_LIMIT:?}; exiting anyway");
        }
        let _ = std::fs::remove_file(&self.config.control.socket);
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

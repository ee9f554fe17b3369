//! `havip run`: wires the store, the peer mesh, one Raft and one control loop per VIP
//! group, the fact feeds, and the control socket, then waits for SIGTERM/SIGINT and shuts
//! down in the order that keeps the VIP safe: release the VIPs, hand leadership over,
//! flush the store, exit. SIGHUP and `havip reload` re-read the config (`reload`). It
//! decides nothing and answers no request itself (the group loops decide, `control/`
//! answers); it must never hold a VIP it has not been told to by the hold rule.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Backend, Config, Role};
use crate::consensus::Raft;
use crate::consensus::bootstrap;
use crate::consensus::group_raft;
use crate::consensus::lease::NodeTimers;
use crate::consensus::lease_record::LeaseRecord;
use crate::consensus::network::RaftService;
use crate::consensus::proposer::Proposer;
use crate::consensus::store::Store;
use crate::consensus::types::PeerNode;
use crate::control::dispatch::{self, Serving};
use crate::control::metrics as prometheus;
use crate::control::notify::Notifier;
use crate::control::peer::PeerHandler;
use crate::control::protocol::{Fingerprints, Response};
use crate::control::{Control, Members, Pools, socket};
use crate::group::GroupStopped;
use crate::group::tasks::GroupTasks;
use crate::haproxy::{self, Backends};
use crate::health::{HealthFacts, HealthReport, LiveHealth};
use crate::peer::{Mesh, MeshConfig};
use crate::systemd::{GroupLoopFeed, Systemd};
use crate::vip::link::LinkWatch;
use crate::vip::{self, DataPlane, VipSet};

mod error;
mod groups;
mod reload;
mod signals;

pub use error::StartError;
use signals::{hangups, recv_hangup, wait_for_signal};

pub struct RunOptions {
    pub config: Config,
    pub observe_only: bool,
    /// The fence process (`vip::fence`), started by `main` before it cleared the
    /// capabilities children inherit; none when observing only.
    pub fence: Option<Arc<vip::fence::Fence>>,
}

/// How long the control socket keeps answering after the groups have released.
const CONTROL_LINGER: Duration = Duration::from_millis(200);

/// How often each pool's HAProxy is read and put right when nothing changed: the time
/// an HAProxy that restarted runs with the states of its config file.
pub(super) const BACKEND_INTERVAL: Duration = Duration::from_secs(1);

/// Puts `backends` in `control` (for `havip backend` and `status`) and starts their HAProxy
/// appliers, feed and health reports, at start and when a reload replaces the pools; the
/// groups' loops must run already (the feed watches their states).
pub(super) fn start_pools(
    control: &Arc<Control>,
    backends: &[Backend],
    shutdown: &watch::Receiver<bool>,
) -> haproxy::Running {
    let (pools, status) = Backends::channels(backends);
    control.set_pools(Pools {
        config: backends.to_vec(),
        status,
    });
    pools.start(control.clone(), BACKEND_INTERVAL, shutdown.clone())
}

/// Graceful shutdown must be done within this, whatever the peers do.
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(1900);

/// Runs the daemon until SIGTERM/SIGINT. Returns after a graceful shutdown.
pub async fn run(options: RunOptions) -> Result<(), StartError> {
    let (shutdown_tx, shutdown) = watch::channel(false);
    let systemd = Systemd::from_env();
    let fence = options.fence.clone();
    let (node, sockets) = Node::open(options, &shutdown).await?;
    // A node that restarts has forgotten the leader leases it granted before it died;
    // sitting out the longest of them before joining makes sure none is still running:
    // its own, or a longer one a leader announced during a rollout of `[timers]`.
    let own = node.config.timers.leader_lease();
    if node.granted_before > own {
        tracing::info!(
            lease_ms = node.granted_before.as_millis() as u64,
            "sitting out a leader lease granted before the start, longer than this node's own"
        );
    }
    tokio::time::sleep(own.max(node.granted_before)).await;
    node.lease_record.started(own)?;
    // The fence had that long to start or to say why it cannot.
    if let Some(fence) = &fence {
        fence.check_running().map_err(StartError::Fence)?;
        tracing::info!(
            fence_pid = fence.pid(),
            "the fence runs: a frozen or killed daemon's VIPs go at the end of their hold lease"
        );
    }
    let mut joined = node.join(&shutdown).await?;
    // Ready once every group's Raft and loop runs (`Type=notify`); the status lines and
    // the watchdog come from the group loops.
    systemd.joined(joined.systemd.subscribe(), &shutdown);
    let control = joined.control.clone();
    let serving = dispatch::serve(
        control,
        sockets.control,
        sockets.prometheus,
        shutdown.clone(),
    );
    let config = &node.config;
    tracing::info!(node = %config.node.name, role = ?config.node.role, groups = config.vip_groups.len(),
        data_plane = node.data_plane.kind(), "havip running");
    let mut node = node;
    let mut hangups = hangups();
    let fatal = loop {
        tokio::select! {
            _ = wait_for_signal() => break None,
            Some(error) = joined.fatal.recv() => break Some(error),
            Some(()) = recv_hangup(&mut hangups) => {
                reload::reload(&mut node, &mut joined, &shutdown).await;
            }
            Some(reply) = joined.reloads.recv() => {
                let response = reload::reload(&mut node, &mut joined, &shutdown).await;
                let _ = reply.send(response);
            }
        }
    };
    // A Raft that stopped on a failed write says so, with the fix (issue 14 item 8).
    let fatal: Option<StartError> = fatal.map(|stopped| match node.store.write_failure() {
        Some(failure) => StartError::StoreFailed { stopped, failure },
        None => stopped.into(),
    });
    match &fatal {
        Some(error) => tracing::error!("stopping: {error}"),
        None => tracing::info!("shutting down: releasing VIPs, handing leadership over"),
    }
    systemd.stopping();
    node.stop(joined, serving, shutdown_tx).await;
    match fatal {
        Some(error) => Err(error),
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
    data_plane: Arc<dyn DataPlane>,
    links: Option<LinkWatch>,
    /// No group had any state in the store at start.
    pristine: bool,
    peer_handler: Arc<PeerHandler>,
    /// The longest lease granted, on disk, and what it said at start (`run` sits it out).
    lease_record: Arc<LeaseRecord>,
    granted_before: Duration,
    /// The health checks (gateways with checks): replaceable by a reload, with the
    /// report (status) and facts (group loops) feeds that outlive each monitor.
    health: Option<(
        LiveHealth,
        watch::Receiver<HealthReport>,
        watch::Receiver<HealthFacts>,
    )>,
    mesh: Arc<Mesh>,
    mesh_shutdown: CancellationToken,
}

/// The control socket and the Prometheus listener, bound at start, served once the groups
/// run.
struct Sockets {
    control: UnixListener,
    prometheus: Option<TcpListener>,
}

/// The running groups, and what a reload needs to start or stop one.
struct Joined {
    control: Arc<Control>,
    loops: BTreeMap<String, GroupTasks>,
    /// A group loop that stopped on its own.
    fatal: mpsc::UnboundedReceiver<GroupStopped>,
    fatal_tx: mpsc::UnboundedSender<GroupStopped>,
    /// `havip reload` on the control socket, answered by the main loop.
    reloads: mpsc::Receiver<oneshot::Sender<Response>>,
    proposer: Arc<Proposer>,
    notifier: Notifier,
    /// What systemd is told about each running loop (its status and watchdog).
    systemd: watch::Sender<Vec<GroupLoopFeed>>,
    /// Every node of the peer list, this one included, by name: the membership drivers
    /// follow it, and a reload that changes the list changes it.
    listed: watch::Sender<BTreeMap<String, PeerNode>>,
    /// The HAProxy appliers of the `[[backend]]` pools in effect (a reload replaces them).
    pools: haproxy::Running,
}

impl Node {
    /// Opens the store, the data plane, the health checks, the mesh and the sockets.
    async fn open(
        options: RunOptions,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(Node, Sockets), StartError> {
        let config = options.config;
        let keys = config.load_keys()?;
        // The store's lock also proves no other havip runs here, so reconciling below
        // cannot remove a live daemon's VIPs.
        let store = Store::open(&config.node.data_dir)?;
        let vip_sets: Vec<VipSet> = config.vip_groups.iter().map(VipSet::of).collect();
        let (data_plane, links) =
            vip::open::open(options.observe_only, &vip_sets, options.fence).await?;
        let mut pristine = true;
        for group in &config.vip_groups {
            pristine &= store.is_pristine(&group.name)?;
        }
        let (lease_record, granted_before) = LeaseRecord::open(&config.node.data_dir)?;
        let lease_record = Arc::new(lease_record);
        let raft_service =
            RaftService::new(NodeTimers::new(config.timers), Some(lease_record.clone()));
        let peer_handler = Arc::new(PeerHandler::new(pristine, raft_service));
        // Health checks start before Raft, so their first results are in when it runs.
        let has_checks = config.node.role == Role::Gateway && !config.health.checks.is_empty();
        let health = has_checks.then(|| LiveHealth::start(&config.health, shutdown.clone()));
        // The mesh outlives the group loops: they still need it to hand leadership over.
        let mesh_shutdown = CancellationToken::new();
        let peers = config.cluster.peers.iter();
        let mesh_config = MeshConfig {
            self_name: config.node.name.clone(),
            listen: config.cluster.listen,
            peers: peers.map(|p| (p.name.clone(), p.address)).collect(),
            keys,
        };
        let mesh = Mesh::start(mesh_config, peer_handler.clone(), mesh_shutdown.clone()).await?;
        let sockets = Sockets {
            control: socket::bind(&config.control.socket)?,
            prometheus: match config.control.metrics {
                Some(addr) => Some(prometheus::bind(addr).await?),
                None => None,
            },
        };
        let mesh = Arc::new(mesh);
        let node = Node {
            config,
            store,
            data_plane,
            links,
            pristine,
            peer_handler,
            lease_record,
            granted_before,
            health,
            mesh,
            mesh_shutdown,
        };
        Ok((node, sockets))
    }

    /// Joins the cluster: every group's Raft, loop and ticks, the control context over
    /// them, and bootstrap (for the groups without a membership).
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
        let notifier = Notifier::start(&config.notify);
        let (fatal_tx, fatal) = mpsc::unbounded_channel();
        let (reload_tx, reloads) = mpsc::channel(4);
        let mut joined = Joined {
            control: Arc::new(Control {
                members: RwLock::new(Arc::new(members)),
                groups: RwLock::default(),
                proposer: proposer.clone(),
                health: self.health.as_ref().map(|(_, reports, _)| reports.clone()),
                data_plane: self.data_plane.clone(),
                mesh: self.mesh.clone(),
                store: self.store.clone(),
                fingerprints: RwLock::new(Fingerprints::of(config, &self.mesh.keys())),
                reloads: reload_tx,
                pools: RwLock::default(),
                reloads_begun: Default::default(),
            }),
            loops: BTreeMap::new(),
            fatal,
            fatal_tx,
            reloads,
            proposer,
            notifier,
            systemd: watch::Sender::new(Vec::new()),
            listed: watch::Sender::new(listed_nodes(config)),
            pools: haproxy::Running::default(),
        };
        for (group, raft) in config.vip_groups.iter().zip(rafts) {
            self.spawn_group(&mut joined, group, raft, shutdown);
        }
        joined.pools = start_pools(&joined.control, &config.backends, shutdown);
        let _ = self.peer_handler.control.set(joined.control.clone());
        self.bootstrap(&joined, by_name, self.pristine, shutdown);
        Ok(joined)
    }

    /// Releases, hands over, flushes and closes, within `SHUTDOWN_LIMIT`.
    async fn stop(self, joined: Joined, serving: Serving, shutdown: watch::Sender<bool>) {
        // A node on its way out must not be elected again while it hands over: with the
        // shutdown signal its `ticks` tasks stop standing for election, and openraft's own
        // elections are off (`group_raft::raft_config`).
        let _ = shutdown.send(true);
        let rest = async {
            for (_, group) in joined.loops {
                let _ = group.task.await;
            }
            for (_, group) in joined.control.groups().iter() {
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
            if let Some((live, _, _)) = self.health {
                live.stopped().await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_LIMIT, rest).await.is_err() {
            tracing::warn!("shutdown did not finish within {SHUTDOWN_LIMIT:?}; exiting anyway");
        }
        let _ = std::fs::remove_file(&self.config.control.socket);
    }
}

/// Every node of `config`'s peer list, this one included, by name.
fn listed_nodes(config: &Config) -> BTreeMap<String, PeerNode> {
    (bootstrap::voters(config).into_values())
        .map(|node| (node.name.clone(), node))
        .collect()
}

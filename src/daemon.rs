//! `havip run`: wires the store, the peer mesh, one Raft and one control loop per VIP
//! group, and the control socket, then waits for SIGTERM/SIGINT and shuts down in the
//! order that keeps the VIP safe: release the VIPs, hand leadership over, flush the
//! store, exit. It must never hold a VIP it has not been told to by the hold rule.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver as _;
use tokio::sync::watch;

use crate::config::Config;
use crate::consensus::Raft;
use crate::consensus::network::{PeerNetwork, RaftService};
use crate::consensus::rpc::RAFT_CHANNEL;
use crate::consensus::state::{Command, GroupState};
use crate::consensus::store::Store;
use crate::consensus::ticks::{self, Pace};
use crate::consensus::types::{NodeId, PeerNode, node_id};
use crate::control::metrics::{self as prometheus, CheckMetrics, GroupMetrics, MetricsSnapshot};
use crate::control::notify::Notifier;
use crate::control::protocol::{
    CONTROL_CHANNEL, GroupHistory, GroupStatus, NodeChecks, NodeStatus, PeerReply, PeerRequest,
    Request, Response, StatusReport,
};
use crate::control::socket;
use crate::group::{GroupLoop, GroupSetup, LocalFacts, LocalView, Proposer, unix_ms};
use crate::health::{self, CheckInput, CheckReport, CheckState, HealthMonitor, HealthReport};
use crate::hold::{TICK, hold_lease};
use crate::key::ClusterKey;
use crate::peer::{Mesh, MeshConfig, RequestHandler};
use crate::policy::{GroupRules, Role};
use crate::vip::link::{LinkStates, LinkWatch};
use crate::vip::netlink::NetlinkDataPlane;
use crate::vip::observe::ObserveOnly;
use crate::vip::{DataPlane, DataPlaneError, VipSet, caps};

/// Errors that stop the daemon before it runs; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] crate::key::KeyError),
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    Mesh(String),
    #[error("{0}")]
    Raft(String),
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error("{0}")]
    Metrics(String),
    /// Missing CAP_NET_ADMIN / CAP_NET_RAW, with what to do.
    #[error("{0}")]
    Privileges(String),
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
    #[error(transparent)]
    LinkWatch(#[from] crate::vip::link::LinkWatchError),
    /// Not a start error: the daemon ran and a group's Raft stopped under it.
    #[error("{0}")]
    Fatal(String),
}

pub struct RunOptions {
    pub config: Config,
    pub observe_only: bool,
}

/// How long a peer may take to answer a control request (status, forwarded writes).
const PEER_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the leader waits for a write to commit (less than PEER_TIMEOUT, so that a
/// forwarded write's answer arrives before the forwarder gives up on it).
const WRITE_TIMEOUT: Duration = Duration::from_millis(400);

/// Graceful shutdown must be done within this, whatever the peers do.
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(1900);

/// One group as the daemon sees it.
struct GroupHandle {
    raft: Raft,
    state: watch::Receiver<GroupState>,
    view: Arc<Mutex<LocalView>>,
    addresses: Vec<String>,
    vips: VipSet,
}

/// The running daemon's shared parts.
pub struct Daemon {
    config: Config,
    /// This node's health report (gateways with checks).
    health: Option<watch::Receiver<HealthReport>>,
    mesh: Arc<Mesh>,
    groups: BTreeMap<String, GroupHandle>,
    data_plane: Arc<dyn DataPlane>,
    names: BTreeMap<NodeId, String>,
    /// For its disk statistics.
    store: Store,
}

/// Answers the mesh: Raft traffic to the groups, control traffic to the daemon (once it
/// exists; before that only `Pristine` can be answered).
struct PeerHandler {
    raft: RaftService,
    daemon: OnceLock<Arc<Daemon>>,
    /// Whether the store was pristine at start; once the daemon runs, its live Raft
    /// state answers instead.
    pristine_at_start: bool,
}

impl RequestHandler for PeerHandler {
    fn handle(
        &self,
        from: &str,
        channel: u16,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        match channel {
            RAFT_CHANNEL => self.raft.handle(from, payload),
            CONTROL_CHANNEL => {
                let daemon = self.daemon.get().cloned();
                let pristine = daemon
                    .as_ref()
                    .map_or(self.pristine_at_start, |d| d.is_pristine());
                Box::pin(async move {
                    let request: PeerRequest = serde_json::from_slice(&payload)
                        .map_err(|e| format!("malformed control request: {e}"))?;
                    let reply = match (request, daemon) {
                        (PeerRequest::Pristine, _) => PeerReply::Pristine(pristine),
                        (request, Some(daemon)) => daemon.handle_peer(request).await,
                        (_, None) => PeerReply::Failed("still starting".into()),
                    };
                    serde_json::to_vec(&reply).map_err(|e| e.to_string())
                })
            }
            other => Box::pin(async move { Err(format!("unknown channel {other}")) }),
        }
    }
}

fn raft_config(config: &Config, group: &str) -> Result<openraft::Config, StartError> {
    let timers = &config.timers;
    let lease = timers.leader_lease();
    let (election_min, election_max) = ticks::raft_election_ms(lease);
    openraft::Config {
        cluster_name: group.to_string(),
        heartbeat_interval: ticks::raft_heartbeat_ms(timers.heartbeat, lease),
        election_timeout_min: election_min,
        election_timeout_max: election_max,
        enable_pre_vote: Some(true),
        // A leader restored from disk after a restart would resume its old term with
        // followers whose leases a hand-over may have disabled: it must win a new election.
        enable_leader_restore: Some(false),
        // Heartbeats and elections are timed by `ticks`, not by openraft's tick.
        enable_tick: false,
        enable_elect: false,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(format!("{}: timers: {e}", config.source.display())))
}

/// Runs the daemon until SIGTERM/SIGINT. Returns after a graceful shutdown.
pub async fn run(options: RunOptions) -> Result<(), StartError> {
    let config = options.config;
    let key = ClusterKey::load(&config.cluster.key_file)?;
    // The store's lock also proves no other havip runs here, so reconciling below cannot
    // remove a live daemon's VIPs.
    let store = Store::open(&config.node.data_dir).map_err(|e| StartError::Store(e.to_string()))?;
    let vip_sets: Vec<VipSet> = config.vip_groups.iter().map(VipSet::of).collect();
    let (data_plane, links): (Arc<dyn DataPlane>, Option<watch::Receiver<LinkStates>>) =
        if options.observe_only {
            (Arc::new(ObserveOnly::default()), None)
        } else {
            let missing = caps::missing();
            if !missing.is_empty() {
                return Err(StartError::Privileges(caps::explain(&missing)));
            }
            let netlink = NetlinkDataPlane::new()?;
            netlink.reconcile(&vip_sets).await?;
            let interfaces = vip_sets
                .iter()
                .filter(|v| !v.interface.is_empty())
                .map(|v| v.interface.clone())
                .collect();
            let links = LinkWatch::start(interfaces).await?.subscribe();
            (Arc::new(netlink), Some(links))
        };

    let mut pristine = true;
    for group in &config.vip_groups {
        pristine &= store
            .is_pristine(&group.name)
            .map_err(|e| StartError::Store(e.to_string()))?;
    }
    let handler = Arc::new(PeerHandler {
        raft: RaftService::default(),
        daemon: OnceLock::new(),
        pristine_at_start: pristine,
    });
    let (shutdown_tx, shutdown) = watch::channel(false);
    // Health checks start before Raft, so their first results are in when it runs.
    let has_checks = config.node.role == Role::Gateway && !config.health.checks.is_empty();
    let (health_monitor, health) = if has_checks {
        let (monitor, reports) = HealthMonitor::start(&config.health, shutdown.clone());
        (Some(monitor), Some(reports))
    } else {
        (None, None)
    };
    // The mesh outlives the group loops: they still need it to hand leadership over.
    let mesh_shutdown = tokio_util::sync::CancellationToken::new();
    let mesh_config = MeshConfig {
        self_name: config.node.name.clone(),
        listen: config.cluster.listen,
        peers: config
            .cluster
            .peers
            .iter()
            .map(|p| (p.name.clone(), p.address))
            .collect(),
        key,
    };
    let mesh = Arc::new(
        Mesh::start(mesh_config, handler.clone(), mesh_shutdown.clone())
            .await
            .map_err(|e| StartError::Mesh(e.to_string()))?,
    );
    let listener = socket::bind(&config.control.socket)?;
    let metrics_listener = match config.control.metrics {
        Some(addr) => Some(
            prometheus::bind(addr)
                .await
                .map_err(|e| StartError::Metrics(e.to_string()))?,
        ),
        None => None,
    };

    // A node that restarts has forgotten the leader leases it granted before it died;
    // sitting out one lease before joining makes sure none of them is still running.
    let leader_lease = config.timers.leader_lease();
    tokio::time::sleep(leader_lease).await;

    let members: BTreeMap<NodeId, PeerNode> = config
        .cluster
        .peers
        .iter()
        .map(|p| {
            (
                node_id(&p.name),
                PeerNode {
                    name: p.name.clone(),
                    addr: p.address.to_string(),
                },
            )
        })
        .collect();
    let names = members
        .iter()
        .map(|(id, node)| (*id, node.name.clone()))
        .collect();
    let self_id = node_id(&config.node.name);

    let mut groups = BTreeMap::new();
    let mut loops = Vec::new();
    let mut facts_txs = Vec::new();
    for (group, vips) in config.vip_groups.iter().zip(&vip_sets) {
        let (log_store, state_machine) = store
            .group(&group.name)
            .map_err(|e| StartError::Store(e.to_string()))?;
        let state = state_machine.watch();
        let raft = Raft::new(
            self_id,
            Arc::new(raft_config(&config, &group.name)?),
            PeerNetwork::new(mesh.clone(), &group.name),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(format!("group {}: {e}", group.name)))?;
        handler.raft.register(&group.name, raft.clone());
        let view = Arc::new(Mutex::new(LocalView::default()));
        groups.insert(
            group.name.clone(),
            GroupHandle {
                raft: raft.clone(),
                state: state.clone(),
                view: view.clone(),
                addresses: group.addresses.iter().map(|a| a.to_string()).collect(),
                vips: vips.clone(),
            },
        );
        // Each group's own facts: its link is its interface's.
        let (facts_tx, facts) = watch::channel(LocalFacts::initial(has_checks));
        facts_txs.push((vips.interface.clone(), Arc::new(facts_tx)));
        loops.push((group, vips.clone(), raft, state, view, facts));
    }

    let daemon = Arc::new(Daemon {
        config: config.clone(),
        mesh: mesh.clone(),
        groups,
        data_plane: data_plane.clone(),
        names,
        health: health.clone(),
        store: store.clone(),
    });
    let _ = handler.daemon.set(daemon.clone());

    let notifier = Notifier::start(config.notify.command.clone(), config.notify.timeout);
    let mut tasks = Vec::new();
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for (group, vips, raft, state, view, facts) in loops {
        let setup = GroupSetup {
            self_name: config.node.name.clone(),
            role: config.node.role,
            priority: group.priority,
            vips,
            rules: GroupRules {
                failback: group.failback,
                failback_delay: group.failback_delay,
                on_all_unhealthy: group.on_all_unhealthy,
            },
            members: config
                .cluster
                .peers
                .iter()
                .map(|p| p.name.clone())
                .collect(),
            leader_lease,
            hold_lease: hold_lease(leader_lease, TICK),
            notifier: notifier.clone(),
        };
        let proposer: Proposer = {
            let daemon = daemon.clone();
            let name = group.name.clone();
            Arc::new(move |command| {
                let daemon = daemon.clone();
                let name = name.clone();
                Box::pin(async move { daemon.propose(&name, command).await })
            })
        };
        let group_loop = GroupLoop::new(
            setup,
            raft.clone(),
            state,
            facts,
            data_plane.clone(),
            proposer,
            view,
        );
        let fatal = fatal_tx.clone();
        let group_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = group_loop.run(group_shutdown).await {
                let _ = fatal.send(e);
            }
        }));
        tokio::spawn(ticks::run(
            group.name.clone(),
            self_id,
            raft,
            handler.raft.clone(),
            Pace {
                heartbeat: config.timers.heartbeat,
                stand_min: config.timers.election_timeout_min,
                stand_max: config.timers.election_timeout_max,
                // The only gateway left may have a shorter log and need the witness to lead
                // first; otherwise the witness must never slow a gateway's election.
                witness_silence: (config.node.role == Role::Witness).then_some(leader_lease * 4),
                grid: crate::timer_grid::current(),
            },
            shutdown.clone(),
        ));
    }
    if let Some(health) = health.clone() {
        tokio::spawn(health_facts(
            health,
            config.health.checks.clone(),
            facts_txs.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(links) = links {
        tokio::spawn(link_facts(
            daemon.clone(),
            links,
            facts_txs,
            shutdown.clone(),
        ));
    }
    tokio::spawn(announce_on_reconnect(daemon.clone(), shutdown.clone()));
    if pristine {
        tokio::spawn(bootstrap(daemon.clone(), members, shutdown.clone()));
    }

    let control: socket::Handler = {
        let daemon = daemon.clone();
        Arc::new(move |request| {
            let daemon = daemon.clone();
            Box::pin(async move { daemon.handle_request(request).await })
        })
    };
    // The control socket answers until the groups have released and handed over, so that
    // a watcher asking what the data plane holds (`Request::Held`) sees the release.
    let (control_stop, control_stopped) = watch::channel(false);
    let server = tokio::spawn(socket::serve(listener, control, control_stopped));
    if let Some(listener) = metrics_listener {
        let daemon = daemon.clone();
        let source: prometheus::SnapshotSource = Arc::new(move || {
            let daemon = daemon.clone();
            Box::pin(async move { daemon.metrics_snapshot() })
        });
        tokio::spawn(prometheus::serve(listener, source, shutdown.clone()));
    }
    tracing::info!(node = %config.node.name, role = ?config.node.role, groups = config.vip_groups.len(),
        data_plane = data_plane.kind(), "havip running");

    let fatal = tokio::select! {
        _ = wait_for_signal() => None,
        error = fatal_rx.recv() => error,
    };
    match &fatal {
        Some(error) => tracing::error!("stopping: {error}"),
        None => tracing::info!("shutting down: releasing VIPs, handing leadership over"),
    }
    // A node on its way out must not be elected again while it hands over: with the
    // shutdown signal its `ticks` tasks stop standing for election, and openraft's own
    // elections are off (`raft_config`).
    let _ = shutdown_tx.send(true);
    let rest = async {
        for task in tasks {
            let _ = task.await;
        }
        for handle in daemon.groups.values() {
            let _ = handle.raft.shutdown().await;
        }
        store.drain().await;
        let _ = control_stop.send(true);
        let _ = server.await;
        mesh_shutdown.cancel();
        mesh.stopped().await;
        if let Some(monitor) = health_monitor {
            monitor.stopped().await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_LIMIT, rest).await.is_err() {
        tracing::warn!("shutdown did not finish within {SHUTDOWN_LIMIT:?}; exiting anyway");
    }
    let _ = std::fs::remove_file(&config.control.socket);
    match fatal {
        Some(error) => Err(StartError::Fatal(error)),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Feeds each group's `link_up` from the link watch (a down link makes this node
/// ineligible at once; the policy and the hold rule then release), and announces the
/// held groups again when their link comes back.
async fn link_facts(
    daemon: Arc<Daemon>,
    mut links: watch::Receiver<LinkStates>,
    facts: Vec<(String, Arc<watch::Sender<LocalFacts>>)>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let states = links.borrow_and_update().clone();
        for (interface, tx) in &facts {
            let up = interface.is_empty() || states.get(interface).copied().unwrap_or(false);
            let changed = tx.send_if_modified(|f| {
                let changed = f.link_up != up;
                f.link_up = up;
                changed
            });
            if changed && up {
                tracing::info!(interface = %interface, "link up again");
                daemon
                    .announce_held(|vips| vips.interface == *interface)
                    .await;
            } else if changed {
                tracing::warn!(interface = %interface, "link down: this node is not eligible");
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = links.changed() => if changed.is_err() { return },
        }
    }
}

/// Turns the health monitor's reports into every group's local facts. Only what changes
/// on a transition is copied (state, weights, which checks are down), so a flapping
/// probe produces no Raft traffic until rise/fall settle it.
async fn health_facts(
    mut reports: watch::Receiver<HealthReport>,
    checks: Vec<crate::config::HealthCheck>,
    facts: Vec<(String, Arc<watch::Sender<LocalFacts>>)>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let report = reports.borrow_and_update().clone();
        let inputs: Vec<CheckInput> = checks
            .iter()
            .map(|c| CheckInput {
                name: &c.name,
                weight: c.weight,
                state: report
                    .checks
                    .iter()
                    .find(|r| r.name == c.name)
                    .and_then(|r| (r.probes > 0).then_some(r.state)),
            })
            .collect();
        let delta = health::priority_delta(&inputs);
        let down: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.state == CheckState::Down)
            .map(|c| c.name.as_str())
            .collect();
        let detail = if down.is_empty() {
            String::new()
        } else {
            format!("checks down: {}", down.join(", "))
        };
        let healthy = report.node.status != health::NodeStatus::Unhealthy;
        for (_, tx) in &facts {
            tx.send_if_modified(|f| {
                let next = LocalFacts {
                    healthy,
                    pending: report.pending,
                    priority_delta: delta,
                    health_detail: detail.clone(),
                    ..f.clone()
                };
                let changed = *f != next;
                *f = next;
                changed
            });
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = reports.changed() => if changed.is_err() { return },
        }
    }
}

/// A peer that was unreachable may have been the holder for a client meanwhile: when one
/// (re)connects, announce every held group again so the clients' caches point here.
async fn announce_on_reconnect(daemon: Arc<Daemon>, mut shutdown: watch::Receiver<bool>) {
    let mut connected = daemon.mesh.connected();
    let mut before = connected.borrow_and_update().clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = connected.changed() => if changed.is_err() { return },
        }
        let now = connected.borrow_and_update().clone();
        if now.difference(&before).next().is_some() {
            daemon.announce_held(|_| true).await;
        }
        before = now;
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

/// How long a pristine cluster waits for every configured node before it bootstraps
/// with a majority (the others join later and are caught up by the leader).
const BOOTSTRAP_WAIT_FOR_ALL: Duration = Duration::from_secs(5);

/// The first time the nodes of a pristine cluster can talk, the node whose name sorts
/// first among those connected initializes every group with ALL configured voters. It
/// waits for every node for a while, then settles for a majority, so that one node down
/// at first start does not keep the cluster from forming. Two nodes may both initialize
/// (each first among what it sees); openraft accepts that when the membership is
/// identical, which it is: it comes from the configured peer list. No manual init step;
/// a node with stored state never initializes.
async fn bootstrap(
    daemon: Arc<Daemon>,
    members: BTreeMap<NodeId, PeerNode>,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = daemon.config.node.name.clone();
    let peers: BTreeSet<String> = members
        .values()
        .map(|n| n.name.clone())
        .filter(|n| *n != me)
        .collect();
    let majority = members.len() / 2 + 1;
    let started = tokio::time::Instant::now();
    let mut connected = daemon.mesh.connected();
    loop {
        if *shutdown.borrow() || !daemon.is_pristine() {
            return;
        }
        let reachable: Vec<String> = peers
            .iter()
            .filter(|p| connected.borrow().contains(*p))
            .cloned()
            .collect();
        let all = reachable.len() == peers.len();
        let enough =
            all || (reachable.len() + 1 >= majority && started.elapsed() >= BOOTSTRAP_WAIT_FOR_ALL);
        let first = reachable.iter().all(|p| *p > me);
        if enough && first {
            let answers = join_all(
                reachable
                    .iter()
                    .map(|p| daemon.ask(p, &PeerRequest::Pristine)),
            )
            .await;
            if answers
                .iter()
                .any(|a| matches!(a, Ok(PeerReply::Pristine(false))))
            {
                tracing::info!("a peer already has cluster state: not bootstrapping, joining it");
                return;
            }
            if answers
                .iter()
                .all(|a| matches!(a, Ok(PeerReply::Pristine(true))))
            {
                for (name, handle) in &daemon.groups {
                    match handle.raft.initialize(members.clone()).await {
                        Ok(()) => tracing::info!(group = %name, voters = members.len(),
                            connected = reachable.len() + 1, "bootstrapped the group"),
                        Err(e) => tracing::warn!(group = %name, "bootstrap: {e}"),
                    }
                }
                return;
            }
        } else if !enough {
            tracing::debug!(
                "bootstrap: {} of {} peers connected",
                reachable.len(),
                peers.len()
            );
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = connected.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

impl Daemon {
    /// No group has a membership yet: this node has never been part of a cluster.
    fn is_pristine(&self) -> bool {
        self.groups.values().all(|h| {
            h.raft
                .metrics()
                .borrow_watched()
                .membership_config
                .membership()
                .voter_ids()
                .next()
                .is_none()
        })
    }

    fn name_of(&self, id: Option<NodeId>) -> Option<String> {
        id.and_then(|id| self.names.get(&id).cloned())
    }

    async fn ask(&self, peer: &str, request: &PeerRequest) -> Result<PeerReply, String> {
        let payload = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        let reply = self
            .mesh
            .request(peer, CONTROL_CHANNEL, payload, PEER_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&reply).map_err(|e| format!("malformed reply from {peer}: {e}"))
    }

    /// Commits `command` in `group`: locally when this node leads, else through the
    /// leader. Returns once committed, or an error after a bounded number of attempts.
    pub async fn propose(&self, group: &str, command: Command) -> Result<(), String> {
        let handle = self
            .groups
            .get(group)
            .ok_or_else(|| format!("no group named {group:?}"))?;
        let self_id = node_id(&self.config.node.name);
        let mut last_error = String::from("no leader");
        for _ in 0..20 {
            let leader = handle.raft.metrics().borrow_watched().current_leader;
            match leader {
                Some(id) if id == self_id => {
                    match handle.raft.client_write(command.clone()).await {
                        Ok(_) => return Ok(()),
                        Err(e) => last_error = e.to_string(),
                    }
                }
                Some(id) => {
                    let peer = self.name_of(Some(id)).unwrap_or_default();
                    match self
                        .ask(
                            &peer,
                            &PeerRequest::Write {
                                group: group.into(),
                                command: command.clone(),
                            },
                        )
                        .await
                    {
                        Ok(PeerReply::Written) => return Ok(()),
                        Ok(PeerReply::Failed(e)) => last_error = format!("{peer}: {e}"),
                        Ok(_) => last_error = format!("{peer} is no longer the leader"),
                        Err(e) => last_error = format!("{peer}: {e}"),
                    }
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "group {group}: the change was not committed ({last_error}); is a majority of the nodes up?"
        ))
    }

    /// Commits one command per group, in order; on a failure says which groups were
    /// already changed, so the operator knows what to undo or retry.
    async fn propose_all(&self, commands: Vec<(String, Command)>) -> Result<(), String> {
        let mut done: Vec<String> = Vec::new();
        for (group, command) in commands {
            if let Err(e) = self.propose(&group, command).await {
                return Err(if done.is_empty() {
                    e
                } else {
                    format!("{e}; already committed in: {}", done.join(", "))
                });
            }
            done.push(group);
        }
        Ok(())
    }

    async fn handle_peer(&self, request: PeerRequest) -> PeerReply {
        match request {
            PeerRequest::Pristine => PeerReply::Pristine(false),
            PeerRequest::Holdings => PeerReply::Holdings(self.holdings()),
            PeerRequest::Checks => PeerReply::Checks(self.local_checks()),
            PeerRequest::Write { group, command } => {
                let Some(handle) = self.groups.get(&group) else {
                    return PeerReply::Failed(format!("no group named {group:?} here"));
                };
                let metrics = handle.raft.metrics().borrow_watched().clone();
                if metrics.current_leader != Some(node_id(&self.config.node.name)) {
                    return PeerReply::NotLeader {
                        leader: self.name_of(metrics.current_leader),
                    };
                }
                match tokio::time::timeout(WRITE_TIMEOUT, handle.raft.client_write(command)).await {
                    Ok(Ok(_)) => PeerReply::Written,
                    Ok(Err(e)) => PeerReply::Failed(e.to_string()),
                    Err(_) => PeerReply::Failed(format!("not committed within {WRITE_TIMEOUT:?}")),
                }
            }
        }
    }

    fn metrics_snapshot(&self) -> MetricsSnapshot {
        let self_id = node_id(&self.config.node.name);
        let counters = self.mesh.counters();
        MetricsSnapshot {
            node: self.config.node.name.clone(),
            is_witness: self.config.node.role == Role::Witness,
            groups: self
                .groups
                .iter()
                .map(|(name, handle)| {
                    let view = handle.view.lock().map(|v| v.clone()).unwrap_or_default();
                    let metrics = handle.raft.metrics().borrow_watched().clone();
                    GroupMetrics {
                        name: name.clone(),
                        is_leader: metrics.current_leader == Some(self_id)
                            && metrics.state == ServerState::Leader,
                        holding: view.holds_now(),
                        term: metrics.current_term,
                        quorum_ack_age: view.quorum_ack_age,
                        hold_transitions: view.hold_transitions,
                        lateness: view.lateness,
                    }
                })
                .collect(),
            checks: self
                .local_checks()
                .into_iter()
                .map(|c| CheckMetrics {
                    name: c.name,
                    up: c.state == CheckState::Up,
                    last_latency: Duration::from_secs_f64(c.last_latency_ms.max(0.0) / 1000.0),
                })
                .collect(),
            peers_connected: self.mesh.connected().borrow().len(),
            peers_configured: self.config.cluster.peers.len().saturating_sub(1),
            rejected: vec![
                ("handshake", counters.rejected_handshakes),
                ("malformed_frame", counters.malformed_frames),
                ("unknown_version", counters.unknown_version),
                ("unknown_peer", counters.unknown_peer),
            ],
            disk: self.store.disk_stats(),
        }
    }

    /// Sends a fresh announcement burst for every held group `which` selects.
    async fn announce_held(&self, which: impl Fn(&VipSet) -> bool) {
        for handle in self.groups.values() {
            let holds = handle.view.lock().is_ok_and(|v| v.holds_now());
            if holds
                && which(&handle.vips)
                && let Err(e) = self.data_plane.announce(&handle.vips).await
            {
                tracing::warn!(group = %handle.vips.group, "cannot announce the VIPs: {e}");
            }
        }
    }

    /// The configured node names, for error messages.
    fn members(&self) -> String {
        self.config
            .cluster
            .peers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn local_checks(&self) -> Vec<CheckReport> {
        self.health
            .as_ref()
            .map(|h| h.borrow().checks.clone())
            .unwrap_or_default()
    }

    fn holdings(&self) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, h)| h.view.lock().map(|v| v.holds_now()).unwrap_or(false))
            .map(|(name, _)| name.clone())
            .collect()
    }

    async fn handle_request(&self, request: Request) -> Response {
        match request {
            Request::Status => Response::Status(self.status().await),
            Request::Holdings => Response::Holdings {
                groups: self.holdings(),
            },
            Request::Held => Response::held(self.data_plane.kind(), self.data_plane.held()),
            Request::History { group } => {
                let groups = self
                    .groups
                    .iter()
                    .filter(|(name, _)| group.as_ref().is_none_or(|g| g == *name))
                    .map(|(name, h)| GroupHistory {
                        group: name.clone(),
                        entries: h.state.borrow().history.iter().cloned().collect(),
                    })
                    .collect::<Vec<_>>();
                if groups.is_empty() {
                    return Response::Error {
                        message: format!("no group named {:?}", group.unwrap_or_default()),
                    };
                }
                Response::History { groups }
            }
            Request::Failover { group, to } => self.failover(group, to).await,
            Request::Maintenance { node, on } => self.maintenance(node, on).await,
        }
    }

    fn selected_groups(&self, group: &Option<String>) -> Result<Vec<String>, String> {
        match group {
            Some(g) if self.groups.contains_key(g) => Ok(vec![g.clone()]),
            Some(g) => Err(format!(
                "no group named {g:?}; groups here: {}",
                self.groups.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            None => Ok(self.groups.keys().cloned().collect()),
        }
    }

    async fn failover(&self, group: Option<String>, to: Option<String>) -> Response {
        let groups = match self.selected_groups(&group) {
            Ok(g) => g,
            Err(message) => return Response::Error { message },
        };
        if let Some(node) = &to {
            for g in &groups {
                let known = self.groups[g]
                    .state
                    .borrow()
                    .nodes
                    .get(node)
                    .and_then(|n| n.facts.clone());
                match known {
                    Some(f) if f.role == Role::Gateway => {}
                    Some(_) => {
                        return Response::Error {
                            message: format!("{node} is a witness: it never holds a VIP"),
                        };
                    }
                    None if self.config.peer(node).is_none() => {
                        return Response::Error {
                            message: format!(
                                "{node} is not a cluster member (members: {})",
                                self.members()
                            ),
                        };
                    }
                    None => {
                        return Response::Error {
                            message: format!(
                                "{node} has not reported to group {g} yet (not started, or not reachable); \
                                 nothing was changed; try again once `havip status` lists its priority"
                            ),
                        };
                    }
                }
            }
        }
        let commands = groups
            .iter()
            .map(|g| {
                (
                    g.clone(),
                    Command::Pin {
                        node: to.clone(),
                        at_unix_ms: unix_ms(),
                    },
                )
            })
            .collect();
        if let Err(message) = self.propose_all(commands).await {
            return Response::Error { message };
        }
        let Some(node) = to else {
            return Response::Done {
                message: format!("pin cleared for {} (committed)", groups.join(", ")),
            };
        };
        // The pin is committed; the leader moves the group at once if `node` is eligible.
        let target = node_id(&node);
        let moved = tokio::time::timeout(Duration::from_secs(3), async {
            for g in &groups {
                let mut metrics = self.groups[g].raft.metrics();
                while metrics.borrow_watched().current_leader != Some(target) {
                    if metrics.changed().await.is_err() {
                        return;
                    }
                }
            }
        })
        .await;
        let message = match moved {
            Ok(()) => format!(
                "{} pinned to {node} (committed); {node} is master",
                groups.join(", ")
            ),
            Err(_) => format!(
                "{} pinned to {node} (committed); {node} is not master yet: it takes over when eligible (see `havip status`)",
                groups.join(", ")
            ),
        };
        Response::Done { message }
    }

    async fn maintenance(&self, node: String, on: bool) -> Response {
        if self.config.peer(&node).is_none() {
            return Response::Error {
                message: format!(
                    "{node} is not a cluster member (members: {})",
                    self.members()
                ),
            };
        }
        let commands = self
            .groups
            .keys()
            .map(|g| {
                (
                    g.clone(),
                    Command::SetMaintenance {
                        node: node.clone(),
                        on,
                        at_unix_ms: unix_ms(),
                    },
                )
            })
            .collect();
        if let Err(message) = self.propose_all(commands).await {
            return Response::Error { message };
        }
        Response::Done {
            message: format!(
                "maintenance {} for {node} (committed)",
                if on { "on" } else { "off" }
            ),
        }
    }

    async fn status(&self) -> StatusReport {
        let peers: Vec<String> = self
            .config
            .cluster
            .peers
            .iter()
            .map(|p| p.name.clone())
            .filter(|n| *n != self.config.node.name)
            .collect();
        // Peers are asked in parallel, each bounded by PEER_TIMEOUT.
        let (answers, checks) = tokio::join!(
            join_all(peers.iter().map(|p| self.ask(p, &PeerRequest::Holdings))),
            join_all(peers.iter().map(|p| self.ask(p, &PeerRequest::Checks)))
        );
        let mut health = vec![NodeChecks {
            node: self.config.node.name.clone(),
            checks: Some(self.local_checks()),
        }];
        health.extend(peers.iter().zip(checks).map(|(p, a)| NodeChecks {
            node: p.clone(),
            checks: match a {
                Ok(PeerReply::Checks(c)) => Some(c),
                _ => None,
            },
        }));
        health.sort_by(|a, b| a.node.cmp(&b.node));
        let mut holdings: BTreeMap<String, Option<Vec<String>>> = peers
            .into_iter()
            .zip(answers)
            .map(|(p, a)| {
                (
                    p,
                    match a {
                        Ok(PeerReply::Holdings(h)) => Some(h),
                        _ => None,
                    },
                )
            })
            .collect();
        holdings.insert(self.config.node.name.clone(), Some(self.holdings()));

        let groups = self
            .groups
            .iter()
            .map(|(name, handle)| {
                let metrics = handle.raft.metrics().borrow_watched().clone();
                let view = handle.view.lock().map(|v| v.clone()).unwrap_or_default();
                let state = handle.state.borrow().clone();
                let nodes = self
                    .config
                    .cluster
                    .peers
                    .iter()
                    .map(|p| {
                        let replicated = state.nodes.get(&p.name);
                        let facts = replicated.and_then(|n| n.facts.clone());
                        NodeStatus {
                            name: p.name.clone(),
                            role: facts
                                .as_ref()
                                .map(|f| format!("{:?}", f.role).to_lowercase()),
                            priority: facts.as_ref().map(|f| f.priority),
                            healthy: facts.as_ref().map(|f| f.healthy),
                            link_up: facts.as_ref().map(|f| f.link_up),
                            maintenance: replicated.is_some_and(|n| n.maintenance),
                            detail: facts.map(|f| f.detail).unwrap_or_default(),
                            holds: holdings
                                .get(&p.name)
                                .cloned()
                                .flatten()
                                .map(|h| h.contains(name)),
                        }
                    })
                    .collect();
                GroupStatus {
                    name: name.clone(),
                    addresses: handle.addresses.clone(),
                    leader: self.name_of(metrics.current_leader),
                    term: metrics.current_term,
                    holding: view.holds_now(),
                    hold_reason: view.hold_reason,
                    quorum_ack_age_ms: view.quorum_ack_age.map(|d| d.as_millis() as u64),
                    pin: state.pin.clone(),
                    nodes,
                }
            })
            .collect();
        StatusReport {
            node: self.config.node.name.clone(),
            role: format!("{:?}", self.config.node.role).to_lowercase(),
            data_plane: self.data_plane.kind().to_string(),
            groups,
            health,
        }
    }
}

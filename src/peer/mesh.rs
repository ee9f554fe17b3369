//! The peer mesh: one encrypted, mutually authenticated TCP connection per pair of nodes,
//! carrying opaque request/response payloads tagged with a `channel` (the caller's
//! multiplexing key; for havip the VIP group index). It owns the sockets, the reconnect
//! loops and the per-connection tasks. It must never interpret a payload (it knows nothing
//! of Raft), never accept a frame from a connection that did not pass the Noise handshake
//! with the cluster key, and never let a slow request handler delay other traffic.
//!
//! Who dials: for each pair, the node whose name sorts lower dials and the higher one
//! accepts, so there is exactly one connection per pair and no tie to break. The dialer
//! binds its socket to its own `listen` IP (port 0), so a pair can be cut with firewall
//! rules on per-node addresses. After the handshake both ends send a Hello frame with
//! their node name: the acceptor checks that the name is a configured peer that sorts
//! lower than itself, the dialer that it reached the node it meant to. A new
//! authenticated connection from a peer replaces the old one, which may be half-dead after
//! a partition.
//!
//! Dead connections: a read half that sees EOF or an error drops the connection and fails
//! its pending requests at once. TCP keepalive (first probe after 1 s idle) together with
//! `TCP_USER_TIMEOUT` (2 s) make the kernel report a silently dead path within about two
//! seconds, even on a side that is not sending, so the dialer reconnects soon after a
//! partition heals instead of waiting out TCP's retransmission backoff. Loss recovery
//! inside the hold lease (a lower minimum RTO, linear retries) is `tuning`'s.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::frame::{Frame, FrameError, Kind};
use super::noise::{self, HandshakeSide, NoiseError, NoiseReader, NoiseWriter};
use super::tuning::tune;
use crate::key::{ClusterKey, ClusterKeys};
use crate::platform::lock::lock;

/// First pause before redialing; doubled after each failure up to `BACKOFF_MAX`.
const BACKOFF_START: Duration = Duration::from_millis(20);
/// Longest pause between dials: failover after a partition heals waits at most this long.
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// A TCP connect that takes longer than this is given up (a partition drops the SYN).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Warnings about one address and one kind of problem are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Frames queued for one connection's writer before senders wait.
const OUTBOX_DEPTH: usize = 1024;
/// The writer batches queued frames up to this many bytes per flush.
const FLUSH_BATCH: usize = 256 * 1024;

/// Where this node listens and who its peers are.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// This node's name, as in `peers`.
    pub self_name: String,
    /// Address to accept peers on; its IP is also the source of outgoing connections.
    pub listen: SocketAddr,
    /// Every node of the cluster, this one included (it is skipped).
    pub peers: Vec<(String, SocketAddr)>,
    pub keys: ClusterKeys,
}

/// Answers requests that peers send. Called concurrently, once per request, each in its
/// own task, so a slow answer on one channel never delays another.
pub trait RequestHandler: Send + Sync + 'static {
    /// `Err(message)` is sent back as an error response and surfaces at the caller as
    /// `MeshError::Remote(message)`.
    fn handle(
        &self,
        from: &str,
        channel: u16,
        payload: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;
}

/// A snapshot of the ways peer input was bad, and of how often links came back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeshCounters {
    /// Connections from an address that is no configured peer's: closed before anything
    /// is read or allocated for them.
    pub unknown_source: u64,
    /// Connections closed unread because `MAX_PENDING` handshakes (or
    /// `MAX_PENDING_PER_SOURCE` from that address) were under way.
    pub handshakes_full: u64,
    /// Noise handshakes that failed: wrong key, garbage, silence, a peer closing early.
    pub rejected_handshakes: u64,
    /// Frames that failed to decrypt or decode after the handshake, or broke the protocol.
    pub malformed_frames: u64,
    /// Frames of a version this node does not speak.
    pub unknown_version: u64,
    /// Authenticated connections whose Hello named a node that must not dial this one.
    pub unknown_peer: u64,
    /// Authenticated connections whose Hello named a configured peer, but that came from
    /// another address than that peer's: another key holder claiming its name.
    pub wrong_source: u64,
    /// Connections established to a peer that had been connected before.
    pub reconnects: u64,
}

/// What can go wrong starting the mesh or sending a request.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("peer configuration: {0}")]
    Config(String),
    #[error("peer {peer} is not in this node's peer list")]
    UnknownPeer { peer: String },
    #[error("peer {peer} is not connected")]
    Unreachable { peer: String },
    #[error("peer {peer} did not answer within {after:?}")]
    Timeout { peer: String, after: Duration },
    #[error("peer answered with an error: {0}")]
    Remote(String),
    #[error(
        "request payload of {size} bytes exceeds the frame limit of {} bytes",
        super::frame::MAX_PAYLOAD
    )]
    TooLarge { size: usize },
}

/// A running mesh. Clones share it; when the last clone is dropped, or the shutdown token
/// given to `start` is cancelled, it stops accepting, closes every connection and fails
/// pending requests, and its tasks end (`stopped` waits for that).
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
    _stop_on_drop: Arc<DropGuard>,
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("self_name", &self.shared.self_name)
            .field("listen", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// Binds `config.listen`, then accepts the peers whose names sort lower than this
    /// node's and dials those that sort higher, until `shutdown` is cancelled.
    pub async fn start(
        config: MeshConfig,
        handler: Arc<dyn RequestHandler>,
        shutdown: CancellationToken,
    ) -> Result<Mesh, MeshError> {
        let mut peers = BTreeMap::new();
        for (name, addr) in &config.peers {
            if name == &config.self_name {
                continue;
            }
            if peers.insert(name.clone(), *addr).is_some() {
                return Err(MeshError::Config(format!("node {name} is listed twice")));
            }
        }
        let listener = bind(config.listen).map_err(|source| MeshError::Listen {
            addr: config.listen,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| MeshError::Listen {
            addr: config.listen,
            source,
        })?;

        let own = config
            .peers
            .iter()
            .find(|(name, _)| *name == config.self_name);
        let source_ip = match (local_addr.ip().is_unspecified(), own) {
            (true, Some((_, addr))) => addr.ip(),
            _ => local_addr.ip(),
        };
        let stop = shutdown.child_token();
        let shared = Arc::new(Shared {
            self_name: config.self_name,
            local_addr,
            keys: std::sync::RwLock::new(config.keys),
            source_ip,
            pending: Mutex::new(HashMap::new()),
            peers: std::sync::RwLock::new(peers),
            dials: Mutex::new(HashMap::new()),
            handler,
            links: Mutex::new(HashMap::new()),
            connected: watch::Sender::new(BTreeSet::new()),
            counters: Counters::default(),
            warned: Mutex::new(HashMap::new()),
            not_listed_by: Mutex::new(BTreeSet::new()),
            shutdown: stop.clone(),
            tasks: TaskTracker::new(),
            next_generation: AtomicU64::new(1),
        });

        shared.tasks.spawn(accept_loop(shared.clone(), listener));
        let listed: Vec<(String, SocketAddr)> = (shared.peers().iter())
            .map(|(n, a)| (n.clone(), *a))
            .collect();
        for (name, addr) in listed {
            shared.start_dialing(&name, addr);
        }
        // Closing the tracker only lets `stopped` finish once the tasks are gone; the
        // accept loop keeps it non-empty until shutdown.
        shared.tasks.close();
        tracing::info!(node = %shared.self_name, listen = %local_addr, "peer mesh listening");
        Ok(Mesh {
            shared,
            _stop_on_drop: Arc::new(stop.drop_guard()),
        })
    }

    /// The address actually bound (useful when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Sends `payload` to `peer`'s handler on `channel` and waits up to `timeout` for the
    /// answer. Fails at once with `Unreachable` when the peer is not connected, and with
    /// `Unreachable` as soon as the connection drops while waiting.
    pub async fn request(
        &self,
        peer: &str,
        channel: u16,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, MeshError> {
        if self.shared.peer_addr(peer).is_none() {
            return Err(MeshError::UnknownPeer {
                peer: peer.to_string(),
            });
        }
        if payload.len() > super::frame::MAX_PAYLOAD {
            return Err(MeshError::TooLarge {
                size: payload.len(),
            });
        }
        let unreachable = || MeshError::Unreachable {
            peer: peer.to_string(),
        };
        let conn = self.shared.link(peer).ok_or_else(unreachable)?;
        let deadline = tokio::time::Instant::now() + timeout;

        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&conn.pending).insert(id, tx);
        // Removes the entry however this future ends (answer, timeout, caller drops it).
        let _pending = PendingGuard { conn: &conn, id };
        // `close` cancels before it drains `pending`: either it drains our entry or we
        // see the cancellation here; a request never waits on a closed connection.
        if conn.closed.is_cancelled() {
            return Err(unreachable());
        }
        let frame = Frame::new(Kind::Request, id, channel, payload);
        match tokio::time::timeout_at(deadline, conn.outbox.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(unreachable()),
            Err(_) => {
                return Err(MeshError::Timeout {
                    peer: peer.to_string(),
                    after: timeout,
                });
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(unreachable()),
            Err(_) => Err(MeshError::Timeout {
                peer: peer.to_string(),
                after: timeout,
            }),
        }
    }

    /// The peers currently connected and authenticated. The daemon watches it to
    /// re-announce VIPs when a peer comes back: it is marked changed whenever a peer
    /// connects, even when a new connection replaced an old one without a gap.
    pub fn connected(&self) -> watch::Receiver<BTreeSet<String>> {
        self.shared.connected.subscribe()
    }

    /// The keys links are made with now.
    pub fn keys(&self) -> ClusterKeys {
        self.shared.keys()
    }

    /// The id of the key each connected peer's link was made with (`ClusterKey::id`).
    pub fn link_keys(&self) -> BTreeMap<String, String> {
        let links = lock(&self.shared.links);
        (links.iter())
            .map(|(peer, conn)| (peer.clone(), conn.key_id.clone()))
            .collect()
    }

    /// The keys links are made with from now on (a reload during a key rollover). A link
    /// made with a key that is no longer accepted is closed; it comes back with a current
    /// one.
    pub fn set_keys(&self, keys: ClusterKeys) {
        let stale: Vec<Arc<Connection>> = {
            let links = lock(&self.shared.links);
            (links.values())
                .filter(|c| !keys.accepts(&c.key_id))
                .cloned()
                .collect()
        };
        *self
            .shared
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
        for conn in stale {
            self.shared.close(&conn, "its key is no longer accepted");
        }
    }

    /// The peer list from now on (a reload that adds, removes or moves nodes): a node
    /// added is dialed (or accepted) at once; a node removed, or moved to another address,
    /// has its link closed and its dialing stopped, and a connection from its old address
    /// is refused like any stranger's. This node's own entry is ignored.
    pub fn set_peers(&self, list: &[(String, SocketAddr)]) {
        let shared = &self.shared;
        let new: BTreeMap<String, SocketAddr> = (list.iter())
            .filter(|(name, _)| *name != shared.self_name)
            .cloned()
            .collect();
        let old = std::mem::replace(
            &mut *shared
                .peers
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            new.clone(),
        );
        let gone: Vec<&String> = (old.iter())
            .filter(|(name, addr)| new.get(*name) != Some(*addr))
            .map(|(name, _)| name)
            .collect();
        let came: Vec<(&String, &SocketAddr)> = (new.iter())
            .filter(|(name, addr)| old.get(*name) != Some(*addr))
            .collect();
        if gone.is_empty() && came.is_empty() {
            return;
        }
        for name in &gone {
            if let Some(dialing) = lock(&shared.dials).remove(*name) {
                dialing.cancel();
            }
            // What it said of this node is about a list entry that is gone.
            lock(&shared.not_listed_by).remove(*name);
            // A moved peer's link may already be its new one (made since the swap above).
            if let Some(conn) = shared.link(name)
                && !(new.get(*name))
                    .is_some_and(|entry| shared.link_is_to(name, conn.remote, *entry))
            {
                let why = if new.contains_key(*name) {
                    "its address changed in the peer list"
                } else {
                    "it was removed from the peer list"
                };
                shared.close(&conn, why);
            }
        }
        for (name, addr) in &came {
            shared.start_dialing(name, **addr);
        }
        let show = |names: Vec<&String>| {
            names
                .into_iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        tracing::info!(
            removed_or_moved = %show(gone),
            added_or_moved = %show(came.iter().map(|(n, _)| *n).collect()),
            "the peer list changed"
        );
    }

    /// The listed peers that answered that they do not list this node's address: this
    /// node was removed from the cluster (or their files lack it). Cleared per peer when
    /// a link with it is made.
    pub fn not_listed_by(&self) -> BTreeSet<String> {
        lock(&self.shared.not_listed_by).clone()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> MeshCounters {
        self.shared.counters.snapshot()
    }

    /// Waits until every task of this mesh has ended (after shutdown).
    pub async fn stopped(&self) {
        self.shared.tasks.wait().await;
    }
}

/// State every task of one mesh shares.
struct Shared {
    self_name: String,
    local_addr: SocketAddr,
    /// The keys links are made with; a reload may change them (`Mesh::set_keys`).
    keys: std::sync::RwLock<ClusterKeys>,
    /// Every other node, by name; a reload may change them (`Mesh::set_peers`). Taken
    /// before `links` when both are held, never across an await.
    peers: std::sync::RwLock<BTreeMap<String, SocketAddr>>,
    /// The dial loop of each listed peer that sorts higher, and the probe loop of each
    /// that sorts lower, stopped when it leaves the list or moves.
    dials: Mutex<HashMap<String, CancellationToken>>,
    /// The address this node dials from: its listen address, or its configured peer
    /// address when it listens on every address (0.0.0.0 or ::).
    source_ip: std::net::IpAddr,
    /// Handshakes under way, in all and per source address.
    pending: Mutex<HashMap<std::net::IpAddr, usize>>,
    handler: Arc<dyn RequestHandler>,
    /// The live connection to each peer, at most one.
    links: Mutex<HashMap<String, Arc<Connection>>>,
    connected: watch::Sender<BTreeSet<String>>,
    counters: Counters,
    /// When a warning about (address, problem) was last logged.
    warned: Mutex<HashMap<String, Instant>>,
    /// Peers that answered that they do not list this node's address
    /// (`noise::NOT_LISTED`), until a link with them is made.
    not_listed_by: Mutex<BTreeSet<String>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    next_generation: AtomicU64,
}

#[derive(Default)]
struct Counters {
    /// Connections from an address that is no configured peer's, closed unread.
    unknown_source: AtomicU64,
    /// Connections closed unread because too many handshakes were pending.
    handshakes_full: AtomicU64,
    rejected_handshakes: AtomicU64,
    malformed_frames: AtomicU64,
    unknown_version: AtomicU64,
    unknown_peer: AtomicU64,
    wrong_source: AtomicU64,
    reconnects: AtomicU64,
    /// Peers that have been connected at least once (to tell reconnects from first
    /// connections).
    seen: Mutex<HashSet<String>>,
}

impl Counters {
    fn snapshot(&self) -> MeshCounters {
        MeshCounters {
            unknown_source: self.unknown_source.load(Ordering::Relaxed),
            handshakes_full: self.handshakes_full.load(Ordering::Relaxed),
            rejected_handshakes: self.rejected_handshakes.load(Ordering::Relaxed),
            malformed_frames: self.malformed_frames.load(Ordering::Relaxed),
            unknown_version: self.unknown_version.load(Ordering::Relaxed),
            unknown_peer: self.unknown_peer.load(Ordering::Relaxed),
            wrong_source: self.wrong_source.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One authenticated connection to a peer.
struct Connection {
    peer: String,
    remote: SocketAddr,
    /// Distinguishes this connection from the one that replaced it.
    generation: u64,
    outbox: mpsc::Sender<Frame>,
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    /// Cancelled when the connection is closed (or the mesh shuts down); its tasks and
    /// waiters watch it.
    closed: CancellationToken,
    /// Which key the link was made with (`ClusterKey::id`).
    key_id: String,
    /// Set by the first `close`, so the clean-up runs once. Not `closed` itself: that is
    /// also cancelled by shutdown, and the clean-up must still run then.
    torn_down: AtomicBool,
}

/// Where a request's answer (or its failure) is delivered.
type Waiter = oneshot::Sender<Result<Vec<u8>, MeshError>>;

struct PendingGuard<'a> {
    conn: &'a Connection,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.conn.pending).remove(&self.id);
    }
}

impl Shared {
    fn link(&self, peer: &str) -> Option<Arc<Connection>> {
        lock(&self.links).get(peer).cloned()
    }

    fn peers(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, SocketAddr>> {
        (self.peers.read()).unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn peer_addr(&self, name: &str) -> Option<SocketAddr> {
        self.peers().get(name).copied()
    }

    /// Whether a listed peer has the address `ip`: peers dial from their configured
    /// address, so a connection from any other is closed unread.
    fn is_peer_ip(&self, ip: std::net::IpAddr) -> bool {
        self.peers().values().any(|a| a.ip() == ip)
    }

    /// Whether a link to `peer` with the far end `remote` is to its list entry `entry`: a
    /// link this node dialed goes to the entry itself; one it accepted comes from the
    /// entry's address (peers dial from it) and any port.
    fn link_is_to(&self, peer: &str, remote: SocketAddr, entry: SocketAddr) -> bool {
        if *self.self_name < *peer {
            remote == entry
        } else {
            remote.ip().to_canonical() == entry.ip().to_canonical()
        }
    }

    /// Starts the dial loop of `name` if this node is the one that dials it (it sorts
    /// lower), else its probe loop, with a stop switch of its own.
    fn start_dialing(self: &Arc<Self>, name: &str, addr: SocketAddr) {
        let stop = self.shutdown.child_token();
        if let Some(old) = lock(&self.dials).insert(name.to_string(), stop.clone()) {
            old.cancel();
        }
        if *self.self_name < *name {
            (self.tasks).spawn(dial_loop(self.clone(), name.to_string(), addr, stop));
        } else {
            (self.tasks).spawn(probe_loop(self.clone(), name.to_string(), addr, stop));
        }
    }

    /// Whether a node that says it is `name` (after the handshake) may dial this one: a
    /// configured peer that sorts lower. Counted and logged when not, but for a listed
    /// peer that sorts higher: that is its probe (`probe_loop`).
    fn admits(&self, name: &str, addr: SocketAddr) -> bool {
        let configured = self.peer_addr(name).map(|a| a.ip().to_canonical());
        if configured.is_some() && configured != Some(addr.ip().to_canonical()) {
            // A node dials from its configured address: its name is bound to it.
            bump(&self.counters.wrong_source);
            self.warn_limited(
                &addr.ip().to_string(),
                "wrong-source",
                format_args!(
                    "rejected {addr}: it says it is {name}, whose configured address is {}; \
                     another holder of the cluster key may be claiming {name}'s name (or a NAT \
                     or proxy between the nodes rewrites addresses, which havip does not \
                     support)",
                    configured.map_or_else(String::new, |ip| ip.to_string())
                ),
            );
            return false;
        }
        if configured.is_some() && *name < *self.self_name {
            return true;
        }
        if self.peer_addr(name).is_some() {
            // A listed node that sorts higher dials only to ask whether it is still listed
            // (`probe_loop`): the protocol, not bad input.
            tracing::debug!(%addr, "refused a link from {name}, which sorts higher than {}: its probe (this node dials it)", self.self_name);
            return false;
        }
        bump(&self.counters.unknown_peer);
        self.warn_limited(
            &addr.ip().to_string(),
            "unknown-peer",
            format_args!(
                "rejected {addr}: node {name:?} is not in this node's peer list; add it to every node's config"
            ),
        );
        false
    }

    fn keys(&self) -> ClusterKeys {
        (self.keys.read())
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes `conn` the peer's connection, closing any older one.
    fn register(&self, conn: &Arc<Connection>) {
        let old = {
            let mut links = lock(&self.links);
            let old = links.insert(conn.peer.clone(), conn.clone());
            self.publish(&links, true);
            old
        };
        if let Some(old) = old {
            tracing::info!(peer = %conn.peer, old = %old.remote, new = %conn.remote,
                "peer {} reconnected; replacing its old connection", conn.peer);
            self.close(&old, "replaced by a new connection");
        } else {
            tracing::info!(peer = %conn.peer, addr = %conn.remote, "peer {} connected", conn.peer);
        }
        if !lock(&self.counters.seen).insert(conn.peer.clone()) {
            bump(&self.counters.reconnects);
        }
        if lock(&self.not_listed_by).remove(&conn.peer) {
            tracing::info!(peer = %conn.peer, "{} lists this node again", conn.peer);
        }
    }

    /// `peer` at `addr` answered that no node of its peer list has this node's address:
    /// remembered (`Mesh::not_listed_by`, `havip status`) and said in the log, once a
    /// minute per peer, in the words of the likely cause.
    fn not_listed(&self, peer: &str, addr: SocketAddr) {
        // A link made meanwhile (the peer listed this node again) is the newer word.
        if self.link(peer).is_some() {
            return;
        }
        lock(&self.not_listed_by).insert(peer.to_string());
        self.warn_limited(
            &addr.to_string(),
            "not-listed",
            format_args!(
                "{peer} ({addr}) does not list this node ({}, {}) in its peer list: this node \
                 is not, or no longer, a member of the cluster (removed, or replaced by another \
                 node), and takes no part in it while no listed node links with it; stop it, or \
                 add it back to every node's peer list and reload them",
                self.self_name, self.source_ip
            ),
        );
    }

    /// Registers `conn` if its peer is still listed at its address; checked and
    /// registered under the peer list's lock, so a `set_peers` that removes the peer
    /// either comes first (and it is refused here) or closes this link after.
    fn register_if_listed(&self, conn: &Arc<Connection>) -> bool {
        let peers = self.peers();
        let listed = peers.get(&conn.peer).copied();
        if !listed.is_some_and(|entry| self.link_is_to(&conn.peer, conn.remote, entry)) {
            drop(peers);
            tracing::info!(peer = %conn.peer, addr = %conn.remote,
                "dropped a new link to {}: it is no longer in this node's peer list at that address", conn.peer);
            return false;
        }
        self.register(conn);
        true
    }

    /// Closes `conn`: its tasks end, its pending requests fail with `Unreachable`, and it
    /// leaves the connected set unless a newer connection already took its place.
    fn close(&self, conn: &Arc<Connection>, why: &str) {
        if conn.torn_down.swap(true, Ordering::AcqRel) {
            return;
        }
        conn.closed.cancel();
        let pending: Vec<_> = lock(&conn.pending).drain().collect();
        for (_, tx) in pending {
            let _ = tx.send(Err(MeshError::Unreachable {
                peer: conn.peer.clone(),
            }));
        }
        let mut links = lock(&self.links);
        if links
            .get(&conn.peer)
            .is_some_and(|c| c.generation == conn.generation)
        {
            links.remove(&conn.peer);
            self.publish(&links, false);
            tracing::info!(peer = %conn.peer, addr = %conn.remote, "peer {} disconnected: {why}", conn.peer);
        }
    }

    /// Updates the connected set. `always` notifies watchers even when the set is the
    /// same, so a connection that replaced a half-dead one still reads as "peer came back".
    fn publish(&self, links: &HashMap<String, Arc<Connection>>, always: bool) {
        let now: BTreeSet<String> = links.keys().cloned().collect();
        self.connected.send_if_modified(|set| {
            let changed = *set != now;
            *set = now;
            changed || always
        });
    }

    /// Logs a warning about `addr` at most once per minute per kind of problem; the rest
    /// go to debug so a flood of garbage cannot flood the log.
    fn warn_limited(&self, addr: &str, problem: &str, message: fmt::Arguments<'_>) {
        let key = format!("{addr}/{problem}");
        let now = Instant::now();
        let mut warned = lock(&self.warned);
        let due = warned
            .get(&key)
            .is_none_or(|last| now.duration_since(*last) >= WARN_EVERY);
        if due {
            // Forget old entries so a stream of distinct addresses cannot grow the map.
            if warned.len() >= 1024 {
                warned.retain(|_, last| now.duration_since(*last) < WARN_EVERY);
            }
            warned.insert(key, now);
            drop(warned);
            tracing::warn!("{message}");
        } else {
            tracing::debug!("{message}");
        }
    }

    /// Counts and reports a failed handshake from or to `addr`.
    fn reject_handshake(&self, addr: SocketAddr, err: &NoiseError) {
        bump(&self.counters.rejected_handshakes);
        self.warn_limited(
            &addr.ip().to_string(),
            "handshake",
            format_args!("rejected {addr}: {err}"),
        );
    }

    /// Counts and reports bad input on an authenticated connection (or its Hello).
    /// `name` is the peer's name once its Hello was accepted.
    fn reject_input(&self, name: Option<&str>, addr: SocketAddr, err: &NoiseError) {
        // Before its Hello a connection is known by its address only: the peer configured
        // there is named (peers dial from their configured address).
        let configured = || {
            (self.peers().iter())
                .find(|(_, a)| a.ip() == addr.ip())
                .map(|(n, _)| n.clone())
        };
        let who = match name.map(str::to_string).or_else(configured) {
            Some(name) => format!("{name} ({addr})"),
            None => addr.to_string(),
        };
        match err {
            NoiseError::Frame(FrameError::UnknownVersion(v)) => {
                bump(&self.counters.unknown_version);
                self.warn_limited(
                    &addr.ip().to_string(),
                    "version",
                    format_args!(
                        "peer {who} speaks frame version {v}, this node speaks {}: upgrade both to the same havip version",
                        super::frame::VERSION
                    ),
                );
            }
            NoiseError::Io(e) => {
                tracing::info!(peer = %who, %addr, "connection to {who} lost: {e}");
            }
            _ => {
                bump(&self.counters.malformed_frames);
                self.warn_limited(
                    &addr.ip().to_string(),
                    "malformed",
                    format_args!("dropped connection with {who}: {err}"),
                );
            }
        }
    }
}

/// Binds the listener with SO_REUSEADDR, so a restarted node gets its address back while
/// old connections sit in TIME_WAIT.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                if !shared.is_peer_ip(addr.ip()) {
                    bump(&shared.counters.unknown_source);
                    shared.warn_limited(
                        &addr.ip().to_string(),
                        "unknown-source",
                        format_args!(
                            "closed a connection from {addr}: no configured peer has that address"
                        ),
                    );
                    tell_not_listed(stream);
                    continue;
                }
                let Some(pending) = Pending::take(&shared, addr) else {
                    bump(&shared.counters.handshakes_full);
                    shared.warn_limited(
                        &addr.ip().to_string(),
                        "handshakes-full",
                        format_args!("closed a connection from {addr}: too many handshakes under way ({MAX_PENDING} in all, {MAX_PENDING_PER_SOURCE} per address)"),
                    );
                    continue;
                };
                shared
                    .tasks
                    .spawn(accept_one(shared.clone(), stream, addr, pending));
            }
            Err(e) => {
                // Usually EMFILE: pause rather than spin.
                shared.warn_limited(
                    "accept",
                    "accept",
                    format_args!(
                        "cannot accept peer connections on {}: {e}",
                        shared.local_addr
                    ),
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!(listen = %shared.local_addr, "peer listener closed");
}

/// Tells the dialer of `stream` that its address is in no peer list here
/// (`noise::NOT_LISTED`), without reading anything or waiting: one non-blocking write of
/// two bytes into a fresh socket's empty send buffer, then the close. A removed node that
/// comes back learns from it that it is no longer a member (`Shared::not_listed`).
fn tell_not_listed(stream: TcpStream) {
    use std::io::Write as _;
    if let Ok(mut std_stream) = stream.into_std() {
        let _ = std_stream.write(&noise::NOT_LISTED);
    }
}

/// Handshakes under way at most, in all: a flood of silent connections from a peer's
/// address holds at most this many tasks and buffers, each for at most the handshake
/// timeout, and the daemon's own descriptors (checks, announcements) stay free.
const MAX_PENDING: usize = 64;
/// ... and from one address (a peer reconnecting needs one).
const MAX_PENDING_PER_SOURCE: usize = 8;

/// One handshake under way, counted until dropped.
struct Pending {
    shared: Arc<Shared>,
    ip: std::net::IpAddr,
}

impl Pending {
    fn take(shared: &Arc<Shared>, addr: SocketAddr) -> Option<Pending> {
        let mut pending = lock(&shared.pending);
        let total: usize = pending.values().sum();
        let here = pending.entry(addr.ip()).or_insert(0);
        if total >= MAX_PENDING || *here >= MAX_PENDING_PER_SOURCE {
            return None;
        }
        *here += 1;
        Some(Pending {
            shared: shared.clone(),
            ip: addr.ip(),
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = lock(&self.shared.pending);
        if let Some(n) = pending.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(&self.ip);
            }
        }
    }
}

/// Handshake, Hello check and then the connection's life, for one accepted socket.
async fn accept_one(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    addr: SocketAddr,
    pending: Pending,
) {
    let shutdown = shared.shutdown.clone();
    let setup = async {
        if let Err(e) = tune(&stream) {
            tracing::debug!(%addr, "cannot set socket options: {e}");
        }
        let keys = shared.keys();
        let (session, key) = match noise::handshake_with(
            &mut stream,
            &keys,
            HandshakeSide::Responder,
            noise::HANDSHAKE_TIMEOUT,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                shared.reject_handshake(addr, &e);
                return None;
            }
        };
        let (read, write) = stream.into_split();
        let mut reader = NoiseReader::new(read, session.clone());
        let mut writer = NoiseWriter::new(write, session);
        let hello = tokio::time::timeout(noise::HANDSHAKE_TIMEOUT, reader.read_frame()).await;
        let name = match hello {
            Ok(Ok(Some(f))) if f.kind == Kind::Hello => {
                String::from_utf8_lossy(&f.payload).into_owned()
            }
            Ok(Ok(Some(f))) => {
                let e = NoiseError::Unexpected(format!("{:?} frame before Hello", f.kind));
                shared.reject_input(None, addr, &e);
                return None;
            }
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => {
                shared.reject_input(None, addr, &e);
                return None;
            }
            Err(_) => {
                shared.reject_handshake(addr, &NoiseError::Timeout(noise::HANDSHAKE_TIMEOUT));
                return None;
            }
        };
        if !shared.admits(&name, addr) {
            return None;
        }
        let me = Frame::new(Kind::Hello, 0, 0, shared.self_name.clone().into_bytes());
        if let Err(e) = writer.send(&me).await {
            tracing::debug!(peer = %name, %addr, "cannot answer Hello: {e}");
            return None;
        }
        Some((name, reader, writer, key.id()))
    };
    let established = tokio::select! {
        () = shutdown.cancelled() => None,
        established = setup => established,
    };
    drop(pending);
    if let Some((name, reader, writer, key_id)) = established {
        run_connection(shared, name, addr, (reader, writer), key_id).await;
    }
}

/// Keeps one connection to `peer` up: dial, run until it drops, redial with backoff;
/// until `stop` (the peer left the list, or shutdown).
async fn dial_loop(shared: Arc<Shared>, peer: String, addr: SocketAddr, stop: CancellationToken) {
    let mut backoff = BACKOFF_START;
    loop {
        let dialed = tokio::select! {
            () = stop.cancelled() => return,
            dialed = dial_with_keys(&shared, &peer, addr) => dialed,
        };
        match dialed {
            Ok((halves, key_id)) => {
                backoff = BACKOFF_START;
                run_connection(shared.clone(), peer.clone(), addr, halves, key_id).await;
            }
            Err(DialError::Handshake(NoiseError::NotListed)) => shared.not_listed(&peer, addr),
            Err(DialError::Handshake(e)) => shared.reject_handshake(addr, &e),
            Err(DialError::Hello(e)) => shared.reject_input(Some(&peer), addr, &e),
            Err(DialError::Other(why)) => {
                shared.warn_limited(
                    &addr.to_string(),
                    "dial",
                    format_args!("cannot reach peer {peer} at {addr}: {why}"),
                );
            }
        }
        // Jitter keeps nodes that lost each other at the same instant from redialing in
        // lockstep.
        let pause = backoff.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// How long a listed peer that dials this node may stay unlinked before this node asks
/// it whether it still lists this node, and how often it asks after that.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// For a listed peer that dials this node (it sorts lower): while there is no link with
/// it, dials it once every `PROBE_EVERY` to learn whether it still lists this node. One
/// that does not list this node's address answers `noise::NOT_LISTED`: for a removed node
/// that sorts higher than the others this is the only way to learn it, as nobody dials it
/// any more. One that lists it refuses the link (it dials, not this node): logged at
/// debug only, its own dial loop makes the link.
async fn probe_loop(shared: Arc<Shared>, peer: String, addr: SocketAddr, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PROBE_EVERY) => {}
        }
        if shared.link(&peer).is_some() {
            continue;
        }
        let probed = tokio::select! {
            () = stop.cancelled() => return,
            probed = dial_with_keys(&shared, &peer, addr) => probed,
        };
        match probed {
            Err(DialError::Handshake(NoiseError::NotListed)) => shared.not_listed(&peer, addr),
            Err(DialError::Handshake(e) | DialError::Hello(e)) => {
                tracing::debug!(peer = %peer, %addr, "probe of {peer}, which dials this node: {e}");
            }
            Err(DialError::Other(why)) => {
                tracing::debug!(peer = %peer, %addr, "probe of {peer}, which dials this node: {why}");
            }
            // It linked with a node that sorts higher than itself, against the rule: drop it.
            Ok(_) => tracing::debug!(peer = %peer, %addr, "probe of {peer} was accepted; closed"),
        }
    }
}

enum DialError {
    Handshake(NoiseError),
    Hello(NoiseError),
    Other(String),
}

type Halves = (NoiseReader<OwnedReadHalf>, NoiseWriter<OwnedWriteHalf>);

/// Dials with the current key and, during a key rollover, once more with the previous key
/// if the peer refused the current one (it has not got the new key yet). Returns the link
/// and the id of the key it was made with.
async fn dial_with_keys(
    shared: &Shared,
    peer: &str,
    addr: SocketAddr,
) -> Result<(Halves, String), DialError> {
    let keys = shared.keys();
    match dial(shared, peer, addr, &keys.current).await {
        Err(DialError::Handshake(refused)) if !matches!(refused, NoiseError::NotListed) => {
            match &keys.previous {
                Some(previous) => {
                    let halves = dial(shared, peer, addr, previous).await?;
                    tracing::debug!(peer = %peer, "{peer} refused the current key ({refused}); linked with the previous one");
                    Ok((halves, previous.id()))
                }
                None => Err(DialError::Handshake(refused)),
            }
        }
        dialed => dialed.map(|halves| (halves, keys.current.id())),
    }
}

async fn dial(
    shared: &Shared,
    peer: &str,
    addr: SocketAddr,
    key: &ClusterKey,
) -> Result<Halves, DialError> {
    let other = |e: io::Error| DialError::Other(e.to_string());
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(other)?;
    // From our own address, so per-node firewall rules, and the peer's check that a
    // connection comes from a configured peer's address, see the node's address.
    let source = SocketAddr::new(shared.source_ip, 0);
    socket
        .bind(source)
        .map_err(|e| DialError::Other(format!("cannot bind source address {source}: {e}")))?;
    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(other(e)),
        Err(_) => {
            return Err(DialError::Other(format!(
                "connect timed out after {CONNECT_TIMEOUT:?}"
            )));
        }
    };
    if let Err(e) = tune(&stream) {
        tracing::debug!(%addr, "cannot set socket options: {e}");
    }
    let session = noise::handshake(
        &mut stream,
        key,
        HandshakeSide::Initiator,
        noise::HANDSHAKE_TIMEOUT,
    )
    .await
    .map_err(DialError::Handshake)?;
    let (read, write) = stream.into_split();
    let mut reader = NoiseReader::new(read, session.clone());
    let mut writer = NoiseWriter::new(write, session);
    let me = Frame::new(Kind::Hello, 0, 0, shared.self_name.clone().into_bytes());
    writer
        .send(&me)
        .await
        .map_err(|e| DialError::Other(e.to_string()))?;
    match tokio::time::timeout(noise::HANDSHAKE_TIMEOUT, reader.read_frame()).await {
        Ok(Ok(Some(f))) if f.kind == Kind::Hello && f.payload == peer.as_bytes() => {
            Ok((reader, writer))
        }
        Ok(Ok(Some(f))) if f.kind == Kind::Hello => Err(DialError::Other(format!(
            "{addr} answered as node {:?}, not {peer}; check the peer addresses in the config",
            String::from_utf8_lossy(&f.payload)
        ))),
        Ok(Ok(Some(f))) => Err(DialError::Hello(NoiseError::Unexpected(format!(
            "{:?} frame before Hello",
            f.kind
        )))),
        // The acceptor closes without a Hello when it does not accept our name.
        Ok(Ok(None)) => Err(DialError::Other(format!(
            "{addr} closed the connection after the handshake (is {} in its peer list?)",
            shared.self_name
        ))),
        Ok(Err(e)) => Err(DialError::Hello(e)),
        Err(_) => Err(DialError::Other(format!(
            "no Hello from {addr} within {:?}",
            noise::HANDSHAKE_TIMEOUT
        ))),
    }
}

/// Runs an established connection until it drops, is replaced, or the mesh shuts down:
/// a writer task drains the outbox, this task reads frames and dispatches them.
async fn run_connection(
    shared: Arc<Shared>,
    peer: String,
    remote: SocketAddr,
    (mut reader, writer): Halves,
    key_id: String,
) {
    let (outbox, inbox) = mpsc::channel(OUTBOX_DEPTH);
    let conn = Arc::new(Connection {
        peer: peer.clone(),
        remote,
        generation: shared.next_generation.fetch_add(1, Ordering::Relaxed),
        outbox,
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        closed: shared.shutdown.child_token(),
        key_id,
        torn_down: AtomicBool::new(false),
    });
    if !shared.register_if_listed(&conn) {
        return;
    }
    shared
        .tasks
        .spawn(write_loop(shared.clone(), conn.clone(), writer, inbox));

    let why = loop {
        let read = tokio::select! {
            () = conn.closed.cancelled() => break String::from("closed"),
            read = reader.read_frame() => read,
        };
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => break String::from("peer closed the connection"),
            Err(e) => {
                shared.reject_input(Some(&peer), remote, &e);
                break e.to_string();
            }
        };
        match frame.kind {
            Kind::Request => {
                shared
                    .tasks
                    .spawn(serve(shared.clone(), conn.clone(), frame));
            }
            Kind::Response | Kind::ErrorResponse => {
                let waiter = lock(&conn.pending).remove(&frame.id);
                // An unknown id is a request that already timed out: ignore it.
                if let Some(tx) = waiter {
                    let answer = if frame.kind == Kind::Response {
                        Ok(frame.payload)
                    } else {
                        Err(MeshError::Remote(
                            String::from_utf8_lossy(&frame.payload).into_owned(),
                        ))
                    };
                    let _ = tx.send(answer);
                }
            }
            Kind::Hello => {
                let e = NoiseError::Unexpected(String::from("second Hello"));
                shared.reject_input(Some(&peer), remote, &e);
                break e.to_string();
            }
        }
    };
    let why = if shared.shutdown.is_cancelled() {
        String::from("shutting down")
    } else {
        why
    };
    shared.close(&conn, &why);
}

/// Sends the connection's outgoing frames, batching whatever is queued into one write.
async fn write_loop(
    shared: Arc<Shared>,
    conn: Arc<Connection>,
    mut writer: NoiseWriter<OwnedWriteHalf>,
    mut inbox: mpsc::Receiver<Frame>,
) {
    let result: Result<(), NoiseError> = async {
        loop {
            let first = tokio::select! {
                () = conn.closed.cancelled() => return Ok(()),
                first = inbox.recv() => first,
            };
            let Some(first) = first else { return Ok(()) };
            writer.queue(&first)?;
            while writer.pending_bytes() < FLUSH_BATCH {
                match inbox.try_recv() {
                    Ok(frame) => writer.queue(&frame)?,
                    Err(_) => break,
                }
            }
            tokio::select! {
                () = conn.closed.cancelled() => return Ok(()),
                flushed = writer.flush() => flushed?,
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(peer = %conn.peer, "write to {} failed: {e}", conn.peer);
        shared.close(&conn, &format!("write failed: {e}"));
    }
    // Best effort FIN; the socket closes when both halves are dropped anyway.
    let _ = tokio::time::timeout(Duration::from_millis(100), writer.shutdown()).await;
}

/// Runs the handler for one request and queues its answer.
async fn serve(shared: Arc<Shared>, conn: Arc<Connection>, request: Frame) {
    let handling = shared
        .handler
        .handle(&conn.peer, request.channel, request.payload);
    let answer = tokio::select! {
        () = conn.closed.cancelled() => return,
        answer = handling => answer,
    };
    let frame = match answer {
        Ok(payload) => Frame::new(Kind::Response, request.id, request.channel, payload),
        Err(message) => Frame::new(
            Kind::ErrorResponse,
            request.id,
            request.channel,
            message.into_bytes(),
        ),
    };
    let frame = if frame.payload.len() > super::frame::MAX_PAYLOAD {
        let message = format!(
            "response of {} bytes exceeds the frame limit",
            frame.payload.len()
        );
        Frame::new(
            Kind::ErrorResponse,
            request.id,
            request.channel,
            message.into_bytes(),
        )
    } else {
        frame
    };
    tokio::select! {
        () = conn.closed.cancelled() => {}
        _ = conn.outbox.send(frame) => {}
    }
}

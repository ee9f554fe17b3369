//! The peer mesh against real TCP on 127.0.0.1: round trips on every pair and channel,
//! rejection of peers without the key and of garbage, reconnection after a node restarts,
//! and independence of channels on one connection. Every wait is bounded.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use havip::key::{ClusterKey, ClusterKeys};
use havip::peer::frame::{Frame, Kind};
use havip::peer::noise::{self, HandshakeSide, NoiseReader, NoiseWriter};
use havip::peer::{Mesh, MeshConfig, MeshError, RequestHandler};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);
const RPC: Duration = Duration::from_secs(5);

/// Answers `"{me}<-{from}@{channel}:"` followed by the payload; channel 99 refuses, and
/// channel 1 sleeps first when `slow_channel_1` is set.
struct Echo {
    me: String,
    slow_channel_1: Option<Duration>,
}

impl RequestHandler for Echo {
    fn handle(
        &self,
        from: &str,
        channel: u16,
        payload: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>> {
        let mut answer = format!("{}<-{from}@{channel}:", self.me).into_bytes();
        let slow = if channel == 1 {
            self.slow_channel_1
        } else {
            None
        };
        Box::pin(async move {
            if let Some(pause) = slow {
                tokio::time::sleep(pause).await;
            }
            if channel == 99 {
                return Err(String::from("channel 99 is closed"));
            }
            answer.extend_from_slice(&payload);
            Ok(answer)
        })
    }
}

fn expected(to: &str, from: &str, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = format!("{to}<-{from}@{channel}:").into_bytes();
    v.extend_from_slice(payload);
    v
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("havip=debug")
        .try_init();
}

/// A free port on 127.0.0.1 (bound and released; the mesh binds it again with
/// SO_REUSEADDR).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr")
}

struct Node {
    mesh: Mesh,
    stop: CancellationToken,
}

async fn start(
    name: &str,
    cluster: &[(String, SocketAddr)],
    key: &ClusterKey,
    slow: Option<Duration>,
) -> Node {
    start_with_keys(name, cluster, ClusterKeys::single(key.clone()), slow).await
}

async fn start_with_keys(
    name: &str,
    cluster: &[(String, SocketAddr)],
    keys: ClusterKeys,
    slow: Option<Duration>,
) -> Node {
    let listen = cluster
        .iter()
        .find(|(n, _)| n == name)
        .expect("name in cluster")
        .1;
    let stop = CancellationToken::new();
    let config = MeshConfig {
        self_name: name.into(),
        listen,
        peers: cluster.to_vec(),
        keys,
    };
    let handler = Arc::new(Echo {
        me: name.into(),
        slow_channel_1: slow,
    });
    let mesh = Mesh::start(config, handler, stop.clone())
        .await
        .expect("mesh starts");
    Node { mesh, stop }
}

fn cluster(names: &[&str]) -> Vec<(String, SocketAddr)> {
    names.iter().map(|n| (n.to_string(), free_addr())).collect()
}

/// One loopback address per node, as in the lab (127.0.0.11, .12, ...), so each dialer's
/// source address is its own listen address.
fn cluster_on_own_ips(names: &[&str]) -> Vec<(String, SocketAddr)> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let ip = format!("127.0.0.{}", 11 + i);
            let l = std::net::TcpListener::bind((ip.as_str(), 0)).expect("bind port 0");
            (n.to_string(), l.local_addr().expect("local addr"))
        })
        .collect()
}

/// Polls `cond` every 10 ms until it holds, failing the test after `within`.
async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// `node` (named `me`) asks `to` on `channel` and gets the echo of `payload`.
async fn assert_echo(node: &Node, me: &str, to: &str, channel: u16, payload: &[u8]) {
    let answer = node.mesh.request(to, channel, payload.to_vec(), RPC).await;
    assert_eq!(
        answer.unwrap_or_else(|e| panic!("{me} -> {to}: {e}")),
        expected(to, me, channel, payload)
    );
}

async fn wait_connected(node: &Node, peers: &[&str], within: Duration) {
    let want = set(peers);
    let rx = node.mesh.connected();
    wait_for(&format!("connected == {want:?}"), within, || {
        *rx.borrow() == want
    })
    .await;
}

#[tokio::test]
async fn three_nodes_round_trip_every_pair_channel_and_size() {
    init_logs();
    let key = ClusterKey::generate();
    let c = cluster_on_own_ips(&["a", "b", "c"]);
    let a = start("a", &c, &key, None).await;
    let b = start("b", &c, &key, None).await;
    let cc = start("c", &c, &key, None).await;
    wait_connected(&a, &["b", "c"], WAIT).await;
    wait_connected(&b, &["a", "c"], WAIT).await;
    wait_connected(&cc, &["a", "b"], WAIT).await;

    let nodes = [
        ("a", a.mesh.clone()),
        ("b", b.mesh.clone()),
        ("c", cc.mesh.clone()),
    ];
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    let payloads = [Vec::new(), vec![7u8; 100], big];
    let mut calls = JoinSet::new();
    for (from, mesh) in &nodes {
        for (to, _) in &nodes {
            if from == to {
                continue;
            }
            for channel in [1u16, 2] {
                for payload in &payloads {
                    let (mesh, from, to, payload) = (mesh.clone(), *from, *to, payload.clone());
                    calls.spawn(async move {
                        let got = mesh.request(to, channel, payload.clone(), RPC).await;
                        (from, to, channel, payload, got)
                    });
                }
            }
        }
    }
    let mut n = 0;
    while let Some(done) = calls.join_next().await {
        let (from, to, channel, payload, got) = done.expect("join");
        let got = got.unwrap_or_else(|e| panic!("{from} -> {to} on {channel}: {e}"));
        assert_eq!(
            got,
            expected(to, from, channel, &payload),
            "{from} -> {to} on {channel}, {} bytes",
            payload.len()
        );
        n += 1;
    }
    assert_eq!(n, 6 * 2 * 3);

    let refused = a.mesh.request("b", 99, vec![1], RPC).await;
    assert!(
        matches!(&refused, Err(MeshError::Remote(m)) if m == "channel 99 is closed"),
        "{refused:?}"
    );
    let unknown = a.mesh.request("zz", 1, vec![], RPC).await;
    assert!(
        matches!(unknown, Err(MeshError::UnknownPeer { .. })),
        "{unknown:?}"
    );
    assert_eq!(
        b.mesh.counters(),
        Default::default(),
        "clean traffic counts nothing bad"
    );

    for node in [&a, &b, &cc] {
        node.stop.cancel();
        tokio::time::timeout(WAIT, node.mesh.stopped())
            .await
            .expect("tasks end on shutdown");
    }
}

/// A key rolled through two nodes one at a time: the node with the new key dials with it,
/// falls back to the old one the other still has, accepts both, and once both have only
/// the new key the link made with the old one is closed and comes back with the new.
#[tokio::test]
async fn a_key_rollover_keeps_the_link_up_at_every_step() {
    init_logs();
    let (old, new) = (ClusterKey::generate(), ClusterKey::generate());
    let rollover = || ClusterKeys {
        current: new.clone(),
        previous: Some(old.clone()),
    };
    let c = cluster(&["a", "b"]);
    // "a" dials "b" (the lower name dials): "a" has rolled over, "b" has not.
    let a = start_with_keys("a", &c, rollover(), None).await;
    let b = start("b", &c, &old, None).await;
    wait_connected(&a, &["b"], WAIT).await;
    assert_eq!(a.mesh.link_keys().get("b"), Some(&old.id()));
    assert_eq!(b.mesh.link_keys().get("a"), Some(&old.id()));
    let answer = b.mesh.request("a", 1, vec![7], RPC).await.expect("b -> a");
    assert!(answer.ends_with(&[7]), "{answer:?}");

    // "b" rolls over too: the old link is still accepted, nothing drops.
    b.mesh.set_keys(rollover());
    assert_eq!(b.mesh.link_keys().get("a"), Some(&old.id()));
    // The old key is dropped everywhere: the link made with it closes and comes back
    // with the new key.
    b.mesh.set_keys(ClusterKeys::single(new.clone()));
    a.mesh.set_keys(ClusterKeys::single(new.clone()));
    wait_for("a link made with the new key", WAIT, || {
        a.mesh.link_keys().get("b") == Some(&new.id())
    })
    .await;
    wait_connected(&b, &["a"], WAIT).await;
    let answer = a.mesh.request("b", 1, vec![8], RPC).await.expect("a -> b");
    assert!(answer.ends_with(&[8]), "{answer:?}");
    // A node left on the old key alone is refused from now on ("0" dials "a").
    let c2 = vec![c[0].clone(), (String::from("0"), free_addr())];
    let stale = start("0", &c2, &old, None).await;
    wait_for("a to refuse the old key", WAIT, || {
        a.mesh.counters().rejected_handshakes >= 1
    })
    .await;
    assert!(stale.mesh.connected().borrow().is_empty());
}

/// Issue 14 item 1: a connection from an address no peer has is closed before anything is
/// read or allocated, and a flood of silent connections from a peer's address holds at
/// most a bounded number of handshakes while the established link keeps answering.
#[tokio::test]
async fn strangers_are_closed_unread_and_a_flood_is_capped() {
    init_logs();
    let key = ClusterKey::generate();
    let c = cluster_on_own_ips(&["a", "b"]);
    let a = start("a", &c, &key, None).await;
    let b = start("b", &c, &key, None).await;
    wait_connected(&a, &["b"], WAIT).await;
    let b_addr = c[1].1;
    let from = |ip: &str| {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(ip.parse().expect("ip"), 0))
            .expect("bind source");
        socket
    };
    // A stranger (127.0.0.99 is no peer's address).
    let stranger = from("127.0.0.99").connect(b_addr).await.expect("connect");
    wait_for("b to close the stranger", WAIT, || {
        b.mesh.counters().unknown_source >= 1
    })
    .await;
    drop(stranger);
    // 100 silent connections from a's address (the peer that dials b).
    let mut flood = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = from("127.0.0.11").connect(b_addr).await {
            flood.push(s);
        }
    }
    wait_for("b to refuse the flood beyond its cap", WAIT, || {
        b.mesh.counters().handshakes_full >= 50
    })
    .await;
    // The established link still answers both ways.
    let answer = a.mesh.request("b", 1, vec![5], RPC).await.expect("a -> b");
    assert!(answer.ends_with(&[5]), "{answer:?}");
    let answer = b.mesh.request("a", 1, vec![6], RPC).await.expect("b -> a");
    assert!(answer.ends_with(&[6]), "{answer:?}");
    drop(flood);
}

#[tokio::test]
async fn wrong_key_is_rejected_and_the_good_pair_keeps_working() {
    init_logs();
    let key = ClusterKey::generate();
    let c = cluster(&["a", "b"]);
    let a = start("a", &c, &key, None).await;
    let b = start("b", &c, &key, None).await;
    wait_connected(&a, &["b"], WAIT).await;

    // An intruder that claims to be "a" (so it dials b) but holds another key.
    let evil_cluster = vec![(String::from("a"), free_addr()), c[1].clone()];
    let evil = start("a", &evil_cluster, &ClusterKey::generate(), None).await;
    wait_for("b to reject the intruder", WAIT, || {
        b.mesh.counters().rejected_handshakes >= 1
    })
    .await;
    wait_for("the intruder to see its own failure", WAIT, || {
        evil.mesh.counters().rejected_handshakes >= 1
    })
    .await;

    assert!(evil.mesh.connected().borrow().is_empty());
    let denied = evil.mesh.request("b", 1, vec![1], RPC).await;
    assert!(
        matches!(denied, Err(MeshError::Unreachable { .. })),
        "{denied:?}"
    );
    assert_eq!(
        *b.mesh.connected().borrow(),
        set(&["a"]),
        "the real a stays connected"
    );
    let ok = a
        .mesh
        .request("b", 1, b"hi".to_vec(), RPC)
        .await
        .expect("good pair works");
    assert_eq!(ok, expected("b", "a", 1, b"hi"));
    assert_eq!(
        b.mesh.counters().reconnects,
        0,
        "the intruder never replaced the real a"
    );
}

#[tokio::test]
async fn garbage_on_the_listen_port_is_rejected_and_counted() {
    init_logs();
    let key = ClusterKey::generate();
    let c = cluster(&["a", "b"]);
    let a = start("a", &c, &key, None).await;
    let b = start("b", &c, &key, None).await;
    wait_connected(&a, &["b"], WAIT).await;

    // Three kinds of garbage: a huge announced length cut short, a plausible Noise
    // message that fails to decrypt, and a length below the tag size.
    let mut junk: Vec<u8> = vec![0xff, 0xff];
    junk.extend((0..1000u32).map(|i| (i * 7919 % 256) as u8));
    let mut forged = vec![0x00, 0x30];
    forged.extend([0x42u8; 0x30]);
    let tiny = vec![0x00, 0x03, 1, 2, 3];
    for (i, garbage) in [junk, forged, tiny].into_iter().enumerate() {
        let mut s = TcpStream::connect(c[1].1).await.expect("connect to b");
        s.write_all(&garbage).await.expect("write garbage");
        s.shutdown().await.expect("shutdown");
        let want = i as u64 + 1;
        wait_for("b to count the garbage", WAIT, || {
            b.mesh.counters().rejected_handshakes >= want
        })
        .await;
    }
    let ok = a
        .mesh
        .request("b", 2, vec![], RPC)
        .await
        .expect("good pair works");
    assert_eq!(ok, expected("b", "a", 2, b""));
    assert_eq!(*b.mesh.connected().borrow(), set(&["a"]));
}

/// Issue 14 item 2: a node's name is bound to its configured address. Another holder of
/// the cluster key (here: c's address) that says it is a is dropped before b answers its
/// Hello, counted, and a's own link is untouched.
#[tokio::test]
async fn a_key_holder_claiming_another_nodes_name_is_refused() {
    init_logs();
    let key = ClusterKey::generate();
    let c = cluster_on_own_ips(&["a", "b", "c"]);
    let a = start("a", &c, &key, None).await;
    let b = start("b", &c, &key, None).await;
    wait_connected(&b, &["a"], WAIT).await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new("127.0.0.13".parse().expect("ip"), 0))
        .expect("bind c's address");
    let mut s = socket.connect(c[1].1).await.expect("connect");
    let session = noise::handshake(
        &mut s,
        &key,
        HandshakeSide::Initiator,
        noise::HANDSHAKE_TIMEOUT,
    )
    .await
    .expect("handshake: it has the key");
    let (r, w) = s.into_split();
    let (mut r, mut w) = (
        NoiseReader::new(r, session.clone()),
        NoiseWriter::new(w, session),
    );
    w.send(&Frame::new(Kind::Hello, 0, 0, b"a".to_vec()))
        .await
        .expect("hello");
    let end = tokio::time::timeout(WAIT, r.read_frame())
        .await
        .expect("b drops it");
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "no Hello back for a from c's address"
    );
    assert_eq!(b.mesh.counters().wrong_source, 1);
    let ok = a
        .mesh
        .request("b", 2, vec![], RPC)
        .await
        .expect("a's link still works");
    assert_eq!(ok, expected("b", "a", 2, b""));
}

/// Dials `to` with the right key and returns the encrypted halves, as a peer would.
async fn authenticated(
    to: SocketAddr,
    key: &ClusterKey,
) -> (
    NoiseReader<tokio::net::tcp::OwnedReadHalf>,
    NoiseWriter<tokio::net::tcp::OwnedWriteHalf>,
) {
    let mut s = TcpStream::connect(to).await.expect("connect");
    let session = noise::handshake(
        &mut s,
        key,
        HandshakeSide::Initiator,
        noise::HANDSHAKE_TIMEOUT,
    )
    .await
    .expect("handshake");
    let (r, w) = s.into_split();
    (
        NoiseReader::new(r, session.clone()),
        NoiseWriter::new(w, session),
    )
}

#[tokio::test]
async fn unknown_version_and_unknown_peer_are_dropped_and_counted() {
    init_logs();
    let key = ClusterKey::generate();
    let c = cluster(&["a", "b"]);
    let b = start("b", &c, &key, None).await;

    // A key holder speaking frame version 7.
    let (mut r, mut w) = authenticated(c[1].1, &key).await;
    let mut v7 = Frame::new(Kind::Hello, 0, 0, b"a".to_vec())
        .encode()
        .expect("encode");
    v7[4] = 7;
    w.queue_raw(&v7).expect("queue");
    w.flush().await.expect("flush");
    let end = tokio::time::timeout(WAIT, r.read_frame())
        .await
        .expect("b drops it");
    assert!(matches!(end, Ok(None) | Err(_)), "no frame back");
    assert_eq!(b.mesh.counters().unknown_version, 1);

    // A key holder whose name is not configured, and one that should be dialed instead.
    for name in ["zz", "c"] {
        let (mut r, mut w) = authenticated(c[1].1, &key).await;
        w.send(&Frame::new(Kind::Hello, 0, 0, name.as_bytes().to_vec()))
            .await
            .expect("hello");
        let end = tokio::time::timeout(WAIT, r.read_frame())
            .await
            .expect("b drops it");
        assert!(matches!(end, Ok(None) | Err(_)), "no Hello back for {name}");
    }
    assert_eq!(b.mesh.counters().unknown_peer, 2);
    assert!(b.mesh.connected().borrow().is_empty());

    // A key holder that says the right name gets b's Hello back.
    let (mut r, mut w) = authenticated(c[1].1, &key).await;
    w.send(&Frame::new(Kind::Hello, 0, 0, b"a".to_vec()))
        .await
        .expect("hello");
    let hello = tokio::time::timeout(WAIT, r.read_frame())
        .await
        .expect("answer")
        .expect("read")
        .expect("frame");
    assert_eq!(
        (hello.kind, hello.payload.as_slice()),
        (Kind::Hello, &b"b"[..])
    );
    // Then a malformed frame (unknown kind) drops it again.
    let mut bad = Frame::new(Kind::Request, 1, 1, vec![])
        .encode()
        .expect("encode");
    bad[5] = 77;
    w.queue_raw(&bad).expect("queue");
    w.flush().await.expect("flush");
    wait_for("b to count the malformed frame", WAIT, || {
        b.mesh.counters().malformed_frames == 1
    })
    .await;
    wait_connected(&b, &[], WAIT).await;
}

#[tokio::test]
async fn a_restarted_node_is_reconnected_within_a_second() {
    init_logs();
    let key = ClusterKey::generate();
    let c = cluster(&["a", "b", "c"]);
    let a = start("a", &c, &key, None).await;
    let b = start("b", &c, &key, None).await;
    let cc = start("c", &c, &key, None).await;
    wait_connected(&a, &["b", "c"], WAIT).await;
    wait_connected(&cc, &["a", "b"], WAIT).await;

    // b goes away: its tasks end, and the others notice at once (EOF, not a timeout).
    b.stop.cancel();
    tokio::time::timeout(WAIT, b.mesh.stopped())
        .await
        .expect("b's tasks end");
    drop(b);
    wait_connected(&a, &["c"], Duration::from_secs(1)).await;
    wait_connected(&cc, &["a"], Duration::from_secs(1)).await;
    let started = tokio::time::Instant::now();
    let gone = a.mesh.request("b", 1, vec![], RPC).await;
    assert!(
        matches!(gone, Err(MeshError::Unreachable { .. })),
        "{gone:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "Unreachable is immediate"
    );

    // Let a's redial backoff grow a little, then bring b back on the same address.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = start("b", &c, &key, None).await;
    wait_connected(&a, &["b", "c"], Duration::from_secs(1)).await;
    wait_connected(&cc, &["a", "b"], Duration::from_secs(1)).await;
    wait_connected(&b, &["a", "c"], Duration::from_secs(1)).await;
    assert_echo(&a, "a", "b", 2, b"x").await;
    assert_echo(&b, "b", "c", 1, b"y").await;
    assert!(a.mesh.counters().reconnects >= 1);
    assert!(cc.mesh.counters().reconnects >= 1);
}

#[tokio::test]
async fn a_slow_handler_on_one_channel_does_not_delay_another() {
    init_logs();
    let key = ClusterKey::generate();
    let c = cluster(&["a", "b"]);
    let a = start("a", &c, &key, None).await;
    let _b = start("b", &c, &key, Some(Duration::from_secs(2))).await;
    wait_connected(&a, &["b"], WAIT).await;

    let slow = {
        let mesh = a.mesh.clone();
        tokio::spawn(async move { mesh.request("b", 1, b"slow".to_vec(), RPC).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    for i in 0..20u8 {
        let got = a
            .mesh
            .request("b", 2, vec![i], RPC)
            .await
            .expect("fast channel");
        assert_eq!(got, expected("b", "a", 2, &[i]));
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "channel 2 took {:?}",
        started.elapsed()
    );
    assert!(!slow.is_finished(), "channel 1 is still being handled");

    // A request that outlives its timeout reports Timeout; its late answer is ignored.
    let late = a
        .mesh
        .request("b", 1, vec![], Duration::from_millis(100))
        .await;
    assert!(matches!(late, Err(MeshError::Timeout { .. })), "{late:?}");
    let slow = tokio::time::timeout(WAIT, slow)
        .await
        .expect("slow ends")
        .expect("join");
    assert_eq!(slow.expect("slow answer"), expected("b", "a", 1, b"slow"));
}

#[tokio::test]
async fn listening_on_a_taken_address_names_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    // Occupied by a listening socket without SO_REUSEADDR semantics that allow sharing.
    let config = MeshConfig {
        self_name: "a".into(),
        listen: addr,
        peers: vec![],
        keys: ClusterKeys::single(ClusterKey::generate()),
    };
    let handler = Arc::new(Echo {
        me: "a".into(),
        slow_channel_1: None,
    });
    let err = Mesh::start(config, handler, CancellationToken::new())
        .await
        .expect_err("address in use");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("cannot listen on {addr}: ")),
        "{msg}"
    );
}

#[tokio::test]
async fn pending_requests_fail_at_once_when_the_link_or_the_mesh_goes() {
    init_logs();
    let key = ClusterKey::generate();
    let c = cluster(&["a", "b", "c"]);
    let slow = Some(Duration::from_secs(30));
    let a = start("a", &c, &key, slow).await;
    let b = start("b", &c, &key, slow).await;
    let cc = start("c", &c, &key, slow).await;
    wait_connected(&a, &["b", "c"], WAIT).await;
    wait_connected(&b, &["a", "c"], WAIT).await;

    // a waits on b; b dies: a's request fails with Unreachable, not at its timeout.
    let waiting = {
        let mesh = a.mesh.clone();
        tokio::spawn(async move { mesh.request("b", 1, vec![], Duration::from_secs(30)).await })
    };
    // b waits on c; b shuts down: its own request fails with Unreachable too.
    let own = {
        let mesh = b.mesh.clone();
        tokio::spawn(async move { mesh.request("c", 1, vec![], Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.stop.cancel();
    for (what, task) in [("a -> b", waiting), ("b -> c", own)] {
        let got = tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap_or_else(|_| panic!("{what} still waiting a second after b stopped"))
            .expect("join");
        assert!(
            matches!(got, Err(MeshError::Unreachable { .. })),
            "{what}: {got:?}"
        );
    }
    tokio::time::timeout(WAIT, b.mesh.stopped())
        .await
        .expect("b's tasks end");
    assert!(
        b.mesh.connected().borrow().is_empty(),
        "a stopped mesh lists no peers"
    );
    let after = b.mesh.request("a", 2, vec![], RPC).await;
    assert!(
        matches!(after, Err(MeshError::Unreachable { .. })),
        "{after:?}"
    );
    wait_connected(&cc, &["a"], WAIT).await;
}

#[tokio::test]
async fn a_new_connection_from_a_peer_replaces_the_old_one() {
    init_logs();
    let key = ClusterKey::generate();
    let c = cluster(&["a", "b"]);
    let a = start("a", &c, &key, None).await;
    let b = start("b", &c, &key, None).await;
    wait_connected(&a, &["b"], WAIT).await;
    let mut watch_b = b.mesh.connected();
    watch_b.borrow_and_update();

    // A second authenticated connection as "a" (as after a partition, when the old one may
    // be half-dead) takes over; b drops the real a's connection, which then redials and
    // takes over in turn.
    let (mut r, mut w) = authenticated(c[1].1, &key).await;
    w.send(&Frame::new(Kind::Hello, 0, 0, b"a".to_vec()))
        .await
        .expect("hello");
    let hello = tokio::time::timeout(WAIT, r.read_frame())
        .await
        .expect("answer")
        .expect("read");
    assert!(hello.is_some_and(|f| f.kind == Kind::Hello));
    tokio::time::timeout(WAIT, watch_b.changed())
        .await
        .expect("watchers hear of the replacement")
        .expect("mesh alive");
    let end = tokio::time::timeout(WAIT, r.read_frame())
        .await
        .expect("replaced in turn");
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "the impostor is dropped when a redials"
    );
    wait_for("a to redial", WAIT, || b.mesh.counters().reconnects >= 2).await;
    wait_connected(&a, &["b"], WAIT).await;
    let ok = a
        .mesh
        .request("b", 1, b"z".to_vec(), RPC)
        .await
        .expect("a -> b after replacement");
    assert_eq!(ok, expected("b", "a", 1, b"z"));
    assert_eq!(*b.mesh.connected().borrow(), set(&["a"]));
}

/// A reload's new peer list (`Mesh::set_peers`), live: a node added is linked without a
/// restart, whichever side dials; a node removed has its link closed and is then refused
/// like a stranger; the links of the nodes that stay are never touched.
#[tokio::test]
async fn a_changed_peer_list_links_added_nodes_and_drops_removed_ones_live() {
    init_logs();
    let key = ClusterKey::generate();
    // "a" sorts lower than m and n (it dials them), "z" higher (they dial it).
    let all = cluster_on_own_ips(&["m", "n", "a", "z"]);
    let pick = |names: &[&str]| -> Vec<(String, SocketAddr)> {
        (all.iter())
            .filter(|(n, _)| names.contains(&n.as_str()))
            .cloned()
            .collect()
    };
    let m = start("m", &pick(&["m", "n"]), &key, None).await;
    let n = start("n", &pick(&["m", "n"]), &key, None).await;
    let a = start("a", &pick(&["a", "m", "n"]), &key, None).await;
    let z = start("z", &pick(&["m", "n", "z"]), &key, None).await;
    wait_connected(&m, &["n"], WAIT).await;
    // Not listed yet: a's dials are closed unread, and nobody dials z.
    wait_for("m refuses a", WAIT, || m.mesh.counters().unknown_source > 0).await;
    assert_eq!(*z.mesh.connected().borrow(), BTreeSet::new());
    // Each learns that m and n do not list it: a from its dials, z by probing them (the
    // nodes that should dial it), which is how a removed node that nobody dials finds out.
    let not_listed = |node: &Node| node.mesh.not_listed_by() == set(&["m", "n"]);
    wait_for("a hears it is not listed", Duration::from_secs(10), || {
        not_listed(&a)
    })
    .await;
    wait_for("z hears it is not listed", Duration::from_secs(15), || {
        not_listed(&z)
    })
    .await;

    let grown = pick(&["m", "n", "a", "z"]);
    m.mesh.set_peers(&grown);
    n.mesh.set_peers(&grown);
    // a redials with backoff (at most BACKOFF_MAX): give it that long.
    wait_connected(&m, &["n", "a", "z"], Duration::from_secs(10)).await;
    wait_connected(&n, &["m", "a", "z"], Duration::from_secs(10)).await;
    assert_echo(&m, "m", "z", 1, b"hi").await;
    assert_echo(&a, "a", "n", 2, b"yo").await;
    assert_eq!(
        a.mesh.not_listed_by(),
        BTreeSet::new(),
        "linked: listed again"
    );
    assert_eq!(
        z.mesh.not_listed_by(),
        BTreeSet::new(),
        "linked: listed again"
    );

    let reconnects = m.mesh.counters().reconnects;
    let refused = m.mesh.counters().unknown_source;
    let shrunk = pick(&["m", "n"]);
    m.mesh.set_peers(&shrunk);
    n.mesh.set_peers(&shrunk);
    wait_connected(&m, &["n"], Duration::from_secs(1)).await;
    wait_connected(&a, &[], Duration::from_secs(1)).await;
    wait_connected(&z, &[], Duration::from_secs(1)).await;
    let gone = m.mesh.request("z", 1, vec![], RPC).await;
    assert!(
        matches!(gone, Err(MeshError::UnknownPeer { .. })),
        "{gone:?}"
    );
    // a keeps dialing (its own list still has m), and is closed unread again.
    wait_for("m refuses a again", Duration::from_secs(10), || {
        m.mesh.counters().unknown_source > refused
    })
    .await;
    assert_eq!(*m.mesh.connected().borrow(), set(&["n"]));
    // Removed, each hears it again: z only by its probes.
    wait_for("a hears it was removed", Duration::from_secs(10), || {
        not_listed(&a)
    })
    .await;
    wait_for("z hears it was removed", Duration::from_secs(15), || {
        not_listed(&z)
    })
    .await;
    // m-n was never dropped: no reconnect.
    assert_eq!(m.mesh.counters().reconnects, reconnects);
    for node in [m, n, a, z] {
        node.stop.cancel();
        tokio::time::timeout(WAIT, node.mesh.stopped())
            .await
            .expect("the mesh's tasks end");
    }
}

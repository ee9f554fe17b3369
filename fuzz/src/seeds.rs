//! The seed corpus: real encodings of what each parser is meant to read, made with havip's
//! own encoders (and openraft's types), so the fuzzer starts from the valid inputs and
//! mutates outwards. `write_all` writes them to `fuzz/seeds/<target>/`, which is committed;
//! regenerate after a wire change with `HAVIP_FUZZ_WRITE_SEEDS=1 cargo test` in fuzz/.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use havip::config::Role;
use havip::consensus::rpc::{self, RaftEnvelope, RaftReply, RaftRequest};
use havip::consensus::state::{Command, GroupState, NodeFacts};
use havip::consensus::types::{Entry, LogId, TypeConfig, Vote};
use havip::control::protocol::{Fingerprints, PeerReply, PeerRequest, Request, Response};
use havip::peer::frame::{Frame, Kind};
use havip::peer::noise::{self, HandshakeSide};
use openraft::Membership;
use openraft::entry::RaftEntry;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    VoteRequest, VoteResponse,
};

/// (target, seed name, bytes).
pub type Seed = (&'static str, String, Vec<u8>);

pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    out.extend(peer_frame());
    out.extend(peer_stream());
    out.extend(peer_handshake());
    out.extend(peer_request());
    out.extend(raft_rpc());
    out.extend(raft_state());
    out.extend(control_request());
    out.extend(config());
    out.extend(duration());
    out.extend(key_file());
    out.extend(health_reply());
    out.extend(vip_packet());
    out.extend(netlink_ack());
    out
}

pub fn write_all(dir: &Path) -> std::io::Result<()> {
    for (target, name, bytes) in all() {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(name), bytes)?;
    }
    Ok(())
}

fn seed(target: &'static str, name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Seed {
    (target, name.into(), bytes.into())
}

fn encoded(frame: &Frame) -> Vec<u8> {
    match frame.encode() {
        Ok(b) => b,
        Err(e) => panic!("seed frame: {e}"),
    }
}

fn frames() -> Vec<Frame> {
    vec![
        Frame::new(Kind::Hello, 0, 0, b"gw-a".to_vec()),
        Frame::new(Kind::Request, 7, 1, raft_envelopes().remove(0)),
        Frame::new(Kind::Response, 7, 1, b"{\"Append\":\"Success\"}".to_vec()),
        Frame::new(Kind::ErrorResponse, 9, 2, b"still starting".to_vec()),
        Frame::new(Kind::Request, 1, 2, b"\"Pristine\"".to_vec()),
    ]
}

fn peer_frame() -> Vec<Seed> {
    frames()
        .iter()
        .enumerate()
        .map(|(i, f)| seed("peer_frame", format!("frame-{i}"), encoded(f)))
        .collect()
}

/// `peer_stream` input: a mode byte, then for mode 0 (plaintext sealed by the harness)
/// `[u16 length][chunk]...`; mode 1 is raw bytes on the wire; mode 2 is mode 0 with one
/// ciphertext byte flipped at the position of the next u16.
fn peer_stream() -> Vec<Seed> {
    let stream: Vec<u8> = frames().iter().flat_map(encoded).collect();
    let chunked = |sizes: &[usize]| {
        let mut out = vec![0u8];
        let mut rest = &stream[..];
        for &n in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at(n.min(rest.len()));
            out.extend_from_slice(&(head.len() as u16).to_be_bytes());
            out.extend_from_slice(head);
            rest = tail;
        }
        out
    };
    let mut wire = vec![1u8];
    wire.extend(crate::seal(&crate::sessions().0, &[&stream[..]]));
    vec![
        seed("peer_stream", "whole", chunked(&[stream.len()])),
        seed("peer_stream", "split-3", chunked(&[3])),
        seed("peer_stream", "split-17-5", chunked(&[17, 5, 0])),
        seed("peer_stream", "wire", wire),
    ]
}

/// A real first handshake message (what an initiator with the current key sends), and
/// one made with a key the responder does not have.
fn peer_handshake() -> Vec<Seed> {
    let first = |keys: havip::key::ClusterKeys| {
        crate::runtime().block_on(async move {
            use tokio::io::AsyncReadExt;
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            let initiator = noise::handshake_with(
                &mut a,
                &keys,
                HandshakeSide::Initiator,
                Duration::from_millis(200),
            );
            let mut message = vec![0u8; 2 + 48];
            let read = b.read_exact(&mut message);
            let (_, read) = tokio::join!(initiator, read);
            match read {
                Ok(_) => message,
                Err(e) => panic!("seed handshake: {e}"),
            }
        })
    };
    let mut other = crate::keys();
    other.current = havip::key::ClusterKey::generate();
    vec![
        seed("peer_handshake", "first-message", first(crate::keys())),
        seed("peer_handshake", "wrong-key", first(other)),
    ]
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

fn facts() -> NodeFacts {
    NodeFacts {
        role: Role::Gateway,
        priority: 150,
        healthy: true,
        link_up: true,
        detail: "crm-1-http: HTTP 200".into(),
    }
}

fn commands() -> Vec<Command> {
    vec![
        Command::ReportFacts {
            node: "gw-a".into(),
            facts: facts(),
            at_unix_ms: 1,
        },
        Command::SetMaintenance {
            node: "gw-b".into(),
            on: true,
            at_unix_ms: 2,
        },
        Command::Pin {
            node: Some("gw-b".into()),
            at_unix_ms: 3,
        },
        Command::Pin {
            node: None,
            at_unix_ms: 4,
        },
        Command::MasterChanged {
            node: "gw-a".into(),
            term: 5,
            at_unix_ms: 5,
        },
        Command::ConfigReloaded {
            node: "gw-b".into(),
            config: "c:1".into(),
            changes: vec!["timers changed".into()],
            at_unix_ms: 6,
        },
    ]
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    match rpc::encode(value) {
        Ok(b) => b,
        Err(e) => panic!("seed json: {e}"),
    }
}

fn raft_envelopes() -> Vec<Vec<u8>> {
    let entries: Vec<Entry> = vec![
        Entry::new_membership(
            log_id(1, 1),
            Membership::new_with_defaults(vec![BTreeSet::from([1, 2, 3])], []),
        ),
        Entry::new_blank(log_id(1, 2)),
        Entry::new_normal(log_id(1, 3), commands().remove(0)),
        Entry::new_normal(log_id(1, 4), commands().remove(4)),
    ];
    let requests = vec![
        RaftRequest::Append(AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries,
            leader_commit: Some(log_id(1, 2)),
        }),
        RaftRequest::Append(AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 4)),
            entries: vec![],
            leader_commit: Some(log_id(1, 4)),
        }),
        RaftRequest::Vote(VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 4)))),
        RaftRequest::PreVote(VoteRequest::new(Vote::new(3, 2), None)),
        RaftRequest::Snapshot {
            vote: Vote::new_committed(2, 1),
            meta: openraft::SnapshotMeta {
                last_log_id: Some(log_id(1, 4)),
                last_membership: openraft::StoredMembership::new(
                    Some(log_id(1, 1)),
                    Membership::new_with_defaults(vec![BTreeSet::from([1, 2])], []),
                ),
            },
            data: json(&GroupState::default()),
        },
        RaftRequest::TransferLeader(TransferLeaderRequest::new(
            Vote::new_committed(2, 1),
            2,
            Some(log_id(2, 4)),
        )),
    ];
    requests
        .into_iter()
        .map(|request| {
            // The leader's lease rides on appends and snapshots (`consensus::lease`).
            let lease_ms = matches!(
                request,
                RaftRequest::Append(_) | RaftRequest::Snapshot { .. }
            )
            .then_some(400);
            json(&RaftEnvelope {
                group: "crm".into(),
                request,
                lease_ms,
            })
        })
        .collect()
}

fn raft_replies() -> Vec<Vec<u8>> {
    let replies = vec![
        RaftReply::Append(AppendEntriesResponse::Success),
        RaftReply::Append(AppendEntriesResponse::Conflict),
        RaftReply::Append(AppendEntriesResponse::PartialSuccess(Some(log_id(1, 3)))),
        RaftReply::Append(AppendEntriesResponse::HigherVote(Vote::new(4, 3))),
        RaftReply::Vote(VoteResponse::new(Vote::new(3, 2), Some(log_id(2, 4)), true)),
        RaftReply::Snapshot(SnapshotResponse::new(Vote::new_committed(2, 1))),
        RaftReply::TransferLeader(Ok(())),
    ];
    replies.iter().map(json).collect()
}

fn peer_requests() -> Vec<Vec<u8>> {
    let mut requests = vec![
        PeerRequest::Pristine,
        PeerRequest::Holdings,
        PeerRequest::Fingerprints,
        PeerRequest::Checks,
        PeerRequest::GroupPresence {
            group: "crm".into(),
        },
    ];
    requests.extend(commands().into_iter().map(|command| PeerRequest::Write {
        group: "crm".into(),
        command,
    }));
    let mut out: Vec<Vec<u8>> = requests.iter().map(json).collect();
    let replies = vec![
        PeerReply::Written,
        PeerReply::NotLeader {
            leader: Some("gw-b".into()),
        },
        PeerReply::Pristine(true),
        PeerReply::Holdings(vec!["crm".into()]),
        PeerReply::Fingerprints(Fingerprints {
            config: "c:1".into(),
            cluster: "k:2".into(),
            keys: "k:3f9a21c4".into(),
            commands: 2,
        }),
        PeerReply::Failed("still starting".into()),
    ];
    out.extend(replies.iter().map(json));
    out
}

/// `peer_request` input: `[u16 channel][payload]`.
fn peer_request() -> Vec<Seed> {
    let mut out = Vec::new();
    for (i, payload) in raft_envelopes().into_iter().enumerate() {
        let mut b = rpc::RAFT_CHANNEL.to_be_bytes().to_vec();
        b.extend(payload);
        out.push(seed("peer_request", format!("raft-{i}"), b));
    }
    for (i, payload) in peer_requests().into_iter().enumerate() {
        let mut b = havip::control::protocol::CONTROL_CHANNEL
            .to_be_bytes()
            .to_vec();
        b.extend(payload);
        out.push(seed("peer_request", format!("control-{i}"), b));
    }
    out
}

/// `raft_rpc` input: a selector byte (even: a request envelope, odd: a reply), then JSON.
fn raft_rpc() -> Vec<Seed> {
    let mut out = Vec::new();
    for (i, payload) in raft_envelopes().into_iter().enumerate() {
        let mut b = vec![0u8];
        b.extend(payload);
        out.push(seed("raft_rpc", format!("request-{i}"), b));
    }
    for (i, payload) in raft_replies().into_iter().enumerate() {
        let mut b = vec![1u8];
        b.extend(payload);
        out.push(seed("raft_rpc", format!("reply-{i}"), b));
    }
    out
}

/// `raft_state` input: a selector byte (even: a JSON list of commands applied in order,
/// odd: a group state, as a snapshot carries it), then JSON.
fn raft_state() -> Vec<Seed> {
    let mut state = GroupState::default();
    for c in commands() {
        state.apply(&c);
    }
    let mut list = vec![0u8];
    list.extend(json(&commands()));
    let mut snapshot = vec![1u8];
    snapshot.extend(json(&state));
    vec![
        seed("raft_state", "commands", list),
        seed("raft_state", "state", snapshot),
    ]
}

fn control_request() -> Vec<Seed> {
    let requests = vec![
        Request::Status,
        Request::Holdings,
        Request::Held,
        Request::History {
            group: Some("crm".into()),
        },
        Request::Failover {
            group: Some("crm".into()),
            to: Some("gw-b".into()),
        },
        Request::Failover {
            group: None,
            to: None,
        },
        Request::Maintenance {
            node: "gw-a".into(),
            on: true,
        },
        Request::Reload,
        Request::Members,
        Request::MemberCheck {
            add: vec![havip::control::protocol::NewMember {
                name: "witness-2".into(),
                address: "198.18.0.21:7400".parse().expect("an address"),
                role: Role::Witness,
            }],
            remove: vec!["witness".into()],
        },
    ];
    let mut out: Vec<Seed> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut line = json(r);
            line.push(b'\n');
            seed("control_request", format!("request-{i}"), line)
        })
        .collect();
    let responses = vec![
        Response::Holdings {
            groups: vec!["crm".into()],
        },
        Response::Done {
            message: "pinned".into(),
        },
        Response::Refused {
            message: "line 3".into(),
        },
    ];
    out.extend(
        responses
            .iter()
            .enumerate()
            .map(|(i, r)| seed("control_request", format!("response-{i}"), json(r))),
    );
    out
}

fn config() -> Vec<Seed> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = [
        "conf/gw-a.toml",
        "conf/gw-b.toml",
        "conf/witness.toml",
        "conf/five-voters/gw-a.toml",
        "conf/five-voters/witness-crm-1.toml",
    ];
    files
        .iter()
        .map(|f| {
            let text = match std::fs::read(root.join(f)) {
                Ok(t) => t,
                Err(e) => panic!("seed config {f}: {e}"),
            };
            seed("config", f.replace('/', "-"), text)
        })
        .collect()
}

fn duration() -> Vec<Seed> {
    [
        "128ms",
        "1.5s",
        "400ms..500ms",
        "2m",
        "250us",
        "1h",
        "0.000000001s",
        "200-399",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| seed("duration", format!("d-{i}"), t.as_bytes()))
    .collect()
}

fn key_file() -> Vec<Seed> {
    let key = crate::keys().current;
    vec![
        seed("key_file", "key", key.to_text().as_bytes()),
        seed("key_file", "short", "c2hvcnQ=\n"),
    ]
}

/// `health_reply` input: a selector byte; 0 (http): `[u16 status][u8 n][needle n]` then
/// chunks `[u8 repeat][u16 length][chunk]` (repeat lets a short input reach the 64 KiB
/// limit); 1 (tcp): `[u8 n][expect n][reply]`; 2 (exec): `[i32 wait status][u16 n]
/// [stdout n][stderr]`.
fn health_reply() -> Vec<Seed> {
    let mut http = vec![0u8, 0, 200, 2];
    http.extend(b"ok");
    http.extend([1, 0, 7]);
    http.extend(b"all ok\n");
    let mut big = vec![0u8, 1, 247, 4];
    big.extend(b"DOWN");
    big.extend([255, 1, 0]);
    big.extend([b'x'; 256]);
    let mut tcp = vec![1u8, 5];
    tcp.extend(b"+PONG+PONG\r\n");
    let mut exec = vec![2u8, 0, 0, 1, 0, 0, 9];
    exec.extend("degraded\n\u{e9}t\u{e9}  x".as_bytes());
    vec![
        seed("health_reply", "http", http),
        seed("health_reply", "http-big", big),
        seed("health_reply", "tcp", tcp),
        seed("health_reply", "exec", exec),
    ]
}

/// `vip_packet` input: a selector byte; 0: a frame to parse; 1: `[mac 6][ipv4 4]` built
/// into a gratuitous ARP and parsed back; 2: `[mac 6][ipv6 16]` as a neighbour
/// advertisement.
fn vip_packet() -> Vec<Seed> {
    use havip::vip::packet;
    let mac = [0x02, 0, 0, 0, 0, 0x0a];
    let v4 = Ipv4Addr::new(198, 18, 0, 50);
    let v6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x50);
    let mut arp = vec![0u8];
    arp.extend(packet::gratuitous_arp(mac, v4));
    let mut na = vec![0u8];
    na.extend(crate::na_frame(
        &packet::neighbour_advertisement(mac, v6),
        mac,
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
    ));
    let mut build4 = vec![1u8];
    build4.extend(mac);
    build4.extend(v4.octets());
    let mut build6 = vec![2u8];
    build6.extend(mac);
    build6.extend(v6.octets());
    vec![
        seed("vip_packet", "garp", arp),
        seed("vip_packet", "na", na),
        seed("vip_packet", "build-v4", build4),
        seed("vip_packet", "build-v6", build6),
    ]
}

/// A datagram of three acknowledgements, as the kernel answers RTM_DELADDR requests.
fn netlink_ack() -> Vec<Seed> {
    use netlink_packet_core::{ErrorMessage, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;
    let mut datagram = Vec::new();
    for (seq, code) in [(1u32, 0i32), (2, -99), (3, -1)] {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(code);
        let mut m: NetlinkMessage<RouteNetlinkMessage> =
            NetlinkMessage::new(header, NetlinkPayload::Error(error));
        m.finalize();
        let mut bytes = vec![0; m.buffer_len()];
        m.serialize(&mut bytes);
        datagram.extend_from_slice(&bytes);
    }
    vec![seed("netlink_ack", "three-acks", datagram)]
}

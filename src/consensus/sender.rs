//! Whether a peer may say what its Raft request says (issue 14 item 2). The mesh binds a
//! connection to one node: the key proves cluster membership, the source address (each
//! node dials from its configured address) which node. Here the request itself must
//! agree: a vote is asked for by the candidate it names, appends, snapshots and a
//! leadership transfer come from the leader their vote names. Without this, any holder
//! of the cluster key could speak for the leader over its own connection. Pure.

use openraft::vote::RaftLeaderId as _;

use super::rpc::RaftRequest;
use super::types::{NodeId, Vote, node_id};

/// A request whose vote names another node than the connection's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{kind} from {from} names node id {claimed} as its {role}, not {from}'s ({expected}): dropped"
)]
pub struct ForgedRequest {
    pub from: String,
    pub kind: &'static str,
    pub role: &'static str,
    pub claimed: NodeId,
    pub expected: NodeId,
}

/// Ok when `from` (the connection's node) is the node `request` speaks for.
pub fn check(from: &str, request: &RaftRequest) -> Result<(), ForgedRequest> {
    let (kind, role, vote): (_, _, &Vote) = match request {
        RaftRequest::Append(r) => ("append-entries", "leader", &r.vote),
        RaftRequest::Vote(r) => ("vote request", "candidate", &r.vote),
        RaftRequest::PreVote(r) => ("pre-vote request", "candidate", &r.vote),
        RaftRequest::Snapshot { vote, .. } => ("snapshot", "leader", vote),
        RaftRequest::TransferLeader(r) => ("leadership transfer", "leader", r.from_leader()),
    };
    let claimed = *vote.leader_id().node_id();
    let expected = node_id(from);
    if claimed == expected {
        Ok(())
    } else {
        Err(ForgedRequest {
            from: from.to_string(),
            kind,
            role,
            claimed,
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::raft::{AppendEntriesRequest, VoteRequest};

    fn vote_of(name: &str) -> Vote {
        Vote::new(3, node_id(name))
    }

    #[test]
    fn a_request_speaking_for_its_own_node_passes() {
        let append = RaftRequest::Append(AppendEntriesRequest {
            vote: vote_of("gw-a"),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        });
        assert_eq!(check("gw-a", &append), Ok(()));
        let vote = RaftRequest::Vote(VoteRequest::new(vote_of("witness"), None));
        assert_eq!(check("witness", &vote), Ok(()));
    }

    #[test]
    fn a_request_speaking_for_another_node_is_refused_and_named() {
        let append = RaftRequest::Append(AppendEntriesRequest {
            vote: vote_of("gw-a"),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        });
        let e = check("gw-b", &append).expect_err("gw-b speaking as gw-a's leader");
        assert_eq!((e.kind, e.role), ("append-entries", "leader"));
        assert!(
            e.to_string()
                .starts_with("append-entries from gw-b names node id"),
            "{e}"
        );
        let pre = RaftRequest::PreVote(VoteRequest::new(vote_of("gw-a"), None));
        assert_eq!(check("witness", &pre).map_err(|e| e.role), Err("candidate"));
    }
}

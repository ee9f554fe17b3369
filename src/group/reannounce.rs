//! When a held group may need announcing again, seen by its loop: its interface's link
//! came back up (the switch may have flushed its tables while it was down), or a peer
//! (re)connected (it may have been the holder for some clients meanwhile, so their caches
//! must point here again). Only the edges are found here, from the link feed and the
//! mesh's connected peers; whether to announce is the group machine's decision
//! (`Observation::LinkCameBack` / `PeerReconnected` → `Action::Announce`, only while it
//! holds under a running lease). It must never announce, hold or release anything.

use std::collections::BTreeSet;

use tokio::sync::watch;

use crate::platform::watches::changed_or_never;

use super::machine::Observation;

/// The edges one group's loop announces on.
#[derive(Debug, Default)]
pub struct ReannounceFeeds {
    /// The group's interface link (none: not watched, observing only).
    link_up: Option<watch::Receiver<bool>>,
    was_up: bool,
    /// The peers the mesh is connected to (none: no mesh, in tests).
    connected: Option<watch::Receiver<BTreeSet<String>>>,
    before: BTreeSet<String>,
}

impl ReannounceFeeds {
    /// Edges from now on of `link_up` and `connected`.
    pub fn new(
        mut link_up: Option<watch::Receiver<bool>>,
        mut connected: Option<watch::Receiver<BTreeSet<String>>>,
    ) -> Self {
        let was_up = link_up.as_mut().is_some_and(|l| *l.borrow_and_update());
        let before = connected
            .as_mut()
            .map(|c| c.borrow_and_update().clone())
            .unwrap_or_default();
        ReannounceFeeds {
            link_up,
            was_up,
            connected,
            before,
        }
    }

    /// Resolves with the next edge: the link turned up, or a peer not connected before
    /// is. A feed that stopped is no longer watched (the daemon is stopping); with none
    /// left it never resolves. Cancel-safe: what was seen is recorded without waiting.
    pub async fn next(&mut self) -> Observation {
        loop {
            tokio::select! {
                changed = changed_or_never(&mut self.link_up) => {
                    if changed.is_err() {
                        self.link_up = None;
                    } else if self.link_came_back() {
                        return Observation::LinkCameBack;
                    }
                }
                changed = changed_or_never(&mut self.connected) => {
                    if changed.is_err() {
                        self.connected = None;
                    } else if self.peer_reconnected() {
                        return Observation::PeerReconnected;
                    }
                }
            }
        }
    }

    fn link_came_back(&mut self) -> bool {
        let Some(link_up) = &mut self.link_up else {
            return false;
        };
        let up = *link_up.borrow_and_update();
        let came_back = up && !self.was_up;
        self.was_up = up;
        came_back
    }

    fn peer_reconnected(&mut self) -> bool {
        let Some(connected) = &mut self.connected else {
            return false;
        };
        let now = connected.borrow_and_update().clone();
        let new_peer = now.difference(&self.before).next().is_some();
        self.before = now;
        new_peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: std::time::Duration = std::time::Duration::from_millis(20);

    #[tokio::test]
    async fn edges_are_a_link_turning_up_and_a_new_peer_only() {
        let (link_tx, link_up) = watch::channel(true);
        let (peers_tx, connected) = watch::channel(BTreeSet::from(["gw-b".to_string()]));
        let mut feeds = ReannounceFeeds::new(Some(link_up), Some(connected));
        link_tx.send_replace(false);
        assert!(tokio::time::timeout(QUIET, feeds.next()).await.is_err());
        peers_tx.send_replace(BTreeSet::new());
        assert!(tokio::time::timeout(QUIET, feeds.next()).await.is_err());
        link_tx.send_replace(true);
        assert_eq!(feeds.next().await, Observation::LinkCameBack);
        peers_tx.send_replace(BTreeSet::from(["gw-b".to_string()]));
        assert_eq!(feeds.next().await, Observation::PeerReconnected);
        drop((link_tx, peers_tx));
        let none_left = tokio::time::timeout(QUIET, feeds.next()).await;
        assert!(none_left.is_err(), "stopped feeds never resolve");
    }
}

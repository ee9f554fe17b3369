//! Watches the VIP interfaces' links: subscribes to rtnetlink link events (RTMGRP_LINK),
//! reads the initial state, and publishes whether each interface is up (administratively
//! up *and* carrier) on its own watch channel the moment the kernel reports a change: the
//! link feed the group loops read their `link_up` fact from. It must never change a link,
//! and never report an interface it has not seen as up.

use std::collections::BTreeMap;

use futures_util::{StreamExt, TryStreamExt};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::MulticastGroup;
use tokio::sync::watch;

/// Interface name → whether it can carry the VIP now.
pub type LinkStates = BTreeMap<String, bool>;

#[derive(Debug, thiserror::Error)]
#[error("cannot watch the links of {interfaces:?}: {why}")]
pub struct LinkWatchError {
    interfaces: Vec<String>,
    why: String,
}

/// The watched interfaces, each with its link feed.
pub struct LinkWatch {
    links: BTreeMap<String, watch::Receiver<bool>>,
}

impl LinkWatch {
    /// Starts watching `interfaces` (on the current tokio runtime); the task ends when
    /// every receiver is gone.
    pub async fn start(interfaces: Vec<String>) -> Result<Self, LinkWatchError> {
        let error = |why: String| LinkWatchError {
            interfaces: interfaces.clone(),
            why,
        };
        // Subscribe first, then dump: an event between the two is not lost.
        let (connection, handle, mut events) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
                .map_err(|e| error(format!("netlink socket: {e}")))?;
        tokio::spawn(connection);
        let mut states: LinkStates = interfaces.iter().map(|i| (i.clone(), false)).collect();
        let links: Vec<LinkMessage> = handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| error(format!("listing links: {e}")))?;
        for link in &links {
            apply(&mut states, link, false);
        }
        let mut senders = BTreeMap::new();
        let mut receivers = BTreeMap::new();
        for (interface, up) in &states {
            if !up {
                log_change(interface, false);
            }
            let (tx, rx) = watch::channel(*up);
            senders.insert(interface.clone(), tx);
            receivers.insert(interface.clone(), rx);
        }
        tokio::spawn(async move {
            // Keeps the request handle (and so the connection) alive with the task.
            let _handle = handle;
            while let Some((message, _)) = events.next().await {
                let (link, deleted) = match message.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                        (link, false)
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                        (link, true)
                    }
                    _ => continue,
                };
                if let Some((interface, up)) = apply(&mut states, &link, deleted) {
                    log_change(&interface, up);
                    if let Some(tx) = senders.get(&interface) {
                        tx.send_replace(up);
                    }
                }
                if senders.values().all(|tx| tx.is_closed()) {
                    break;
                }
            }
        });
        Ok(Self { links: receivers })
    }

    /// The link feed of `interface`: whether it is up, kept current. `None` if it is not
    /// watched.
    pub fn link_up(&self, interface: &str) -> Option<watch::Receiver<bool>> {
        self.links.get(interface).cloned()
    }
}

/// One line per change of a watched link (and one at start for each link that is down):
/// a down link makes this node ineligible for the groups on it.
fn log_change(interface: &str, up: bool) {
    if up {
        tracing::info!(interface = %interface, "link up again");
    } else {
        tracing::warn!(interface = %interface, "link down: this node is not eligible");
    }
}

/// Updates the state of the link `message` describes, if it is watched; returns the
/// interface and its new state if that changed.
fn apply(states: &mut LinkStates, message: &LinkMessage, deleted: bool) -> Option<(String, bool)> {
    let name = message.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name),
        _ => None,
    })?;
    let state = states.get_mut(name)?;
    let flags = message.header.flags;
    let up = !deleted && flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp);
    let changed = *state != up;
    *state = up;
    changed.then(|| (name.clone(), up))
}

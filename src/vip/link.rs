//! Watches the VIP interfaces' links: subscribes to rtnetlink link events (RTMGRP_LINK),
//! reads the initial state, and publishes interface → up (administratively up *and*
//! carrier) on a watch channel the moment the kernel reports a change. It must never
//! change a link, and never report an interface it has not seen as up.

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

pub struct LinkWatch {
    states: watch::Receiver<LinkStates>,
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
        let (tx, rx) = watch::channel(states);
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
                tx.send_if_modified(|states| apply(states, &link, deleted));
                if tx.is_closed() {
                    break;
                }
            }
        });
        Ok(Self { states: rx })
    }

    pub fn subscribe(&self) -> watch::Receiver<LinkStates> {
        self.states.clone()
    }
}

/// Updates the state of the link `message` describes, if it is watched; true if changed.
fn apply(states: &mut LinkStates, message: &LinkMessage, deleted: bool) -> bool {
    let Some(name) = message.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name),
        _ => None,
    }) else {
        return false;
    };
    let Some(state) = states.get_mut(name) else {
        return false;
    };
    let flags = message.header.flags;
    let up = !deleted && flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp);
    let changed = *state != up;
    *state = up;
    changed
}

//! Fresh announcement bursts for the groups this node holds, outside their loops' steps:
//! when a group's link comes back (the switch may have flushed its tables while it was
//! down), and when a peer (re)connects (it may have been the holder for a client
//! meanwhile, so the clients' caches must point here again). It must never announce a
//! group that its loop does not hold now (`LocalView::holds_now`), and never hold or
//! release anything.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;

use super::LocalView;
use super::tasks::RunningGroup;
use crate::vip::link::LinkWatch;
use crate::vip::{DataPlane, VipSet};

/// Every group of this node, with its loop's view.
pub struct Reannouncer {
    groups: Vec<(VipSet, watch::Receiver<LocalView>)>,
    data_plane: Arc<dyn DataPlane>,
}

impl Reannouncer {
    /// Announces for the running `groups` through `data_plane`.
    pub fn of(groups: &[RunningGroup], data_plane: Arc<dyn DataPlane>) -> Self {
        Reannouncer {
            groups: groups
                .iter()
                .map(|g| (g.vips.clone(), g.view.clone()))
                .collect(),
            data_plane,
        }
    }

    /// Starts announcing on every link feed of `links` (none when observing only) and on
    /// every reconnection in `connected`, until `shutdown`.
    pub fn spawn(
        self,
        links: Option<&LinkWatch>,
        connected: watch::Receiver<BTreeSet<String>>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let this = Arc::new(self);
        let interfaces: BTreeSet<String> = this
            .groups
            .iter()
            .map(|(v, _)| v.interface.clone())
            .collect();
        for interface in interfaces {
            if let Some(link_up) = links.and_then(|l| l.link_up(&interface)) {
                let task = this
                    .clone()
                    .on_link_up(interface, link_up, shutdown.clone());
                tokio::spawn(task);
            }
        }
        tokio::spawn(this.on_reconnect(connected, shutdown.clone()));
    }

    /// Sends a fresh announcement burst for every held group `which` selects.
    async fn announce_held(&self, which: impl Fn(&VipSet) -> bool) {
        for (vips, view) in &self.groups {
            let holds = view.borrow().holds_now();
            if holds
                && which(vips)
                && let Err(e) = self.data_plane.announce(vips).await
            {
                tracing::warn!(group = %vips.group, "cannot announce the VIPs: {e}");
            }
        }
    }

    /// Announces the held groups on `interface` again each time its link feed turns up.
    async fn on_link_up(
        self: Arc<Self>,
        interface: String,
        mut link_up: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut was_up = *link_up.borrow_and_update();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                changed = link_up.changed() => if changed.is_err() { return },
            }
            let up = *link_up.borrow_and_update();
            if up && !was_up {
                self.announce_held(|vips| vips.interface == interface).await;
            }
            was_up = up;
        }
    }

    /// Announces every held group again each time a peer (re)connects.
    async fn on_reconnect(
        self: Arc<Self>,
        mut connected: watch::Receiver<BTreeSet<String>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut before = connected.borrow_and_update().clone();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                changed = connected.changed() => if changed.is_err() { return },
            }
            let now = connected.borrow_and_update().clone();
            if now.difference(&before).next().is_some() {
                self.announce_held(|_| true).await;
            }
            before = now;
        }
    }
}

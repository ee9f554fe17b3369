//! Where a group loop's `LocalInputs` come from: one watch channel per producer, each kept
//! current by the module that knows the fact (`vip::link` for the interface's link,
//! `health::facts_feed` for the node's health). The loop wakes on a change of any of
//! them and reads the latest of each when it steps. It must never change a fact itself.

use tokio::sync::watch;

use crate::platform::watches::changed_or_never;

use super::machine::LocalInputs;
use crate::health::HealthFacts;

/// The feeds of one group's local inputs.
#[derive(Debug, Clone, Default)]
pub struct FactFeeds {
    /// Whether the group's interface is up; none: not watched (observe-only, or no
    /// interface), counted as up.
    pub link_up: Option<watch::Receiver<bool>>,
    /// The node's health; none: no health checks, counted as healthy.
    pub health: Option<watch::Receiver<HealthFacts>>,
}

impl FactFeeds {
    /// The latest inputs of every feed.
    pub fn latest(&self) -> LocalInputs {
        let mut inputs = LocalInputs::without_feeds();
        if let Some(link_up) = &self.link_up {
            inputs.link_up = *link_up.borrow();
        }
        if let Some(health) = &self.health {
            inputs.health = health.borrow().clone();
        }
        inputs
    }

    /// Resolves when a feed changed since this clone last saw it; an error when a feed
    /// stopped. Never resolves with no feeds. Cancel-safe.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        tokio::select! {
            changed = changed_or_never(&mut self.link_up) => changed,
            changed = changed_or_never(&mut self.health) => changed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health_facts(healthy: bool) -> HealthFacts {
        HealthFacts {
            healthy,
            pending: false,
            priority_delta: -10,
            detail: "checks down: web".into(),
        }
    }

    #[test]
    fn no_feeds_read_as_up_and_healthy() {
        assert_eq!(FactFeeds::default().latest(), LocalInputs::without_feeds());
    }

    #[tokio::test]
    async fn each_feed_sets_its_own_facts_and_wakes_the_reader() {
        let (link_tx, link_up) = watch::channel(true);
        let (health_tx, health) = watch::channel(health_facts(true));
        let feeds = FactFeeds {
            link_up: Some(link_up),
            health: Some(health),
        };
        let mut waker = feeds.clone();
        link_tx.send_replace(false);
        waker.changed().await.unwrap();
        assert!(!feeds.latest().link_up);
        health_tx.send_replace(health_facts(false));
        waker.changed().await.unwrap();
        assert_eq!(feeds.latest().health, health_facts(false));
        drop(link_tx);
        assert!(waker.changed().await.is_err(), "a stopped feed is seen");
    }
}

//! Two ways havip uses tokio's watch channels, each written once: waiting on a feed that
//! may not exist (a link feed when observing only), and a stop switch of its own that a
//! parent's switch also turns on (one group removed by a reload, one health monitor
//! replaced, or everything at the daemon's shutdown).

use tokio::sync::watch;

/// `feed.changed()`, or never for no feed.
pub async fn changed_or_never<T>(
    feed: &mut Option<watch::Receiver<T>>,
) -> Result<(), watch::error::RecvError> {
    match feed {
        Some(feed) => feed.changed().await,
        None => std::future::pending().await,
    }
}

/// A stop switch of its own (send `true` to stop), turned on by `parent` too. Its
/// forwarding task ends with the switch.
pub fn child_signal(
    parent: &watch::Receiver<bool>,
) -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (stop, stopped) = watch::channel(*parent.borrow());
    let (mut parent, forward) = (parent.clone(), stop.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = parent.wait_for(|down| *down) => { let _ = forward.send(true); }
            _ = forward.closed() => {}
        }
    });
    (stop, stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_stops_alone_or_with_its_parent() {
        let (parent, parent_rx) = watch::channel(false);
        let (alone, alone_rx) = child_signal(&parent_rx);
        let (_other, mut other_rx) = child_signal(&parent_rx);
        alone.send_replace(true);
        assert!(*alone_rx.borrow());
        assert!(!*other_rx.borrow(), "a sibling does not stop with it");
        parent.send_replace(true);
        other_rx
            .wait_for(|s| *s)
            .await
            .expect("stops with the parent");
    }
}

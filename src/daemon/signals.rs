//! The signals the daemon answers: SIGTERM/SIGINT stop it, SIGHUP reloads its config.

/// SIGHUP, the classic "re-read your config"; `None` if it cannot be listened to.
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(hup) => Some(hup),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP ({e}); use `havip reload`");
            None
        }
    }
}

pub async fn recv_hangup(hangups: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangups {
        Some(hup) => hup.recv().await,
        None => std::future::pending().await,
    }
}

pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

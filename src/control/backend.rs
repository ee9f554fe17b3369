//! `havip backend drain|maint|ready|weight SERVER [--pool P]`: commits a server's admin
//! state or weight in every group (as `maintenance` does: whichever groups this node
//! has, the record is the same in all), then waits briefly for this node's HAProxy to
//! hold it and says how long that took. Every gateway's applier applies the record; this
//! command never talks to HAProxy itself, and never reports a change done before it is
//! committed.

use std::time::Duration;

use tokio::time::Instant;

use super::context::Control;
use super::protocol::{BackendChange, Response};
use crate::config::{MAX_WEIGHT, find_pool};
use crate::consensus::state::Command;
use crate::group::unix_ms;
use crate::haproxy::PoolStatus;

/// How long the command waits for this node's HAProxy to hold the change: two rounds of
/// its applier, so a committed change is reported applied or not yet, never left unsaid.
const APPLIED_WAIT: Duration = Duration::from_secs(2);

/// Commits `change` for `server` (in `pool`, or the one pool that has it).
pub async fn backend(
    control: &Control,
    pool: Option<String>,
    server: String,
    change: BackendChange,
) -> Response {
    let error = |message: String| Response::Error { message };
    let pools = control.pools();
    if pools.config.is_empty() {
        return error(format!(
            "{} has no [[backend]] pools; run `havip backend` on a gateway that has them",
            control.members().me
        ));
    }
    let found = match find_pool(&pools.config, pool.as_deref(), &server) {
        Ok(found) => found.name.clone(),
        Err(why) => return error(why),
    };
    if let BackendChange::Weight(w) = change
        && w > MAX_WEIGHT
    {
        return error(format!(
            "weight {w} is out of range; HAProxy takes 0 to {MAX_WEIGHT}"
        ));
    }
    let started = Instant::now();
    let commands = control
        .groups()
        .names()
        .map(|g| (g.clone(), command(&found, &server, change)))
        .collect();
    if let Err(e) = control.proposer.propose_all(commands).await {
        return error(e.to_string());
    }
    let committed = started.elapsed();
    let what = match change {
        BackendChange::State(state) => state.to_string(),
        BackendChange::Weight(w) => format!("weight {w}"),
    };
    let applied = wait_applied(control, &found, &server, change).await;
    Response::Done {
        message: format!(
            "backend {found}/{server} {what}: committed in {} ms; {applied}",
            committed.as_millis()
        ),
    }
}

fn command(pool: &str, server: &str, change: BackendChange) -> Command {
    let (pool, server, at_unix_ms) = (pool.to_string(), server.to_string(), unix_ms());
    match change {
        BackendChange::State(state) => Command::SetServerAdmin {
            pool,
            server,
            state,
            at_unix_ms,
        },
        BackendChange::Weight(weight) => Command::SetServerWeight {
            pool,
            server,
            weight,
            at_unix_ms,
        },
    }
}

/// Waits (bounded) until this node's HAProxy holds `change` for the server; says so, or
/// what it has instead.
async fn wait_applied(
    control: &Control,
    pool: &str,
    server: &str,
    change: BackendChange,
) -> String {
    let Some(mut status) = (control.pools().status.iter())
        .find(|s| s.borrow().pool == pool)
        .cloned()
    else {
        return "this node does not run that pool's applier".to_string();
    };
    let started = Instant::now();
    let applied = |s: &PoolStatus| {
        s.servers.iter().any(|srv| {
            srv.name == server
                && srv.in_sync
                && match change {
                    BackendChange::State(state) => srv.desired.admin == state,
                    BackendChange::Weight(w) => srv.desired.weight == w,
                }
        })
    };
    let waited = tokio::time::timeout(APPLIED_WAIT, status.wait_for(applied))
        .await
        .map(|r| r.is_ok());
    if waited == Ok(false) {
        // The applier's status channel closed: a reload replaced the pools meanwhile.
        return "a reload replaced this node's pools meanwhile; `havip status` shows whether its HAProxy holds it".to_string();
    }
    if waited == Ok(true) {
        format!(
            "this gateway's HAProxy holds it after {} ms",
            started.elapsed().as_millis()
        )
    } else {
        let now = status.borrow().clone();
        let why = now.error.clone().unwrap_or_else(|| now.drift.join("; "));
        format!(
            "this gateway's HAProxy does not hold it yet after {} ms ({why}); `havip status` shows it",
            APPLIED_WAIT.as_millis()
        )
    }
}

//! The HAProxy Runtime API client and the applier against a real HAProxy (Debian's
//! package), started by each test on loopback with its sockets in a temp dir of its own
//! (tests/support/haproxy.rs): commands and read-back, every error an operator can meet
//! (socket missing, stale, not admin, unknown names, refused values, a malformed or
//! silent answer), the applier's rounds, its re-apply after HAProxy restarts, drift, and
//! a drain while requests flow through HAProxy (none may fail).

#[path = "support/figures.rs"]
mod figures;
#[path = "support/haproxy.rs"]
mod haproxy_fixture;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use havip::haproxy::{
    AdminState, Applier, Desired, HaproxyError, ObservedServer, PoolStatus, ReplyError, RuntimeApi,
    RuntimeCommand, run,
};
use tokio::sync::watch;

use figures::figure;
use haproxy_fixture::{Haproxy, crm_server};

fn set_state(server: &str, state: AdminState) -> RuntimeCommand {
    RuntimeCommand::SetState {
        backend: "crm".into(),
        server: server.into(),
        state,
    }
}

fn find<'a>(servers: &'a [ObservedServer], name: &str) -> &'a ObservedServer {
    servers.iter().find(|s| s.name == name).unwrap()
}

async fn haproxy_with_two_servers() -> Haproxy {
    let a = crm_server("crm-1").await;
    let b = crm_server("crm-2").await;
    Haproxy::start(&[("crm-1", a), ("crm-2", b)])
}

#[tokio::test]
async fn the_client_sets_and_reads_back_a_real_haproxy() {
    let h = haproxy_with_two_servers().await;
    let api = RuntimeApi::new(&h.admin_socket());
    let servers = api.servers_state("crm").await.unwrap();
    assert_eq!(servers.len(), 2);
    for s in &servers {
        assert_eq!((s.admin(), s.up(), s.weight), (AdminState::Ready, true, 10));
    }

    api.set(&set_state("crm-1", AdminState::Drain))
        .await
        .unwrap();
    let weight = RuntimeCommand::SetWeight {
        backend: "crm".into(),
        server: "crm-2".into(),
        weight: 5,
    };
    api.set(&weight).await.unwrap();
    let down = RuntimeCommand::SetHealth {
        backend: "crm".into(),
        server: "crm-2".into(),
        up: false,
    };
    api.set(&down).await.unwrap();
    let servers = api.servers_state("crm").await.unwrap();
    let (one, two) = (find(&servers, "crm-1"), find(&servers, "crm-2"));
    assert_eq!(
        (one.admin(), one.up(), one.weight),
        (AdminState::Drain, true, 10)
    );
    assert_eq!(
        (two.admin(), two.up(), two.weight),
        (AdminState::Ready, false, 5)
    );
    assert_eq!(two.initial_weight, 10);

    api.set(&set_state("crm-1", AdminState::Maint))
        .await
        .unwrap();
    let servers = api.servers_state("crm").await.unwrap();
    assert_eq!(find(&servers, "crm-1").admin(), AdminState::Maint);
    api.set(&set_state("crm-1", AdminState::Ready))
        .await
        .unwrap();
    let servers = api.servers_state("crm").await.unwrap();
    assert_eq!(find(&servers, "crm-1").admin(), AdminState::Ready);
}

/// The reply error inside a `HaproxyError::Reply`, or a panic naming what came instead.
fn reply_error(result: Result<impl std::fmt::Debug, HaproxyError>) -> ReplyError {
    match result {
        Err(HaproxyError::Reply { source, .. }) => source,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn every_refusal_of_a_real_haproxy_is_a_clear_error() {
    let h = haproxy_with_two_servers().await;
    let api = RuntimeApi::new(&h.admin_socket());
    let e = reply_error(api.set(&set_state("nope", AdminState::Drain)).await);
    assert!(matches!(e, ReplyError::NoSuchServer { .. }), "{e:?}");
    let no_backend = RuntimeCommand::SetState {
        backend: "nope".into(),
        server: "crm-1".into(),
        state: AdminState::Drain,
    };
    let e = reply_error(api.set(&no_backend).await);
    assert!(matches!(e, ReplyError::NoSuchBackend { .. }), "{e:?}");
    let e = reply_error(api.servers_state("nope").await);
    assert!(matches!(e, ReplyError::NoSuchBackend { .. }), "{e:?}");
    let too_heavy = RuntimeCommand::SetWeight {
        backend: "crm".into(),
        server: "crm-1".into(),
        weight: 300,
    };
    let e = reply_error(api.set(&too_heavy).await);
    assert!(e.to_string().contains("between 0 and 256"), "{e}");
    let static_rr = RuntimeCommand::SetWeight {
        backend: "st".into(),
        server: "s1".into(),
        weight: 5,
    };
    let e = reply_error(api.set(&static_rr).await);
    assert!(e.to_string().contains("static LB algorithm"), "{e}");

    // A socket below level admin may read but not write.
    let user = RuntimeApi::new(&h.user_socket());
    assert_eq!(user.servers_state("crm").await.unwrap().len(), 2);
    let e = user
        .set(&set_state("crm-1", AdminState::Drain))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            HaproxyError::Reply {
                source: ReplyError::NotAdmin,
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("user.sock") && text.contains("add `level admin`"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_stale_malformed_or_silent_socket_is_a_clear_error() {
    let dir = tempfile::Builder::new().prefix("hx-").tempdir().unwrap();
    let missing = RuntimeApi::new(&dir.path().join("absent.sock"));
    let e = missing.servers_state("crm").await.unwrap_err();
    assert!(matches!(e, HaproxyError::SocketMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("level admin"), "{e}");

    // A socket file nobody listens on (HAProxy died and left it).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let e = RuntimeApi::new(&stale)
        .servers_state("crm")
        .await
        .unwrap_err();
    assert!(matches!(e, HaproxyError::NotListening { .. }), "{e:?}");

    // Something that answers, but not what HAProxy would: an error, never a panic.
    let liar = dir.path().join("liar.sock");
    let listener = tokio::net::UnixListener::bind(&liar).unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for answer in [
            &b"1\n# srv_name srv_op_state\ncrm-1\n"[..],
            b"\xff\xfe\x00garbage",
        ] {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf).await;
            conn.write_all(answer).await.unwrap();
        }
        // Then one that never answers.
        let (_conn, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let api = RuntimeApi::new(&liar);
    let e = reply_error(api.servers_state("crm").await);
    assert!(matches!(e, ReplyError::Malformed { .. }), "{e:?}");
    let e = reply_error(api.servers_state("crm").await);
    assert!(matches!(e, ReplyError::Refused { .. }), "{e:?}");
    let started = Instant::now();
    let e = api.servers_state("crm").await.unwrap_err();
    assert!(matches!(e, HaproxyError::Timeout { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

fn desired(rows: &[(&str, AdminState, u16, Option<bool>)]) -> BTreeMap<String, Desired> {
    rows.iter()
        .map(|(n, admin, weight, up)| {
            let d = Desired {
                admin: *admin,
                weight: *weight,
                up: *up,
            };
            (n.to_string(), d)
        })
        .collect()
}

#[tokio::test]
async fn the_applier_applies_reads_back_and_notices_drift() {
    let h = haproxy_with_two_servers().await;
    let api = RuntimeApi::new(&h.admin_socket());
    let mut applier = Applier::new("crm", "crm", api.clone());
    let want = desired(&[
        ("crm-1", AdminState::Drain, 10, Some(true)),
        ("crm-2", AdminState::Ready, 3, Some(false)),
    ]);
    let status = applier.round(&want).await.clone();
    assert!(status.in_sync(), "{status:?}");
    assert_eq!(status.commands_sent, 3);
    let servers = api.servers_state("crm").await.unwrap();
    assert_eq!(find(&servers, "crm-1").admin(), AdminState::Drain);
    assert_eq!(
        (find(&servers, "crm-2").weight, find(&servers, "crm-2").up()),
        (3, false)
    );
    // Nothing to do the second time.
    let status = applier.round(&want).await.clone();
    assert_eq!((status.commands_sent, status.reapplied), (3, 0));
    assert!(status.servers.iter().all(|s| s.in_sync), "{status:?}");

    // A server HAProxy does not have is drift no command fixes.
    let mut more = want.clone();
    more.insert("crm-3".into(), want["crm-1"]);
    let status = applier.round(&more).await.clone();
    assert_eq!(status.drift, ["crm-3: not in HAProxy backend crm"]);
    assert!(!status.in_sync());

    // A backend that refuses the weight: an error and drift, both said.
    let mut st = Applier::new("st", "st", api);
    let status = st
        .round(&desired(&[("s1", AdminState::Ready, 5, None)]))
        .await
        .clone();
    assert!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("static LB algorithm")),
        "{status:?}"
    );
    assert_eq!(status.drift, ["s1: weight 1, wanted 5"]);
}

/// Waits (bounded) until `status` satisfies `done`; returns how long it took.
async fn wait_status(
    status: &mut watch::Receiver<PoolStatus>,
    limit: Duration,
    done: impl FnMut(&PoolStatus) -> bool,
) -> Duration {
    let started = Instant::now();
    let met = tokio::time::timeout(limit, status.wait_for(done))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(met, "not within {limit:?}: {:?}", status.borrow());
    started.elapsed()
}

#[tokio::test]
async fn the_applier_applies_again_after_haproxy_restarts() {
    let mut h = haproxy_with_two_servers().await;
    let api = RuntimeApi::new(&h.admin_socket());
    let want = desired(&[
        ("crm-1", AdminState::Maint, 4, Some(true)),
        ("crm-2", AdminState::Ready, 7, Some(true)),
    ]);
    let (desired_tx, desired_rx) = watch::channel(want.clone());
    let (status_tx, mut status) = watch::channel(PoolStatus::default());
    let (_stop, stop) = watch::channel(false);
    let interval = Duration::from_millis(500);
    let applier = Applier::new("crm", "crm", api.clone());
    tokio::spawn(run(applier, desired_rx, status_tx, interval, stop));
    wait_status(&mut status, Duration::from_secs(3), PoolStatus::in_sync).await;

    // A decision change is applied at once, not at the next interval.
    let mut drained = want.clone();
    drained.insert(
        "crm-2".into(),
        Desired {
            admin: AdminState::Drain,
            ..want["crm-2"]
        },
    );
    let changed = Instant::now();
    desired_tx.send_replace(drained.clone());
    wait_status(&mut status, Duration::from_secs(2), |s| {
        s.in_sync()
            && s.servers
                .iter()
                .any(|v| v.name == "crm-2" && v.desired.admin == AdminState::Drain)
    })
    .await;
    let applied = changed.elapsed();
    figure(&format!(
        "haproxy: a changed decision held by HAProxy {:.1} ms after the change (applier on loopback)",
        applied.as_secs_f64() * 1000.0
    ));
    assert!(applied < interval, "{applied:?}");

    // HAProxy restarts with its config's states: noticed and applied again.
    let old_pid = h.pid();
    h.restart();
    assert_ne!(h.pid(), old_pid);
    let restarted = Instant::now();
    wait_status(&mut status, Duration::from_secs(3), |s| {
        s.reapplied >= 1 && s.in_sync()
    })
    .await;
    let again = restarted.elapsed();
    figure(&format!(
        "haproxy: after HAProxy restarted, its states were applied again in {} ms (interval {} ms)",
        again.as_millis(),
        interval.as_millis()
    ));
    assert!(
        again < interval * 2 + Duration::from_millis(200),
        "{again:?}"
    );
    let servers = api.servers_state("crm").await.unwrap();
    assert_eq!(
        (
            find(&servers, "crm-1").admin(),
            find(&servers, "crm-1").weight
        ),
        (AdminState::Maint, 4)
    );
    assert_eq!(find(&servers, "crm-2").admin(), AdminState::Drain);
}

/// Requests sent through HAProxy while the test changes the decision: (start, who
/// answered or why it failed).
type Log = Arc<Mutex<Vec<(Instant, Result<String, String>)>>>;

/// Sends a request every `every` through `client` until `stop`, logging each.
fn spawn_client(
    client: reqwest::Client,
    url: String,
    every: Duration,
    log: Log,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Bounded: 20 s of requests at most, whatever the test does.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !*stop.borrow() && Instant::now() < deadline {
            let started = Instant::now();
            let result = async {
                let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("HTTP {}", response.status()));
                }
                response.text().await.map_err(|e| e.to_string())
            }
            .await;
            log.lock().unwrap().push((started, result));
            tokio::time::sleep(every).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_while_requests_flow_fails_none_and_sends_crm_1_nothing_new() {
    let h = haproxy_with_two_servers().await;
    let api = RuntimeApi::new(&h.admin_socket());
    let ready = desired(&[
        ("crm-1", AdminState::Ready, 10, Some(true)),
        ("crm-2", AdminState::Ready, 10, Some(true)),
    ]);
    let (desired_tx, desired_rx) = watch::channel(ready.clone());
    let (status_tx, mut status) = watch::channel(PoolStatus::default());
    let (stop_tx, stop) = watch::channel(false);
    let applier = Applier::new("crm", "crm", api);
    tokio::spawn(run(
        applier,
        desired_rx,
        status_tx,
        Duration::from_secs(1),
        stop.clone(),
    ));
    wait_status(&mut status, Duration::from_secs(3), PoolStatus::in_sync).await;

    let url = format!("http://{}/", h.frontend);
    let log: Log = Arc::default();
    let timeout = Duration::from_secs(5);
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .unwrap();
    let keep_alive = reqwest::Client::builder().timeout(timeout).build().unwrap();
    let clients = [
        spawn_client(
            fresh,
            url.clone(),
            Duration::from_millis(5),
            log.clone(),
            stop.clone(),
        ),
        spawn_client(
            keep_alive,
            url,
            Duration::from_millis(5),
            log.clone(),
            stop.clone(),
        ),
    ];
    tokio::time::sleep(Duration::from_millis(700)).await;

    let mut drained = ready.clone();
    drained.insert(
        "crm-1".into(),
        Desired {
            admin: AdminState::Drain,
            ..ready["crm-1"]
        },
    );
    let decided = Instant::now();
    desired_tx.send_replace(drained);
    wait_status(&mut status, Duration::from_secs(2), |s| {
        s.in_sync()
            && s.servers
                .iter()
                .any(|v| v.name == "crm-1" && v.desired.admin == AdminState::Drain)
    })
    .await;
    let applied = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let readied = Instant::now();
    desired_tx.send_replace(ready);
    wait_status(&mut status, Duration::from_secs(2), |s| {
        s.in_sync()
            && s.servers
                .iter()
                .all(|v| v.desired.admin == AdminState::Ready)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop_tx.send_replace(true);
    for c in clients {
        c.await.unwrap();
    }

    let log = log.lock().unwrap();
    let failed: Vec<_> = log.iter().filter(|(_, r)| r.is_err()).collect();
    let during = |from: Instant, to: Instant| {
        log.iter()
            .filter(move |(t, _)| *t >= from && *t < to)
            .filter_map(|(_, r)| r.as_ref().ok())
    };
    let to_crm_1_while_drained = during(applied, readied).filter(|n| *n == "crm-1").count();
    let drained_answers = during(applied, readied).count();
    let crm_1_after_ready = during(readied, Instant::now())
        .filter(|n| *n == "crm-1")
        .count();
    figure(&format!(
        "haproxy drain with requests flowing: {} requests, {} failed; drain held by HAProxy {:.1} ms after the decision; crm-1 answered {to_crm_1_while_drained} of {drained_answers} requests started while drained, {crm_1_after_ready} after ready",
        log.len(),
        failed.len(),
        (applied - decided).as_secs_f64() * 1000.0
    ));
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(
        drained_answers > 20,
        "too few requests to tell: {drained_answers}"
    );
    assert_eq!(to_crm_1_while_drained, 0);
    assert!(crm_1_after_ready > 0, "crm-1 took no traffic after ready");
}

/// A socket havip may not open (HAProxy's, owned by another user, mode 0600): said so,
/// with the fix. As root, the check runs on a thread that gave up the capabilities that
/// let root past file modes (capabilities are per thread), like the packaged unit's user.
#[test]
fn permission_denied_on_the_socket_is_said_so() {
    let dir = tempfile::Builder::new().prefix("hx-").tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let is_root = nix::unistd::geteuid().is_root();
    if is_root {
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let error = std::thread::spawn(move || {
        for cap in [
            caps::Capability::CAP_DAC_OVERRIDE,
            caps::Capability::CAP_DAC_READ_SEARCH,
            caps::Capability::CAP_FOWNER,
        ] {
            caps::drop(None, caps::CapSet::Effective, cap).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(RuntimeApi::new(&path).servers_state("crm"))
            .unwrap_err()
    })
    .join()
    .unwrap();
    if !is_root {
        // Not root: the socket is this user's own, so it connects (and nobody answers).
        return;
    }
    assert!(
        matches!(error, HaproxyError::PermissionDenied { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("admin.sock") && text.contains("group havip"),
        "{text}"
    );
}

//! The health checkers and the monitor against real servers started by the test, on
//! 127.0.0.1 only: a small keep-alive HTTP/1.1 server (plain and TLS with a self-signed
//! CA made by rcgen), a TCP echo-ish server, and shell scripts in a temp dir that exit
//! 0, exit 1 or hang. Every wait is bounded.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use havip::config::{CheckKind, HealthCheck, HealthSection, HttpMethod, Require, StatusSet};
use havip::health::{
    CheckState, Checker, HealthMonitor, HealthReport, HealthStatus, MonitorOptions, ProbeResult,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

// ---------------------------------------------------------------- test HTTP server

/// What the test server answers; tests change it while the server runs.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: String,
    delay: Duration,
    extra_headers: String,
}

impl Answer {
    fn ok(body: &str) -> Self {
        Answer {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
            extra_headers: String::new(),
        }
    }
}

struct Server {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    /// Host headers seen, in order.
    hosts: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn set(&self, f: impl FnOnce(&mut Answer)) {
        f(&mut self.answer.lock().unwrap());
    }
    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }
}

async fn http_server(answer: Answer, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = Arc::new(Mutex::new(answer));
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let (a, h) = (answer.clone(), hosts.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (a, h, tls) = (a.clone(), h.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve(stream, a, h).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve(stream, a, h).await
                        }
                    }
                }
            });
        }
    });
    Server {
        port,
        answer,
        hosts,
    }
}

/// Keep-alive HTTP/1.1: requests without bodies, answered from `answer`.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    answer: Arc<Mutex<Answer>>,
    hosts: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > 16 * 1024 {
                return;
            }
            let mut chunk = [0u8; 2048];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let is_head = head.starts_with("HEAD ");
        if let Some(host) = head.lines().find_map(|l| {
            l.strip_prefix("host: ")
                .or_else(|| l.strip_prefix("Host: "))
        }) {
            hosts.lock().unwrap().push(host.to_string());
        }
        let a = answer.lock().unwrap().clone();
        tokio::time::sleep(a.delay).await;
        let mut reply = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n{}\r\n",
            a.status,
            a.body.len(),
            a.extra_headers
        );
        if !is_head {
            reply.push_str(&a.body);
        }
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn http_check(name: &str, url: &str, expect: StatusSet) -> HealthCheck {
    HealthCheck {
        name: name.into(),
        kind: CheckKind::Http {
            url: url.into(),
            https: url.starts_with("https://"),
            method: HttpMethod::Get,
            host: None,
            expect_status: expect,
            expect_body: None,
            ca_file: None,
            insecure_skip_verify: false,
        },
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 3,
        weight: 0,
    }
}

fn with_http(mut check: HealthCheck, f: impl FnOnce(&mut CheckKind)) -> HealthCheck {
    f(&mut check.kind);
    check
}

async fn probe(check: &HealthCheck) -> ProbeResult {
    Checker::new(check).expect("checker").probe().await
}

// ---------------------------------------------------------------- http

#[tokio::test]
async fn http_status_codes() {
    let server = http_server(Answer::ok("fine"), None).await;
    let check = http_check(
        "crm-1-http",
        &server.url("http", "/health"),
        StatusSet::default(),
    );
    let r = probe(&check).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "HTTP 200");

    server.set(|a| a.status = 503);
    let r = probe(&check).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "HTTP 503 (expected 200-399)");

    // HEAD: no body expected, status still decides.
    let head = with_http(check.clone(), |k| {
        if let CheckKind::Http { method, .. } = k {
            *method = HttpMethod::Head
        }
    });
    let r = probe(&head).await;
    assert!(!r.ok, "{r:?}");
    server.set(|a| a.status = 204);
    assert!(probe(&head).await.ok);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = http_server(Answer::ok("target"), None).await;
    let mut redirect = Answer::ok("");
    redirect.status = 302;
    redirect.extra_headers = format!("location: {}\r\n", target.url("http", "/"));
    let server = http_server(redirect, None).await;

    let only_200 = http_check(
        "c",
        &server.url("http", "/"),
        StatusSet::parse("200").unwrap(),
    );
    let r = probe(&only_200).await;
    assert!(!r.ok, "a 302 must not be followed to the 200 behind it");
    assert_eq!(r.detail, "HTTP 302 (expected 200)");
    assert!(target.hosts.lock().unwrap().is_empty(), "target was asked");

    let with_302 = http_check(
        "c",
        &server.url("http", "/"),
        StatusSet::from_ranges(vec![200..=200, 302..=302]),
    );
    assert!(probe(&with_302).await.ok);
}

#[tokio::test]
async fn body_match_and_host_header() {
    let server = http_server(Answer::ok("db: up\nstatus: OK\n"), None).await;
    let check = with_http(
        http_check("c", &server.url("http", "/"), StatusSet::default()),
        |k| {
            if let CheckKind::Http {
                expect_body, host, ..
            } = k
            {
                *expect_body = Some("status: OK".into());
                *host = Some("crm.example.net".into());
            }
        },
    );
    let r = probe(&check).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "HTTP 200, body matches");
    assert_eq!(
        server.hosts.lock().unwrap().last().unwrap(),
        "crm.example.net"
    );

    server.set(|a| a.body = "status: DEGRADED".into());
    let r = probe(&check).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "HTTP 200, body lacks \"status: OK\"");
}

#[tokio::test]
async fn slow_server_times_out() {
    let mut slow = Answer::ok("late");
    slow.delay = Duration::from_secs(3);
    let server = http_server(slow, None).await;
    let mut check = http_check("c", &server.url("http", "/"), StatusSet::default());
    check.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let r = probe(&check).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "timeout after 300ms");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
    // dropped here: nothing listens on the port any more
}

#[tokio::test]
async fn connection_refused() {
    let port = closed_port().await;
    let check = http_check(
        "c",
        &format!("http://127.0.0.1:{port}/"),
        StatusSet::default(),
    );
    let r = probe(&check).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "connect: connection refused");
}

// ---------------------------------------------------------------- https

struct Pki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer;

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "havip test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    Pki {
        _dir: dir,
        ca_file,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

#[tokio::test]
async fn https_with_a_self_signed_ca() {
    let pki = pki();
    let server = http_server(Answer::ok("ok"), Some(pki.acceptor.clone())).await;
    let url = server.url("https", "/health");
    let base = http_check("crm-tls", &url, StatusSet::default());

    let with_ca = with_http(base.clone(), |k| {
        if let CheckKind::Http { ca_file, .. } = k {
            *ca_file = Some(pki.ca_file.clone());
        }
    });
    let r = probe(&with_ca).await;
    assert!(r.ok, "{r:?}");

    let r = probe(&base).await;
    assert!(!r.ok, "system roots must not trust the test CA: {r:?}");
    assert!(r.detail.contains("certificate"), "{}", r.detail);
    assert!(r.detail.starts_with("connect: "), "{}", r.detail);
    eprintln!("without ca_file: {}", r.detail);

    let insecure = with_http(base.clone(), |k| {
        if let CheckKind::Http {
            insecure_skip_verify,
            ..
        } = k
        {
            *insecure_skip_verify = true;
        }
    });
    let r = probe(&insecure).await;
    assert!(r.ok, "{r:?}");
}

#[tokio::test]
async fn unreadable_ca_file_is_a_setup_error() {
    let check = with_http(
        http_check("c", "https://127.0.0.1:1/", StatusSet::default()),
        |k| {
            if let CheckKind::Http { ca_file, .. } = k {
                *ca_file = Some("/nonexistent/ca.pem".into());
            }
        },
    );
    let e = Checker::new(&check).err().expect("an error");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

// ---------------------------------------------------------------- tcp

fn tcp_check(address: &str, send: Option<&str>, expect: Option<&str>) -> HealthCheck {
    HealthCheck {
        name: "crm-1-tcp".into(),
        kind: CheckKind::Tcp {
            address: address.into(),
            send: send.map(Into::into),
            expect: expect.map(Into::into),
        },
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 3,
        weight: 0,
    }
}

#[tokio::test]
async fn tcp_connect_send_expect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf).await
                    && buf[..n].starts_with(b"PING")
                {
                    let _ = s.write_all(b"+PONG\r\nmore").await;
                }
            });
        }
    });
    let r = probe(&tcp_check(&address, None, None)).await;
    assert!(r.ok, "{r:?}");
    let r = probe(&tcp_check(&address, Some("PING\r\n"), Some("+PONG"))).await;
    assert!(r.ok, "{r:?}");
    let r = probe(&tcp_check(&address, Some("PING\r\n"), Some("-ERR"))).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "reply \"+PON\" does not start with \"-ERR\"");
    // No reply at all: the server closes without answering.
    let r = probe(&tcp_check(&address, Some("HELLO\r\n"), Some("+OK"))).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "reply \"\" does not start with \"+OK\"");

    let port = closed_port().await;
    let r = probe(&tcp_check(&format!("127.0.0.1:{port}"), None, None)).await;
    assert_eq!(r.detail, "connect: connection refused");
}

#[tokio::test]
async fn tcp_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    // Accepts (the kernel does) but never answers.
    let r = probe(&tcp_check(&address, Some("PING\r\n"), Some("+PONG"))).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "timeout after 500ms");
    drop(listener);
}

// ---------------------------------------------------------------- exec

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "#!/bin/sh\n{body}").unwrap();
    drop(f);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

fn exec_check(argv: Vec<String>, timeout: Duration) -> HealthCheck {
    HealthCheck {
        name: "crm-script".into(),
        kind: CheckKind::Exec {
            command: argv,
            run_as: None,
        },
        interval: timeout * 2,
        timeout,
        rise: 1,
        fall: 1,
        weight: 0,
    }
}

/// Alive and not a zombie (a zombie has been killed; only its parent has not reaped it).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            !matches!(state, Some(Some('Z' | 'X')))
        }
    }
}

/// Issue 14 item 3: `[health] run_as` runs the check as that user (through setpriv),
/// and its verdict and output come through as ever.
#[tokio::test]
async fn an_exec_check_runs_as_its_run_as_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to change user");
        return;
    }
    let mut check = exec_check(
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "id -un; test \"$(id -un)\" = nobody".into(),
        ],
        Duration::from_secs(2),
    );
    if let CheckKind::Exec { run_as, .. } = &mut check.kind {
        *run_as = Some("nobody".into());
    }
    let r = probe(&check).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "exit 0: nobody");
}

#[tokio::test]
async fn exec_exit_codes_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let ok = script(dir.path(), "ok.sh", "echo all good");
    let r = probe(&exec_check(vec![ok], Duration::from_secs(2))).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "exit 0: all good");

    let fail = script(
        dir.path(),
        "fail.sh",
        "echo crm down\necho 'db: refused' >&2\nexit 1",
    );
    let r = probe(&exec_check(vec![fail], Duration::from_secs(2))).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "exit 1: crm down db: refused");

    let chatty = script(
        dir.path(),
        "chatty.sh",
        "head -c 200000 /dev/zero | tr '\\0' x\nexit 2",
    );
    let r = probe(&exec_check(vec![chatty], Duration::from_secs(2))).await;
    assert!(!r.ok);
    assert!(r.detail.starts_with("exit 2: xxx"), "{}", r.detail);
    assert!(
        r.detail.len() < 300,
        "output is cut: {} bytes",
        r.detail.len()
    );

    let r = probe(&exec_check(
        vec!["/nonexistent/check".into()],
        Duration::from_secs(1),
    ))
    .await;
    assert!(!r.ok);
    assert_eq!(
        r.detail,
        "spawn /nonexistent/check: no such file or directory"
    );
}

#[tokio::test]
async fn hanging_exec_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let hang = script(
        dir.path(),
        "hang.sh",
        "sleep 1000 &\necho $! > \"$1\"\necho started\nwait",
    );
    let check = exec_check(
        vec![hang, pidfile.to_string_lossy().into_owned()],
        Duration::from_millis(500),
    );
    let started = Instant::now();
    let r = probe(&check).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "timeout after 500ms: started");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while running(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !running(pid),
        "the script's background sleep {pid} survived"
    );
}

#[tokio::test]
async fn exec_that_exits_but_leaves_a_child_holding_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let leaver = script(
        dir.path(),
        "leave.sh",
        "sleep 1000 &\necho $! > \"$1\"\necho done\nexit 0",
    );
    let check = exec_check(
        vec![leaver, pidfile.to_string_lossy().into_owned()],
        Duration::from_secs(2),
    );
    let started = Instant::now();
    let r = probe(&check).await;
    assert!(r.ok, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waited for the pipe"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while running(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!running(pid), "the leftover sleep {pid} survived");
}

// ---------------------------------------------------------------- the monitor

/// Waits (bounded) until `pred` holds for the latest report.
async fn wait_for(
    rx: &mut watch::Receiver<HealthReport>,
    within: Duration,
    what: &str,
    pred: impl Fn(&HealthReport) -> bool,
) -> HealthReport {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        {
            let report = rx.borrow_and_update();
            if pred(&report) {
                return report.clone();
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("timed out waiting for {what}: {:#?}", *rx.borrow()),
        }
    }
}

#[tokio::test]
async fn a_hanging_check_never_delays_a_fast_one() {
    let dir = tempfile::tempdir().unwrap();
    let hang = script(dir.path(), "hang.sh", "exec sleep 1000");
    let server = http_server(Answer::ok("ok"), None).await;
    let mut fast = http_check("fast", &server.url("http", "/"), StatusSet::default());
    fast.interval = Duration::from_millis(100);
    fast.timeout = Duration::from_millis(50);
    let mut slow = exec_check(vec![hang], Duration::from_millis(900));
    slow.interval = Duration::from_secs(1);
    let section = HealthSection {
        require: Require::Any,
        checks: vec![slow, fast],
        run_as: None,
    };
    let (stop, shutdown) = watch::channel(false);
    let options = MonitorOptions {
        // Two permits: the hanging probe holds one 900 ms of every second, the fast check
        // must get by with the other.
        max_concurrent_probes: 2,
        refresh: Duration::from_millis(100),
    };
    let (monitor, mut rx) = HealthMonitor::start_with(&section, shutdown, options);
    let started = Instant::now();
    let report = wait_for(
        &mut rx,
        Duration::from_secs(5),
        "2 hangs and 20 fast probes",
        |r| r.checks[0].probes >= 2 && r.checks[1].probes >= 20,
    )
    .await;
    // 20 probes at 100 ms take about 2 s; 2 hangs take about 2 s too (first start
    // jittered within 1 s): the fast check was not held up by the hanging one.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.checks[0].last_detail, "timeout after 900ms");
    assert!(report.checks[1].last_latency_ms < 50.0, "{report:?}");
    assert_eq!(report.checks[1].state, CheckState::Up);
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(3), monitor.stopped())
        .await
        .expect("monitor stops promptly, killing the hanging probe");
}

#[tokio::test]
async fn rise_and_fall_over_real_probes() {
    let server = http_server(Answer::ok("ok"), None).await;
    let mut check = http_check("crm-1-http", &server.url("http", "/"), StatusSet::default());
    check.interval = Duration::from_millis(100);
    check.timeout = Duration::from_millis(80);
    check.rise = 2;
    check.fall = 3;
    let section = HealthSection {
        require: Require::All,
        checks: vec![check],
        run_as: None,
    };
    let (stop, shutdown) = watch::channel(false);
    let options = MonitorOptions {
        refresh: Duration::from_millis(50),
        ..MonitorOptions::default()
    };
    let (monitor, mut rx) = HealthMonitor::start_with(&section, shutdown, options);
    assert!(rx.borrow().pending, "no result yet");

    let up = wait_for(&mut rx, Duration::from_secs(3), "UP", |r| {
        !r.pending && r.checks[0].state == CheckState::Up
    })
    .await;
    assert_eq!(up.node.status, HealthStatus::Healthy);

    server.set(|a| a.status = 503);
    let flipped_at = rx.borrow().checks[0].probes;
    let down = wait_for(&mut rx, Duration::from_secs(3), "DOWN", |r| {
        r.checks[0].state == CheckState::Down
    })
    .await;
    let failures = down.checks[0].probes - flipped_at;
    assert!(
        // The report read at the flip may be one refresh old, and one probe may have
        // been in flight with the old answer.
        (3..=5).contains(&failures),
        "Down after {failures} probes, fall = 3"
    );
    assert_eq!(down.node.status, HealthStatus::Unhealthy);
    assert_eq!(down.node.reason, "0 of 1 check up, need all");
    assert_eq!(
        down.checks[0].last_failure.as_deref(),
        Some("HTTP 503 (expected 200-399)")
    );

    server.set(|a| a.status = 200);
    let back = wait_for(&mut rx, Duration::from_secs(3), "UP again", |r| {
        r.checks[0].state == CheckState::Up
    })
    .await;
    assert_eq!(back.node.status, HealthStatus::Healthy);
    // The last failure stays visible after recovery, for status.
    assert!(back.checks[0].last_failure.is_some());

    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(3), monitor.stopped())
        .await
        .expect("monitor stops");
}

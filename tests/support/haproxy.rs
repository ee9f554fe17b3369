//! A real HAProxy (Debian's `haproxy` package) for the tests: started by the test in a
//! temp dir of its own ("hx-..."), on loopback, with an admin-level and a user-level
//! Runtime API socket there, in the foreground as the test's child (never as a system
//! service), and killed by PID when dropped. Also the CRM servers it balances over (tiny
//! HTTP responders that answer their own name) and a client that counts who answered.
//! It decides nothing and asserts nothing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One HAProxy process and its files.
pub struct Haproxy {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// The frontend's address (HTTP, round robin over `crm`).
    pub frontend: std::net::SocketAddr,
    servers: Vec<(String, std::net::SocketAddr)>,
}

impl Haproxy {
    /// Starts HAProxy with backend `crm` (round robin, weight 10 each) over `servers`
    /// (name, address) and backend `st` (static-rr, for a refused weight), and waits until
    /// its admin socket answers.
    pub fn start(servers: &[(&str, std::net::SocketAddr)]) -> Haproxy {
        let dir = tempfile::Builder::new().prefix("hx-").tempdir().unwrap();
        let frontend = free_port();
        let mut h = Haproxy {
            dir,
            child: None,
            frontend,
            servers: servers.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
        };
        h.write_config();
        h.spawn();
        h
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    pub fn user_socket(&self) -> PathBuf {
        self.dir.path().join("user.sock")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.cfg")
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let servers: String = (self.servers.iter())
            .map(|(n, a)| format!("    server {n} {a} weight 10\n"))
            .collect();
        let first = self.servers.first().map(|(_, a)| *a).unwrap();
        let text = format!(
            "global\n    stats socket {d}/admin.sock mode 600 level admin\n    stats socket {d}/user.sock mode 600 level user\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n    retries 0\n\
             frontend fe\n    bind {}\n    default_backend crm\n\
             backend crm\n    balance roundrobin\n{servers}\
             backend st\n    balance static-rr\n    server s1 {first}\n",
            self.frontend
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.admin_socket());
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (apt-get install haproxy)");
        self.child = Some(child);
        wait_answers(&self.admin_socket());
    }

    /// Stops HAProxy (SIGKILL, by PID) and starts it again from its config: every runtime
    /// change is gone, as after a crash or a restart.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback address whose port nothing listens on now (bound and released).
pub fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Waits (at most 5 s) until `socket` answers a Runtime API command.
fn wait_answers(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) {
            use std::io::{Read, Write};
            let mut out = String::new();
            if s.write_all(b"show info\n").is_ok()
                && s.read_to_string(&mut out).is_ok()
                && out.contains("Pid:")
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "haproxy's socket {} did not answer within 5 s",
        socket.display()
    );
}

/// A CRM server: answers every HTTP request (keep-alive or not) with its name, until the
/// runtime ends. Returns its address.
pub async fn crm_server(name: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{name}",
                            name.len()
                        );
                        if conn.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// HAProxy's view of backend `crm` through the Runtime API socket `socket`; empty when it
/// does not answer (a test polls it until it holds what it waits for).
pub fn observe(socket: &Path) -> Vec<havip::haproxy::ObservedServer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(havip::haproxy::RuntimeApi::new(socket).servers_state("crm"))
        .unwrap_or_default()
}

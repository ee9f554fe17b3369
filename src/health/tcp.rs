//! The tcp checker: connect, and optionally send a string and expect a reply that
//! starts with a given prefix, all within the check's timeout. Never keeps a connection
//! open between probes: the point is to see that a new one is accepted.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{HealthError, ProbeResult, plain, timeout_detail};
use crate::config::{CheckKind, HealthCheck};

pub struct TcpChecker {
    /// "host:port"; a DNS name is resolved by tokio off the async threads.
    address: String,
    send: Option<String>,
    expect: Option<String>,
    timeout: Duration,
}

impl TcpChecker {
    pub fn new(check: &HealthCheck) -> Result<Self, HealthError> {
        let CheckKind::Tcp {
            address,
            send,
            expect,
        } = &check.kind
        else {
            return Err(HealthError::Invalid {
                check: check.name.clone(),
                reason: "not a tcp check".into(),
            });
        };
        Ok(TcpChecker {
            address: address.clone(),
            send: send.clone(),
            expect: expect.clone(),
            timeout: check.timeout,
        })
    }

    pub async fn probe(&self) -> ProbeResult {
        let start = Instant::now();
        let verdict = tokio::time::timeout(self.timeout, self.exchange()).await;
        let latency = start.elapsed();
        match verdict {
            Err(_) => ProbeResult::fail(latency, timeout_detail(self.timeout)),
            Ok(Ok(detail)) => ProbeResult::pass(latency, detail),
            Ok(Err(failure)) => ProbeResult::fail(latency, failure.to_string()),
        }
    }

    /// Ok(detail) when the check passes.
    async fn exchange(&self) -> Result<String, TcpFailure> {
        let mut stream = TcpStream::connect(&self.address)
            .await
            .map_err(TcpFailure::Connect)?;
        let Some(send) = &self.send else {
            return Ok("connected".into());
        };
        stream
            .write_all(send.as_bytes())
            .await
            .map_err(TcpFailure::Send)?;
        let Some(expect) = &self.expect else {
            return Ok("connected, sent".into());
        };
        // Read only as much as the prefix needs: the server may keep talking.
        let want = expect.len();
        let mut reply = Vec::with_capacity(want);
        let mut chunk = [0u8; 512];
        while reply.len() < want {
            let room = (want - reply.len()).min(chunk.len());
            let n = stream
                .read(&mut chunk[..room])
                .await
                .map_err(TcpFailure::Receive)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
        }
        judge_reply(&reply, expect)
    }
}

/// The verdict on what the server answered (at most `expect`'s length of it). Pure, for the
/// fuzz target `health_reply` (fuzz/): the bytes are whatever the server sent.
pub fn judge_reply(reply: &[u8], expect: &str) -> Result<String, TcpFailure> {
    if reply.starts_with(expect.as_bytes()) {
        Ok("reply matches".into())
    } else {
        Err(TcpFailure::WrongReply {
            reply: String::from_utf8_lossy(reply).into_owned(),
            expect: expect.to_string(),
        })
    }
}

/// Why a probe failed, as its detail line reads ("connect: connection refused"). Not an
/// error of the daemon: it becomes a `ProbeResult` with `ok: false`.
#[derive(Debug, thiserror::Error)]
pub enum TcpFailure {
    #[error("connect: {}", plain(&.0.to_string()))]
    Connect(std::io::Error),
    #[error("send: {}", plain(&.0.to_string()))]
    Send(std::io::Error),
    #[error("receive: {}", plain(&.0.to_string()))]
    Receive(std::io::Error),
    #[error("reply {reply:?} does not start with {expect:?}")]
    WrongReply { reply: String, expect: String },
}

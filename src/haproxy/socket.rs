//! The Runtime API's Unix socket: one connection per command (HAProxy's non-interactive
//! mode: it reads one line, answers, closes), bounded in time and size. The only I/O of
//! the client; the text on either side is `codec`'s. It must never wait unboundedly on
//! HAProxy: a stalled HAProxy must not stall the applier, let alone the daemon.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::codec::{self, ObservedServer, ReplyError, RuntimeCommand};

/// How long one command may take, connect to last byte. HAProxy answers in well under a
/// millisecond; a second means it is stuck.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// The largest answer read. A backend's state is ~100 bytes a server; more than this is
/// not HAProxy answering what was asked.
const MAX_REPLY: u64 = 1 << 20;

/// Why a command did not get an answer, or got a refusal; each names the socket and says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    #[error(
        "HAProxy's admin socket {} does not exist: is HAProxy running, with `stats socket {} level admin` in its global section?",
        socket.display(), socket.display()
    )]
    SocketMissing { socket: PathBuf },
    #[error(
        "permission denied on HAProxy's admin socket {}: give it the group havip runs in (`stats socket ... mode 660 group havip level admin`) or run havip as root",
        socket.display()
    )]
    PermissionDenied { socket: PathBuf },
    #[error("nothing listens on HAProxy's admin socket {} (HAProxy stopped or restarting?)", socket.display())]
    NotListening { socket: PathBuf },
    #[error("HAProxy's admin socket {}: no complete answer within {timeout:?} to {command:?}", socket.display())]
    Timeout {
        socket: PathBuf,
        command: String,
        timeout: Duration,
    },
    #[error("HAProxy's admin socket {}: {source}", socket.display())]
    Io {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("HAProxy's admin socket {}: the answer to {command:?} is over {MAX_REPLY} bytes", socket.display())]
    TooLong { socket: PathBuf, command: String },
    #[error("HAProxy's admin socket {}: {command:?}: {source}", socket.display())]
    Reply {
        socket: PathBuf,
        command: String,
        source: ReplyError,
    },
}

/// One HAProxy's Runtime API.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    socket: PathBuf,
    timeout: Duration,
}

impl RuntimeApi {
    pub fn new(socket: &Path) -> Self {
        RuntimeApi {
            socket: socket.to_path_buf(),
            timeout: COMMAND_TIMEOUT,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends a `set server` command; Ok once HAProxy says it took effect.
    pub async fn set(&self, command: &RuntimeCommand) -> Result<(), HaproxyError> {
        let reply = self.send(&command.line()).await?;
        codec::check_set_reply(&reply).map_err(|source| self.reply_error(command, source))
    }

    /// `show servers state BACKEND`, parsed.
    pub async fn servers_state(&self, backend: &str) -> Result<Vec<ObservedServer>, HaproxyError> {
        let command = RuntimeCommand::ShowServersState {
            backend: backend.to_string(),
        };
        let reply = self.send(&command.line()).await?;
        codec::parse_servers_state(&reply).map_err(|source| self.reply_error(&command, source))
    }

    fn reply_error(&self, command: &RuntimeCommand, source: ReplyError) -> HaproxyError {
        HaproxyError::Reply {
            socket: self.socket.clone(),
            command: command.line(),
            source,
        }
    }

    /// One line out, the whole answer back (HAProxy closes after it), within the timeout.
    pub async fn send(&self, line: &str) -> Result<String, HaproxyError> {
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| self.connect_error(e))?;
            let io = |source| HaproxyError::Io {
                socket: self.socket.clone(),
                source,
            };
            // Reset before anything was read: the listener went away under us, which is
            // "nothing listens". (CI saw it on a stale socket whose listener a child forked
            // by another test held open until its exec: the connect was queued, then reset.)
            stream
                .write_all(format!("{line}\n").as_bytes())
                .await
                .map_err(|e| self.connect_error(e))?;
            let mut reply = Vec::new();
            let mut limited = (&mut stream).take(MAX_REPLY + 1);
            if let Err(e) = limited.read_to_end(&mut reply).await {
                return Err(if reply.is_empty() {
                    self.connect_error(e)
                } else {
                    io(e)
                });
            }
            if reply.len() as u64 > MAX_REPLY {
                return Err(HaproxyError::TooLong {
                    socket: self.socket.clone(),
                    command: line.to_string(),
                });
            }
            // Bytes that are not UTF-8 are kept visible in the message, not refused here:
            // the codec says what is wrong with the text.
            Ok(String::from_utf8_lossy(&reply).into_owned())
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(HaproxyError::Timeout {
                    socket: self.socket.clone(),
                    command: line.to_string(),
                    timeout: self.timeout,
                })
            })
    }

    /// An error of the connect, of the request's write or of the read before any byte
    /// of the answer.
    fn connect_error(&self, e: std::io::Error) -> HaproxyError {
        let socket = self.socket.clone();
        match e.kind() {
            ErrorKind::NotFound => HaproxyError::SocketMissing { socket },
            ErrorKind::PermissionDenied => HaproxyError::PermissionDenied { socket },
            ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
                HaproxyError::NotListening { socket }
            }
            _ => HaproxyError::Io { socket, source: e },
        }
    }
}

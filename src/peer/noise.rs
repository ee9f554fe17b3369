//! The encrypted, authenticated channel under the peer link: a Noise
//! `NNpsk0_25519_ChaChaPoly_BLAKE2s` handshake keyed by the cluster key, then application
//! frames (`frame.rs`) carried as a stream of Noise transport messages. It must never
//! hand a byte to the caller that did not decrypt and authenticate under the cluster key,
//! and never log or expose the key.
//!
//! On the wire every Noise message (handshake or transport) is `[u16 length][ciphertext]`.
//! A Noise message holds at most 65535 bytes, so an application frame is encoded, cut into
//! chunks of at most `MAX_CHUNK` plaintext bytes, and each chunk sealed as one message; the
//! reader decrypts messages into a byte buffer and cuts frames back out of it.
//!
//! Why `StatelessTransportState`: a connection has a reader task and a writer task, and
//! `snow::TransportState` needs `&mut` for both directions, which would force one mutex
//! around both and let a large write stall reads. The stateless state takes the nonce as an
//! argument and `&self`, so both tasks share it in an `Arc` and each keeps its own counter
//! (TCP delivers in order, so the counters on both ends stay in step without sending them).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use snow::StatelessTransportState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::frame::{self, Frame, FrameError};
use crate::key::{ClusterKey, ClusterKeys};

/// The Noise protocol name; both ends must use the same one.
pub const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake hash, so a different protocol reusing the key cannot talk to us.
pub const PROLOGUE: &[u8] = b"havip/1";
/// How long a handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest Noise message, tag included (from the Noise specification).
pub const MAX_MESSAGE: usize = 65535;
/// Authentication tag per message.
pub const TAG_LEN: usize = 16;
/// Largest plaintext per Noise transport message.
pub const MAX_CHUNK: usize = MAX_MESSAGE - TAG_LEN;

/// Which side of the handshake this node plays: the dialer initiates. (Not a node's
/// role in the cluster, which is `config::Role`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeSide {
    Initiator,
    Responder,
}

/// Why the channel failed. Display texts are written for an operator's log line.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    #[error("Noise handshake failed (wrong cluster key?)")]
    Handshake,
    #[error("connection closed during the Noise handshake (does the peer have the cluster key?)")]
    ClosedInHandshake,
    #[error("Noise handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("Noise message of {0} bytes is shorter than its authentication tag")]
    ShortMessage(usize),
    /// The peer answered the handshake with [`NOT_LISTED`]: it closes connections from
    /// this node's address because no node of its peer list has it.
    #[error("the peer does not list this node's address in its peer list")]
    NotListed,
    #[error("Noise message failed to decrypt (corrupted or forged traffic)")]
    Decrypt,
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    /// Raised by the mesh for a well-formed frame out of protocol order.
    #[error("unexpected frame: {0}")]
    Unexpected(String),
    #[error("nonce space exhausted; reconnect to rekey")]
    NonceExhausted,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The keys both halves of one connection share.
pub type Session = Arc<StatelessTransportState>;

/// Runs the handshake on `stream` with one key and returns the session keys. The whole
/// exchange is bounded by `timeout`.
pub async fn handshake<S>(
    stream: &mut S,
    key: &ClusterKey,
    side: HandshakeSide,
    timeout: Duration,
) -> Result<Session, NoiseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let keys = ClusterKeys::single(key.clone());
    handshake_with(stream, &keys, side, timeout)
        .await
        .map(|(session, _)| session)
}

/// Runs the handshake on `stream`: an initiator with `keys.current`, a responder with
/// whichever of `keys` the initiator used (each is tried on its first message). Returns
/// the session and the key it was made with.
pub async fn handshake_with<S>(
    stream: &mut S,
    keys: &ClusterKeys,
    side: HandshakeSide,
    timeout: Duration,
) -> Result<(Session, ClusterKey), NoiseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, handshake_inner(stream, keys, side)).await {
        Ok(result) => result,
        Err(_) => Err(NoiseError::Timeout(timeout)),
    }
}

fn state_for(key: &ClusterKey, side: HandshakeSide) -> Result<snow::HandshakeState, NoiseError> {
    // The pattern is a constant that parses; a failure here is a build bug, reported as a
    // handshake failure rather than a panic.
    let params = PATTERN.parse().map_err(|_| NoiseError::Handshake)?;
    let builder = snow::Builder::new(params)
        .psk(0, key.as_bytes())
        .prologue(PROLOGUE);
    match side {
        HandshakeSide::Initiator => builder.build_initiator(),
        HandshakeSide::Responder => builder.build_responder(),
    }
    .map_err(|_| NoiseError::Handshake)
}

async fn handshake_inner<S>(
    stream: &mut S,
    keys: &ClusterKeys,
    side: HandshakeSide,
) -> Result<(Session, ClusterKey), NoiseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut scratch = vec![0u8; MAX_MESSAGE];
    let (mut state, key) = match side {
        HandshakeSide::Initiator => (state_for(&keys.current, side)?, keys.current.clone()),
        // The first message is sealed under the initiator's key: the key that opens it is
        // the one the link uses.
        HandshakeSide::Responder => {
            // Only a responder says "not listed": sent to one, it is just a short message.
            let n = (read_handshake_message(stream, &mut buf).await).map_err(|e| match e {
                NoiseError::NotListed => NoiseError::ShortMessage(0),
                e => e,
            })?;
            let mut opened = None;
            for key in keys.in_order() {
                let mut state = state_for(key, side)?;
                if state.read_message(&buf[..n], &mut scratch).is_ok() {
                    opened = Some((state, key.clone()));
                    break;
                }
            }
            opened.ok_or(NoiseError::Handshake)?
        }
    };
    while !state.is_handshake_finished() {
        if state.is_my_turn() {
            let n = state
                .write_message(&[], &mut buf)
                .map_err(|_| NoiseError::Handshake)?;
            write_message(stream, &buf[..n]).await?;
            stream.flush().await?;
        } else {
            let n = read_handshake_message(stream, &mut buf).await?;
            state
                .read_message(&buf[..n], &mut scratch)
                .map_err(|_| NoiseError::Handshake)?;
        }
    }
    let session = state
        .into_stateless_transport_mode()
        .map_err(|_| NoiseError::Handshake)?;
    Ok((Arc::new(session), key))
}

/// What a node writes, unencrypted, before it closes a connection from an address that
/// no node of its peer list has (`mesh`): an empty record, which no handshake message is
/// (each has at least its tag), so the dialer can tell "not listed" from a closed or
/// failed handshake. It tells a stranger nothing a port scan does not, and changes no
/// state on the receiver beyond a log line and `havip status`.
pub const NOT_LISTED: [u8; 2] = [0, 0];

/// One handshake message; a peer that closes instead is `ClosedInHandshake`, one that
/// answers [`NOT_LISTED`] is `NotListed`.
async fn read_handshake_message<S>(stream: &mut S, buf: &mut [u8]) -> Result<usize, NoiseError>
where
    S: AsyncRead + Unpin,
{
    match read_message(stream, buf).await {
        Ok(Some(n)) => Ok(n),
        Err(NoiseError::ShortMessage(0)) => Err(NoiseError::NotListed),
        Ok(None) => Err(NoiseError::ClosedInHandshake),
        Err(NoiseError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(NoiseError::ClosedInHandshake)
        }
        Err(e) => Err(e),
    }
}

/// Writes one `[u16 length][message]` record, in one write: a node that refuses this
/// one (`NOT_LISTED`, then the close) answers the record's first segment with a reset,
/// and a second write would fail before the refusal is read.
async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> Result<(), NoiseError> {
    let len = u16::try_from(msg.len()).map_err(|_| NoiseError::ShortMessage(msg.len()))?;
    let mut record = Vec::with_capacity(2 + msg.len());
    record.extend_from_slice(&len.to_be_bytes());
    record.extend_from_slice(msg);
    w.write_all(&record).await?;
    Ok(())
}

/// Reads one `[u16 length][message]` record into `buf` (which holds `MAX_MESSAGE`).
/// `Ok(None)` is a clean end of stream before the record started.
async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<Option<usize>, NoiseError> {
    let mut len = [0u8; 2];
    let first = r.read(&mut len[..1]).await?;
    if first == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..]).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len < TAG_LEN {
        return Err(NoiseError::ShortMessage(len));
    }
    let msg = buf.get_mut(..len).ok_or(NoiseError::ShortMessage(len))?;
    r.read_exact(msg).await?;
    Ok(Some(len))
}

/// Bytes read from the socket at once; larger records are read straight into place.
const READ_BUFFER: usize = 16 * 1024;

/// The receiving half: decrypts Noise messages and yields whole frames.
pub struct NoiseReader<R> {
    /// Buffered: a record is a 2-byte length and a body, and unbuffered each would be its
    /// own read syscall (four per heartbeat with the would-block probe).
    inner: BufReader<R>,
    session: Session,
    nonce: u64,
    /// Decrypted bytes not yet cut into a frame.
    plain: Vec<u8>,
    cipher: Vec<u8>,
    chunk: Vec<u8>,
}

impl<R: AsyncRead + Unpin> NoiseReader<R> {
    pub fn new(inner: R, session: Session) -> Self {
        Self {
            inner: BufReader::with_capacity(READ_BUFFER, inner),
            session,
            nonce: 0,
            plain: Vec::new(),
            cipher: vec![0; MAX_MESSAGE],
            chunk: vec![0; MAX_MESSAGE],
        }
    }

    /// The next frame; `Ok(None)` when the peer closed the connection between frames.
    /// A frame is checked (version, length) as soon as its first bytes have arrived.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, NoiseError> {
        loop {
            if let Some(len) = frame::frame_len(&self.plain)?
                && self.plain.len() >= len
            {
                let frame = frame::decode(&self.plain[..len])?;
                self.plain.drain(..len);
                return Ok(Some(frame));
            }
            let Some(n) = read_message(&mut self.inner, &mut self.cipher).await? else {
                return if self.plain.is_empty() {
                    Ok(None)
                } else {
                    Err(NoiseError::Truncated)
                };
            };
            if self.nonce == u64::MAX {
                return Err(NoiseError::NonceExhausted);
            }
            let m = self
                .session
                .read_message(self.nonce, &self.cipher[..n], &mut self.chunk)
                .map_err(|_| NoiseError::Decrypt)?;
            self.nonce += 1;
            self.plain.extend_from_slice(&self.chunk[..m]);
        }
    }
}

/// The sending half: encodes frames, seals them as Noise messages, and batches them until
/// `flush`.
pub struct NoiseWriter<W> {
    inner: W,
    session: Session,
    nonce: u64,
    out: Vec<u8>,
    sealed: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> NoiseWriter<W> {
    pub fn new(inner: W, session: Session) -> Self {
        Self {
            inner,
            session,
            nonce: 0,
            out: Vec::new(),
            sealed: vec![0; MAX_MESSAGE],
        }
    }

    /// Encrypts `frame` into the outgoing buffer; nothing is sent before `flush`.
    pub fn queue(&mut self, frame: &Frame) -> Result<(), NoiseError> {
        self.queue_raw(&frame.encode()?)
    }

    /// Encrypts bytes that are supposed to be encoded frames, unchecked. For tests and
    /// tools that must send what a peer of another version (or a broken one) would send.
    pub fn queue_raw(&mut self, bytes: &[u8]) -> Result<(), NoiseError> {
        for chunk in bytes.chunks(MAX_CHUNK) {
            if self.nonce == u64::MAX {
                return Err(NoiseError::NonceExhausted);
            }
            let n = self
                .session
                .write_message(self.nonce, chunk, &mut self.sealed)
                .map_err(|_| NoiseError::Decrypt)?;
            self.nonce += 1;
            // n <= MAX_MESSAGE = u16::MAX by construction of MAX_CHUNK.
            self.out.extend_from_slice(&(n as u16).to_be_bytes());
            self.out.extend_from_slice(&self.sealed[..n]);
        }
        Ok(())
    }

    /// Bytes queued and not yet flushed.
    pub fn pending_bytes(&self) -> usize {
        self.out.len()
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), NoiseError> {
        self.inner.write_all(&self.out).await?;
        self.out.clear();
        self.inner.flush().await?;
        Ok(())
    }

    /// Queues and flushes one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), NoiseError> {
        self.queue(frame)?;
        self.flush().await
    }

    /// Closes the sending direction (a TCP FIN), so the peer sees a clean end.
    pub async fn shutdown(&mut self) -> Result<(), NoiseError> {
        self.inner.shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::frame::Kind;

    async fn pair(
        key_a: ClusterKey,
        key_b: ClusterKey,
    ) -> (
        Result<Session, NoiseError>,
        Result<Session, NoiseError>,
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
    ) {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let (ra, rb) = tokio::join!(
            handshake(&mut a, &key_a, HandshakeSide::Initiator, HANDSHAKE_TIMEOUT),
            handshake(&mut b, &key_b, HandshakeSide::Responder, HANDSHAKE_TIMEOUT),
        );
        (ra, rb, a, b)
    }

    #[tokio::test]
    async fn frames_round_trip_across_message_boundaries() {
        let key = ClusterKey::generate();
        let (sa, sb, a, b) = pair(key.clone(), key).await;
        let (sa, sb) = (sa.expect("initiator"), sb.expect("responder"));
        let (_ar, aw) = tokio::io::split(a);
        let (br, _bw) = tokio::io::split(b);
        let mut writer = NoiseWriter::new(aw, sa);
        let mut reader = NoiseReader::new(br, sb);
        let sent = vec![
            Frame::new(Kind::Hello, 0, 0, b"a".to_vec()),
            Frame::new(Kind::Request, 1, 2, vec![]),
            Frame::new(
                Kind::Response,
                1,
                2,
                (0..200 * 1024).map(|i| i as u8).collect(),
            ),
            Frame::new(Kind::ErrorResponse, 9, 1, b"nope".to_vec()),
        ];
        let sender = async {
            for f in &sent {
                writer.send(f).await.expect("send");
            }
            writer.shutdown().await.expect("shutdown");
        };
        let receiver = async {
            let mut got = Vec::new();
            while let Some(f) = reader.read_frame().await.expect("read") {
                got.push(f);
            }
            got
        };
        let ((), got) = tokio::join!(sender, receiver);
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn wrong_key_fails_the_handshake_on_both_ends() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let (key_a, key_b) = (ClusterKey::generate(), ClusterKey::generate());
        let responder = tokio::spawn(async move {
            // `b` is dropped when this task ends, as the mesh drops a rejected socket.
            handshake(&mut b, &key_b, HandshakeSide::Responder, HANDSHAKE_TIMEOUT)
                .await
                .map(|_| ())
        });
        let initiator =
            handshake(&mut a, &key_a, HandshakeSide::Initiator, HANDSHAKE_TIMEOUT).await;
        let responder = responder.await.expect("join");
        assert!(
            matches!(responder, Err(NoiseError::Handshake)),
            "{responder:?}"
        );
        assert!(
            matches!(initiator, Err(NoiseError::ClosedInHandshake)),
            "{:?}",
            initiator.err()
        );
    }

    #[tokio::test]
    async fn silence_times_out() {
        let (mut a, _b) = tokio::io::duplex(1024);
        let key = ClusterKey::generate();
        let r = handshake(
            &mut a,
            &key,
            HandshakeSide::Responder,
            Duration::from_millis(50),
        )
        .await;
        assert!(matches!(r, Err(NoiseError::Timeout(_))), "{r:?}");
    }
}

//! The application frame codec of the peer link: bytes in, a typed `Frame` or a typed
//! `FrameError` out. It is pure: it must never touch a socket, a clock or a log, and it
//! must never panic on any input, because every byte it sees comes from a peer.
//!
//! Wire layout (big endian), carried inside the Noise channel (`noise.rs`):
//! `[u32 length][u8 version][u8 kind][u64 request id][u16 channel][payload]`,
//! where `length` counts every byte after itself (header rest + payload).

use std::fmt;

/// The only frame version this build speaks. Bump it when the layout changes.
pub const VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes after the length prefix and before the payload: version, kind, id, channel.
pub const HEADER_REST: usize = 1 + 1 + 8 + 2;
/// Smallest complete frame (empty payload).
pub const MIN_FRAME: usize = LEN_PREFIX + HEADER_REST;
/// Largest payload a peer may send; a larger length is taken as garbage, not as a reason
/// to allocate.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// What a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// First frame in each direction after the handshake; payload = the sender's node name.
    Hello = 1,
    /// A request for the peer's handler on `channel`; answered with the same id.
    Request = 2,
    /// The handler's successful answer.
    Response = 3,
    /// The handler's refusal; payload = UTF-8 message.
    ErrorResponse = 4,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Hello),
            2 => Some(Self::Request),
            3 => Some(Self::Response),
            4 => Some(Self::ErrorResponse),
            _ => None,
        }
    }
}

/// One decoded application frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    /// Pairs a Response/ErrorResponse with its Request; 0 for Hello.
    pub id: u64,
    /// The caller's multiplexing tag (the VIP group index for Raft traffic).
    pub channel: u16,
    pub payload: Vec<u8>,
}

impl fmt::Debug for Frame {
    // Payloads can be 16 MiB: print their size, not their bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("channel", &self.channel)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Why some bytes are not a frame this node can accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame too short: {got} bytes, a frame has at least {MIN_FRAME}")]
    TooShort { got: usize },
    #[error("frame length field says {got} bytes but holds {have}")]
    LengthMismatch { got: usize, have: usize },
    #[error("frame payload of {got} bytes exceeds the limit of {MAX_PAYLOAD} bytes")]
    TooLong { got: usize },
    #[error("frame version {0} received, this node speaks version {VERSION}")]
    UnknownVersion(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

impl Frame {
    pub fn new(kind: Kind, id: u64, channel: u16, payload: Vec<u8>) -> Self {
        Self {
            kind,
            id,
            channel,
            payload,
        }
    }

    /// Encodes the frame. A payload over `MAX_PAYLOAD` is refused here so that this node
    /// never sends what its peer must reject.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        if self.payload.len() > MAX_PAYLOAD {
            return Err(FrameError::TooLong {
                got: self.payload.len(),
            });
        }
        let rest = HEADER_REST + self.payload.len();
        let mut out = Vec::with_capacity(LEN_PREFIX + rest);
        // `rest` <= 16 MiB + 12, so it fits a u32.
        out.extend_from_slice(&(rest as u32).to_be_bytes());
        out.push(VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.channel.to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }
}

/// Looks at the start of a byte stream and says how long the first frame is, without
/// decoding it: `Ok(None)` while the length prefix is incomplete, an error as soon as the
/// prefix announces something this node will not accept (so a reader never buffers 4 GiB
/// of garbage waiting for a frame's end). The version byte is checked as soon as it has
/// arrived, before the length is judged, because a newer version may lay out its length
/// differently and "unknown version" is the error that tells the operator what to do.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if let Some(&version) = buf.get(LEN_PREFIX)
        && version != VERSION
    {
        return Err(FrameError::UnknownVersion(version));
    }
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let mut len = [0u8; LEN_PREFIX];
    len.copy_from_slice(prefix);
    let rest = u32::from_be_bytes(len) as usize;
    if rest < HEADER_REST {
        return Err(FrameError::TooShort {
            got: LEN_PREFIX + rest,
        });
    }
    if rest - HEADER_REST > MAX_PAYLOAD {
        return Err(FrameError::TooLong {
            got: rest - HEADER_REST,
        });
    }
    Ok(Some(LEN_PREFIX + rest))
}

/// Decodes exactly one complete frame. The version is checked before anything else after
/// the length, so a newer peer gets "unknown version" and not a confusing kind error.
pub fn decode(buf: &[u8]) -> Result<Frame, FrameError> {
    if buf.len() < MIN_FRAME {
        return Err(FrameError::TooShort { got: buf.len() });
    }
    let version = buf[4];
    if version != VERSION {
        return Err(FrameError::UnknownVersion(version));
    }
    let Some(total) = frame_len(buf)? else {
        return Err(FrameError::TooShort { got: buf.len() });
    };
    if total != buf.len() {
        return Err(FrameError::LengthMismatch {
            got: total,
            have: buf.len(),
        });
    }
    let kind = Kind::from_byte(buf[5]).ok_or(FrameError::UnknownKind(buf[5]))?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&buf[6..14]);
    let mut channel = [0u8; 2];
    channel.copy_from_slice(&buf[14..16]);
    Ok(Frame {
        kind,
        id: u64::from_be_bytes(id),
        channel: u16::from_be_bytes(channel),
        payload: buf[MIN_FRAME..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn round_trip(frame: Frame) {
        let bytes = frame.encode().expect("encode");
        assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
        assert_eq!(decode(&bytes).expect("decode"), frame);
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(Frame::new(Kind::Hello, 0, 0, b"gw-a".to_vec()));
        round_trip(Frame::new(Kind::Request, u64::MAX, u16::MAX, vec![]));
        round_trip(Frame::new(Kind::Response, 7, 3, vec![0xAB; 200 * 1024]));
        round_trip(Frame::new(Kind::ErrorResponse, 1, 1, "no leader".into()));
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = Frame::new(Kind::Request, 0x0102, 0x0304, vec![9])
            .encode()
            .expect("encode");
        assert_eq!(
            bytes,
            [0, 0, 0, 13, 1, 2, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 9],
            "[u32 len][ver][kind][u64 id][u16 channel][payload]"
        );
    }

    #[test]
    fn too_short() {
        assert_eq!(decode(&[]), Err(FrameError::TooShort { got: 0 }));
        assert_eq!(
            decode(&[0, 0, 0, 12, 1]),
            Err(FrameError::TooShort { got: 5 })
        );
        // A length prefix smaller than the header is caught by the stream peek too.
        assert_eq!(
            frame_len(&[0, 0, 0, 3]),
            Err(FrameError::TooShort { got: 7 })
        );
        assert_eq!(
            frame_len(&[0, 0, 0, 3, 7]),
            Err(FrameError::UnknownVersion(7))
        );
        assert_eq!(frame_len(&[0, 0, 0]), Ok(None));
    }

    #[test]
    fn too_long() {
        let huge = (HEADER_REST + MAX_PAYLOAD + 1) as u32;
        let mut bytes = huge.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            frame_len(&bytes),
            Err(FrameError::TooLong {
                got: MAX_PAYLOAD + 1
            })
        );
        assert_eq!(
            decode(&bytes),
            Err(FrameError::TooLong {
                got: MAX_PAYLOAD + 1
            })
        );
        let frame = Frame::new(Kind::Request, 1, 1, vec![0; MAX_PAYLOAD + 1]);
        assert_eq!(
            frame.encode(),
            Err(FrameError::TooLong {
                got: MAX_PAYLOAD + 1
            })
        );
    }

    #[test]
    fn length_mismatch() {
        let mut bytes = Frame::new(Kind::Request, 1, 1, vec![1, 2])
            .encode()
            .expect("encode");
        bytes.push(0);
        assert!(matches!(
            decode(&bytes),
            Err(FrameError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn unknown_version_names_both_versions() {
        let mut bytes = Frame::new(Kind::Hello, 0, 0, b"gw-b".to_vec())
            .encode()
            .expect("encode");
        bytes[4] = 7;
        let err = decode(&bytes).expect_err("version 7 is refused");
        assert_eq!(err, FrameError::UnknownVersion(7));
        let msg = err.to_string();
        assert!(
            msg.contains("version 7") && msg.contains("version 1"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_kind() {
        let mut bytes = Frame::new(Kind::Request, 1, 1, vec![])
            .encode()
            .expect("encode");
        bytes[5] = 0;
        assert_eq!(decode(&bytes), Err(FrameError::UnknownKind(0)));
        bytes[5] = 200;
        assert_eq!(decode(&bytes), Err(FrameError::UnknownKind(200)));
    }

    /// Random bytes, and random mutations of valid frames, must never panic.
    #[test]
    fn garbage_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0048_4156_4950);
        let valid = Frame::new(Kind::Response, 42, 2, vec![5; 40])
            .encode()
            .expect("encode");
        for _ in 0..20_000 {
            let len = rng.gen_range(0..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            let _ = decode(&bytes);
            let _ = frame_len(&bytes);

            let mut mutated = valid.clone();
            let i = rng.gen_range(0..mutated.len());
            mutated[i] = rng.r#gen();
            mutated.truncate(rng.gen_range(0..=mutated.len()));
            let _ = decode(&mutated);
            let _ = frame_len(&mutated);
        }
    }
}

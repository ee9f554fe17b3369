//! The cluster key: 32 random bytes, base64 in a file that only its owner may read.
//! It is the pre-shared key of the Noise handshake between peers (like corosync's
//! authkey). This module must never log or display the key's bytes.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

/// Errors reading or writing a key file; each names the file and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} is readable by group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} does not hold a havip key ({why}); make one with `havip keygen --out {path}`"
    )]
    Malformed { path: PathBuf, why: MalformedKey },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why a key file's text is not a key (the file's name is added by `KeyError::Malformed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedKey {
    #[error("not base64: {0}")]
    NotBase64(base64::DecodeError),
    #[error("{0} bytes where 32 are needed")]
    WrongLength(usize),
}

/// The keys a node accepts on its peer links: the current one, with which it dials, and
/// during a key rollover the previous one, still accepted (and dialed with when a peer
/// refuses the current one), until every node has the new key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterKeys {
    pub current: ClusterKey,
    pub previous: Option<ClusterKey>,
}

impl ClusterKeys {
    /// One key, no rollover.
    pub fn single(key: ClusterKey) -> Self {
        ClusterKeys {
            current: key,
            previous: None,
        }
    }

    /// Reads `key_file` and, during a rollover, `previous_key_file`.
    pub fn load(key_file: &Path, previous_key_file: Option<&Path>) -> Result<Self, KeyError> {
        Ok(ClusterKeys {
            current: ClusterKey::load(key_file)?,
            previous: previous_key_file.map(ClusterKey::load).transpose()?,
        })
    }

    /// The keys in the order a link tries them: the current one first.
    pub fn in_order(&self) -> impl Iterator<Item = &ClusterKey> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }

    /// Whether a link authenticated with the key of id `id` is still allowed.
    pub fn accepts(&self, id: &str) -> bool {
        self.in_order().any(|k| k.id() == id)
    }

    /// "k:3f9a21c4" or "k:3f9a21c4 (previous k:77b0e912 still accepted)".
    pub fn describe(&self) -> String {
        match &self.previous {
            None => self.current.id(),
            Some(p) => format!("{} (previous {} still accepted)", self.current.id(), p.id()),
        }
    }
}

/// The cluster's shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short public name for the key ("k:3f9a21c4"), for status and logs: which key a
    /// node or a link uses, without the key. A hash under its own label, so it is no
    /// hash anyone else computes of the key.
    pub fn id(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(b"havip cluster key id\0")
            .chain_update(self.0)
            .finalize();
        digest[..4].iter().fold(String::from("k:"), |mut s, b| {
            s.push_str(&format!("{b:02x}"));
            s
        })
    }

    /// Parses the file's text (base64 of 32 bytes, surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<Self, MalformedKey> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(MalformedKey::NotBase64)?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| MalformedKey::WrongLength(b.len()))?;
        Ok(Self(bytes))
    }

    pub fn to_text(&self) -> String {
        format!("{}\n", STANDARD.encode(self.0))
    }

    /// Reads a key file, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let meta = fs::metadata(path).map_err(|source| KeyError::Read {
            path: path.into(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.into(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_text(&text).map_err(|why| KeyError::Malformed {
            path: path.into(),
            why,
        })
    }

    /// Writes a new key file with mode 0600; refuses to overwrite an existing one, because
    /// replacing a cluster's key on one node cuts it off from its peers.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| KeyError::Write {
                path: path.into(),
                source,
            })?;
        file.write_all(self.to_text().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| KeyError::Write {
                path: path.into(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster.key");
        let key = ClusterKey::generate();
        key.write_new(&path).expect("write");
        assert_eq!(ClusterKey::load(&path).expect("load"), key);
        assert!(key.write_new(&path).is_err(), "never overwrites");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = ClusterKey::load(&path).expect_err("group-readable key is refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn malformed_text_says_what_is_wrong() {
        let not_base64 = ClusterKey::from_text("!!!").unwrap_err().to_string();
        assert!(not_base64.contains("base64"), "{not_base64}");
        let short = ClusterKey::from_text("AAAA").unwrap_err();
        assert_eq!(short, MalformedKey::WrongLength(3));
        assert!(short.to_string().contains("3 bytes"), "{short}");
    }
}

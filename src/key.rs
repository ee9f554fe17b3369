//! The cluster key: 32 random bytes, base64 in a file that only its owner may read.
//! It is the pre-shared key of the Noise handshake between peers (like corosync's
//! authkey). This module must never log or display the key's bytes, never follow a
//! symbolic link to a key, and leaves no copy of them in memory when a key is dropped.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

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
        "key file {path} is a symbolic link; havip reads a key only from the file itself: point key_file at it"
    )]
    Symlink { path: PathBuf },
    #[error("key file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "key file {path} is owned by uid {owner}, neither root nor the user havip runs as (uid {me}, or the havip user when run as root); run `chown {me} {path}`"
    )]
    Owner { path: PathBuf, owner: u32, me: u32 },
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

/// Whether a key owned by `owner` may be used by a process running as `me`: root's and
/// the process's own keys, and for root also the `havip` user's (the package's daemon
/// user, whose key an operator checks with `havip check-config` as root). Any other owner
/// could replace the key under the daemon.
fn may_own_key(owner: u32, me: u32) -> bool {
    let havip = || {
        nix::unistd::User::from_name("havip")
            .ok()
            .flatten()
            .is_some_and(|u| u.uid.as_raw() == owner)
    };
    owner == 0 || owner == me || (me == 0 && havip())
}

/// The key's bytes do not outlive it in memory (a core dump, a swapped page).
impl Drop for ClusterKey {
    fn drop(&mut self) {
        self.0.zeroize();
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
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(MalformedKey::NotBase64)?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| MalformedKey::WrongLength(bytes.len()))?;
        Ok(Self(key))
    }

    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}\n", STANDARD.encode(self.0)))
    }

    /// Reads a key file: opened once, never through a symbolic link, and refused unless
    /// the open file is a regular file owned by root or by the user havip runs as, and
    /// readable by its owner only (all checked on the open descriptor, so the file cannot
    /// be swapped between the check and the read). The text read is wiped afterwards.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let read_error = |source| KeyError::Read {
            path: path.into(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => KeyError::Symlink { path: path.into() },
                _ => read_error(e),
            })?;
        let meta = file.metadata().map_err(read_error)?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile { path: path.into() });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.into(),
                mode,
            });
        }
        let me = nix::unistd::geteuid().as_raw();
        if !may_own_key(meta.uid(), me) {
            return Err(KeyError::Owner {
                path: path.into(),
                owner: meta.uid(),
                me,
            });
        }
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text).map_err(read_error)?;
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

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = ClusterKey::load(&path).expect_err("group-readable key is refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    /// Issue 14 item 6: a symbolic link at the key path is refused (a planted link could
    /// make havip read another file as its key), as is a key owned by another user.
    #[test]
    fn a_symlink_or_a_foreign_owner_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.key");
        ClusterKey::generate().write_new(&real).expect("write");
        let link = dir.path().join("cluster.key");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let err = ClusterKey::load(&link).expect_err("a symlink is refused");
        assert!(matches!(err, KeyError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // Owned by another user (only root can chown; CI runs as root).
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&real, Some(4242), None).expect("chown");
            let err = ClusterKey::load(&real).expect_err("a foreign owner is refused");
            assert!(matches!(err, KeyError::Owner { owner: 4242, .. }), "{err}");
            assert!(err.to_string().contains("chown 0"), "{err}");
        }
        let dir_as_key = ClusterKey::load(dir.path()).expect_err("a directory is refused");
        assert!(
            matches!(
                dir_as_key,
                KeyError::NotAFile { .. } | KeyError::TooOpen { .. }
            ),
            "{dir_as_key}"
        );
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

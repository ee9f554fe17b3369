//! Log lines to the systemd journal with their fields, so that `journalctl -u havip
//! GROUP=crm` or `NEW_STATE=MASTER` finds them: each `tracing` field becomes a journal
//! field of the same name in capitals (`group` → `GROUP`, `term` → `TERM`), beside
//! `MESSAGE` (the line as the text log writes it), `PRIORITY` and `SYSLOG_IDENTIFIER`.
//!
//! It must never make the daemon wait. The daemon runs on one thread, and a send to the
//! journal's datagram socket blocks once journald falls behind (its queue holds 512
//! datagrams by default): a stalled journal would stop the heartbeats and move the VIP.
//! So the event is encoded where it happens and handed to a thread of its own through a
//! bounded queue; when the queue is full the line is dropped and counted, and the next
//! line that gets through says how many were lost. (tracing-journald, the maintained
//! crate, sends on the caller's thread; that is the one thing havip cannot accept.)
//! The native protocol: <https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// Where journald listens for the native protocol.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// Lines waiting for the sender thread; beyond this they are dropped (and counted).
const QUEUE: usize = 1024;

/// Whether systemd connected this process's stdout to the journal: it then sets
/// `JOURNAL_STREAM` to the stream's `device:inode` (systemd.exec(5)), and the daemon logs
/// natively instead, with fields.
pub fn stdout_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/1") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

/// The layer that encodes each event and queues it for the sender thread.
pub struct JournalLayer {
    queue: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    identifier: String,
}

/// Starts the sender thread for the journal socket at `socket` (normally [`SOCKET`]).
/// Fails when no journal listens there, so the caller can fall back to text on stdout.
pub fn layer(socket: &Path, identifier: &str) -> std::io::Result<JournalLayer> {
    let sock = UnixDatagram::unbound()?;
    // An empty datagram is discarded by journald; it proves someone listens.
    sock.send_to(&[], socket)?;
    let (queue, lines) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let path: PathBuf = socket.into();
    std::thread::Builder::new()
        .name("havip-journal".into())
        .spawn(move || {
            // Ends when every sender is gone (the subscriber dropped at exit).
            for line in lines {
                // A datagram the journal refuses is lost: there is nowhere else to say so.
                let _ = sock.send_to(&line, &path);
            }
        })?;
    Ok(JournalLayer {
        queue,
        dropped,
        identifier: identifier.into(),
    })
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let lost = self.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = write!(
                fields.message,
                " ({lost} earlier log lines dropped: the journal was too slow)"
            );
        }
        let meta = event.metadata();
        let mut entry = vec![
            ("MESSAGE".to_string(), fields.text()),
            ("PRIORITY".into(), priority(meta.level()).to_string()),
            ("SYSLOG_IDENTIFIER".into(), self.identifier.clone()),
            ("TARGET".into(), meta.target().to_string()),
        ];
        entry.extend(fields.named);
        match self.queue.try_send(encode(&entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(lost + 1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// syslog priorities, as journald expects them.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// An event's message and its other fields, each as text.
#[derive(Default)]
struct Fields {
    message: String,
    named: Vec<(String, String)>,
}

impl Fields {
    /// MESSAGE as the text log writes the line: the message, then `key=value` for each field.
    fn text(&self) -> String {
        let mut text = self.message.clone();
        for (name, value) in &self.named {
            let _ = write!(text, " {}={value}", name.to_ascii_lowercase());
        }
        text
    }

    fn add(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else if let Some(name) = journal_name(field.name()) {
            self.named.push((name, value));
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.add(field, format!("{value:?}"));
    }
}

/// A journal field name: capitals, digits and `_`, not starting with `_` (those are
/// journald's own, trusted fields) or a digit; `None` when nothing is left.
fn journal_name(name: &str) -> Option<String> {
    let upper: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = upper.trim_start_matches(|c: char| c == '_' || c.is_ascii_digit());
    (!trimmed.is_empty()).then(|| trimmed.chars().take(64).collect())
}

/// The native protocol's encoding of one entry: `NAME=value\n`, or for a value with a
/// newline `NAME\n`, its length as 64-bit little endian, the value and `\n`.
pub fn encode(fields: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_plain_value_is_name_equals_value() {
        let bytes = encode(&entry(&[("MESSAGE", "state change"), ("GROUP", "crm")]));
        assert_eq!(bytes, b"MESSAGE=state change\nGROUP=crm\n");
    }

    #[test]
    fn a_value_with_a_newline_is_length_prefixed() {
        let bytes = encode(&entry(&[("MESSAGE", "a\nb")]));
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\n");
        assert_eq!(bytes, want);
    }

    #[test]
    fn field_names_become_journal_names() {
        assert_eq!(journal_name("group").as_deref(), Some("GROUP"));
        assert_eq!(journal_name("old_state").as_deref(), Some("OLD_STATE"));
        assert_eq!(journal_name("late-ms").as_deref(), Some("LATE_MS"));
        // `_`-names are journald's trusted fields: a log line must not forge them.
        assert_eq!(journal_name("_pid").as_deref(), Some("PID"));
        assert_eq!(journal_name("2x").as_deref(), Some("X"));
        assert_eq!(journal_name("__").as_deref(), None);
    }
}

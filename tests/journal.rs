//! The journal layer against a real datagram socket standing in for journald's: what
//! arrives is the native protocol, with the event's fields as journal fields, so that
//! `journalctl GROUP=crm` finds the line (the Vagrant rig checks that with the real
//! journald: vagrant/e2e.sh).

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt as _;

/// Decodes one native-protocol datagram into its fields.
fn decode(mut bytes: &[u8]) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    while !bytes.is_empty() {
        let end = bytes.iter().position(|b| *b == b'\n').expect("a line");
        let line = &bytes[..end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            bytes = &bytes[end + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let len_bytes: [u8; 8] = bytes[end + 1..end + 9].try_into().expect("length");
            let len = u64::from_le_bytes(len_bytes) as usize;
            let value = &bytes[end + 9..end + 9 + len];
            fields.insert(name, String::from_utf8_lossy(value).into_owned());
            bytes = &bytes[end + 9 + len + 1..];
        }
    }
    fields
}

#[test]
fn a_state_change_arrives_with_its_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("socket");
    let journald = UnixDatagram::bind(&path).expect("bind the stand-in journal socket");
    journald
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let layer = havip::journal::layer(&path, "havip").expect("the journal layer");
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(group = %"crm", term = 4u64, old_state = %"BACKUP", new_state = %"MASTER",
            "state change: BACKUP -> MASTER (holding the VIPs)");
        tracing::warn!(group = "crm2", "two\nlines");
    });
    let mut buf = vec![0u8; 65536];
    // The layer's probe of the socket: an empty datagram.
    let n = journald.recv(&mut buf).expect("the probe");
    assert_eq!(n, 0);
    let n = journald.recv(&mut buf).expect("the state change");
    let fields = decode(&buf[..n]);
    assert_eq!(fields["GROUP"], "crm");
    assert_eq!(fields["TERM"], "4");
    assert_eq!(fields["OLD_STATE"], "BACKUP");
    assert_eq!(fields["NEW_STATE"], "MASTER");
    assert_eq!(fields["PRIORITY"], "6");
    assert_eq!(fields["SYSLOG_IDENTIFIER"], "havip");
    assert_eq!(
        fields["MESSAGE"],
        "state change: BACKUP -> MASTER (holding the VIPs) group=crm term=4 old_state=BACKUP new_state=MASTER"
    );
    let n = journald.recv(&mut buf).expect("the warning");
    let fields = decode(&buf[..n]);
    assert_eq!(fields["MESSAGE"], "two\nlines group=crm2");
    assert_eq!(fields["PRIORITY"], "4");
}

#[test]
fn no_journal_listening_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = havip::journal::layer(&dir.path().join("absent"), "havip")
        .err()
        .expect("no socket there");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
}

//! HAProxy's Runtime API as text: the commands havip sends (one per connection, one line
//! each) and what HAProxy answers, typed. Pure: bytes in, a typed reply or a typed
//! `ReplyError` out; no sockets (those are `socket.rs`). It must never panic on a reply,
//! whatever HAProxy (or something pretending to be it) sends.
//!
//! What HAProxy 2.6 answers, read off the real thing (tests/haproxy_runtime.rs):
//! - a `set server` that took effect: an empty line;
//! - a refusal: one line of text, e.g. "No such server.", "No such backend.",
//!   "Permission denied" (the socket's level is below admin), "Unknown command..." (an
//!   older level or version), "Absolute weight can only be between 0 and 256 inclusive.",
//!   "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.";
//! - `show servers state B`: a format version line ("1"), a header line naming the
//!   columns ("# be_id be_name srv_id srv_name ..."), then one line per server; or
//!   "Can't find backend." for an unknown backend.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// An operator's admin state for a server, as HAProxy's `set server B/S state` takes it.
/// Replicated through Raft (`consensus::state::Command::SetServerAdmin`), so the serde
/// names are a wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Takes new connections.
    Ready,
    /// Keeps the connections it has (and persistent ones), takes no new ones.
    Drain,
    /// Takes nothing; HAProxy stops checking it.
    Maint,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One command to one server. The names come from a validated config (letters, digits,
/// '-', '_' and '.'), so they cannot carry a ';' or a newline into the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeCommand {
    SetState {
        backend: String,
        server: String,
        state: AdminState,
    },
    SetWeight {
        backend: String,
        server: String,
        weight: u16,
    },
    /// The operational state havip's checks decided (`set server B/S health up|down`); it
    /// holds until HAProxy's own check of the server, if any, says otherwise.
    SetHealth {
        backend: String,
        server: String,
        up: bool,
    },
    ShowServersState {
        backend: String,
    },
}

impl RuntimeCommand {
    /// The command's line, without the newline.
    pub fn line(&self) -> String {
        match self {
            RuntimeCommand::SetState {
                backend,
                server,
                state,
            } => format!("set server {backend}/{server} state {state}"),
            RuntimeCommand::SetWeight {
                backend,
                server,
                weight,
            } => format!("set server {backend}/{server} weight {weight}"),
            RuntimeCommand::SetHealth {
                backend,
                server,
                up,
            } => format!(
                "set server {backend}/{server} health {}",
                if *up { "up" } else { "down" }
            ),
            RuntimeCommand::ShowServersState { backend } => {
                format!("show servers state {backend}")
            }
        }
    }
}

impl fmt::Display for RuntimeCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

/// What HAProxy said instead of doing what was asked. Each says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error(
        "HAProxy answered \"Permission denied\": the stats socket is not at level admin; add `level admin` to its `stats socket` line in haproxy.cfg"
    )]
    NotAdmin,
    #[error(
        "HAProxy does not know the command ({text:?}): the stats socket's level is below admin (add `level admin` to its `stats socket` line) or this HAProxy is too old for it"
    )]
    UnknownCommand { text: String },
    #[error(
        "HAProxy has no backend of that name ({text:?}); name the backend of haproxy.cfg in the pool's `haproxy.backend`"
    )]
    NoSuchBackend { text: String },
    #[error(
        "HAProxy has no server of that name in the backend ({text:?}); the pool's server names must be haproxy.cfg's"
    )]
    NoSuchServer { text: String },
    /// Any other refusal, in HAProxy's words (an out-of-range weight, a static algorithm).
    #[error("HAProxy refused it: {text:?}")]
    Refused { text: String },
    #[error("HAProxy's answer is not what `show servers state` sends ({what}): {line:?}")]
    Malformed { what: String, line: String },
}

/// The first line of a reply, trimmed, cut to a length fit for a message.
fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(200).collect()
}

/// A refusal in HAProxy's words, typed.
fn refusal(text: &str) -> ReplyError {
    let line = first_line(text);
    let lower = line.to_ascii_lowercase();
    if lower.starts_with("permission denied") {
        ReplyError::NotAdmin
    } else if lower.starts_with("unknown command") {
        ReplyError::UnknownCommand { text: line }
    } else if lower.contains("no such backend") || lower.contains("can't find backend") {
        ReplyError::NoSuchBackend { text: line }
    } else if lower.contains("no such server") {
        ReplyError::NoSuchServer { text: line }
    } else {
        ReplyError::Refused { text: line }
    }
}

/// The reply to a `set server` command: nothing (whitespace) when it took effect.
pub fn check_set_reply(reply: &str) -> Result<(), ReplyError> {
    if reply.trim().is_empty() {
        Ok(())
    } else {
        Err(refusal(reply))
    }
}

/// One server as `show servers state` reports it, reduced to what havip compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedServer {
    pub name: String,
    /// `srv_op_state`: 0 stopped (down), 1 starting, 2 running, 3 stopping.
    pub op_state: u8,
    /// `srv_admin_state`, HAProxy's bit field (`ADMIN_*` below).
    pub admin_bits: u16,
    /// `srv_uweight`: the weight in effect (set by config or `set server weight`).
    pub weight: u16,
    /// `srv_iweight`: the weight of haproxy.cfg, which a restart or reload brings back.
    pub initial_weight: u16,
}

/// `srv_admin_state` bits (HAProxy's `SRV_ADMF_*`): forced, inherited, config maintenance,
/// forced and inherited drain, DNS resolution and hostname maintenance.
const ADMIN_MAINT: u16 = 0x01 | 0x02 | 0x04 | 0x20 | 0x40;
const ADMIN_DRAIN: u16 = 0x08 | 0x10;

impl ObservedServer {
    /// Whether HAProxy sends it traffic as far as health goes (running or starting;
    /// stopping takes only persistent connections, so counts as down).
    pub fn up(&self) -> bool {
        matches!(self.op_state, 1 | 2)
    }

    /// The admin state its bits amount to; maintenance wins over drain.
    pub fn admin(&self) -> AdminState {
        if self.admin_bits & ADMIN_MAINT != 0 {
            AdminState::Maint
        } else if self.admin_bits & ADMIN_DRAIN != 0 {
            AdminState::Drain
        } else {
            AdminState::Ready
        }
    }
}

/// The columns havip reads; the header names them, so a version that adds or moves
/// columns is still read right.
const COLUMNS: [&str; 5] = [
    "srv_name",
    "srv_op_state",
    "srv_admin_state",
    "srv_uweight",
    "srv_iweight",
];

/// Parses the reply to `show servers state B`.
pub fn parse_servers_state(reply: &str) -> Result<Vec<ObservedServer>, ReplyError> {
    let mut lines = reply.lines().map(str::trim).filter(|l| !l.is_empty());
    let malformed = |what: &str, line: &str| ReplyError::Malformed {
        what: what.to_string(),
        line: line.chars().take(200).collect(),
    };
    let version = lines.next().unwrap_or("");
    if version != "1" {
        // Not a state dump at all: an unknown backend, a refusal.
        return Err(match version.parse::<u32>() {
            Ok(_) => malformed("a format version other than 1", version),
            Err(_) => refusal(version),
        });
    }
    let header = lines.next().unwrap_or("");
    let Some(names) = header.strip_prefix('#') else {
        return Err(malformed("no header line after the version", header));
    };
    let names: Vec<&str> = names.split_whitespace().collect();
    let mut index = HashMap::new();
    for column in COLUMNS {
        match names.iter().position(|n| *n == column) {
            Some(i) => index.insert(column, i),
            None => return Err(malformed(&format!("no column {column}"), header)),
        };
    }
    let mut servers = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let field = |column: &str| index.get(column).and_then(|&i| fields.get(i)).copied();
        let number = |column: &str| field(column).and_then(|f| f.parse::<u16>().ok());
        let server = (|| {
            Some(ObservedServer {
                name: field("srv_name")?.to_string(),
                op_state: u8::try_from(number("srv_op_state")?).ok()?,
                admin_bits: number("srv_admin_state")?,
                weight: number("srv_uweight")?,
                initial_weight: number("srv_iweight")?,
            })
        })();
        match server {
            Some(server) => servers.push(server),
            None => return Err(malformed("a server line with missing or bad fields", line)),
        }
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HAProxy 2.6.12's answer for a backend with two servers, crm-1 drained at weight 5
    /// and crm-2 forced down and in maintenance (captured from the real thing).
    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 crm 1 crm-1 127.0.0.1 2 8 5 10 2 1 0 2 0 0 0 0 - 18091 - 0 0 - - 0\n3 crm 2 crm-2 127.0.0.1 0 1 1 1 1 1 0 0 0 0 0 0 - 18092 - 0 0 - - 0\n\n";

    #[test]
    fn a_state_dump_is_read_by_its_header() {
        let servers = parse_servers_state(STATE).expect("parsed");
        assert_eq!(
            servers,
            [
                ObservedServer {
                    name: "crm-1".into(),
                    op_state: 2,
                    admin_bits: 8,
                    weight: 5,
                    initial_weight: 10
                },
                ObservedServer {
                    name: "crm-2".into(),
                    op_state: 0,
                    admin_bits: 1,
                    weight: 1,
                    initial_weight: 1
                },
            ]
        );
        assert_eq!(
            (servers[0].admin(), servers[0].up()),
            (AdminState::Drain, true)
        );
        assert_eq!(
            (servers[1].admin(), servers[1].up()),
            (AdminState::Maint, false)
        );
        // Columns found by name: a version that moves them is still read right.
        let moved =
            "1\n# srv_iweight srv_uweight srv_admin_state srv_op_state srv_name\n10 5 0 2 crm-1\n";
        let servers = parse_servers_state(moved).expect("parsed");
        assert_eq!((servers[0].weight, servers[0].initial_weight), (5, 10));
        // A backend without servers.
        assert_eq!(
            parse_servers_state(
                "1\n# srv_name srv_op_state srv_admin_state srv_uweight srv_iweight\n"
            ),
            Ok(vec![])
        );
    }

    #[test]
    fn refusals_are_typed() {
        assert_eq!(check_set_reply("\n"), Ok(()));
        assert_eq!(
            check_set_reply("Permission denied\n\n"),
            Err(ReplyError::NotAdmin)
        );
        assert!(matches!(
            check_set_reply(
                "Unknown command: 'set', but maybe one of the following ones is a better match:\n  help\n"
            ),
            Err(ReplyError::UnknownCommand { .. })
        ));
        assert!(matches!(
            check_set_reply("No such server.\n\n"),
            Err(ReplyError::NoSuchServer { .. })
        ));
        assert!(matches!(
            check_set_reply("No such backend.\n\n"),
            Err(ReplyError::NoSuchBackend { .. })
        ));
        assert_eq!(
            check_set_reply("Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n"),
            Err(ReplyError::Refused {
                text: "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.".into()
            })
        );
        assert!(matches!(
            parse_servers_state("Can't find backend.\n\n"),
            Err(ReplyError::NoSuchBackend { .. })
        ));
        assert_eq!(
            parse_servers_state("Permission denied\n"),
            Err(ReplyError::NotAdmin)
        );
    }

    #[test]
    fn malformed_replies_are_errors_never_panics() {
        let bad = [
            "",
            "\n\n",
            "2\n# srv_name\n",
            "1\n",
            "1\nno header\n",
            "1\n# srv_name srv_op_state\ncrm-1 2\n",
            "1\n# srv_name srv_op_state srv_admin_state srv_uweight srv_iweight\ncrm-1 2 0\n",
            "1\n# srv_name srv_op_state srv_admin_state srv_uweight srv_iweight\ncrm-1 x 0 1 1\n",
            "1\n# srv_name srv_op_state srv_admin_state srv_uweight srv_iweight\ncrm-1 999 0 1 1\n",
            "1\n# srv_name srv_op_state srv_admin_state srv_uweight srv_iweight\ncrm-1 2 0 99999999 1\n",
            "\u{0}\u{ff}é\n# \u{2028}\n",
        ];
        for text in bad {
            assert!(parse_servers_state(text).is_err(), "{text:?} was accepted");
        }
        // Every prefix of a good reply, cut anywhere (also inside a UTF-8 character): an
        // answer or an error, never a panic.
        let text = format!("{STATE}é");
        for cut in 0..text.len() {
            if let Some(prefix) = text.get(..cut) {
                let _ = parse_servers_state(prefix);
                let _ = check_set_reply(prefix);
            }
        }
    }

    #[test]
    fn command_lines_are_haproxys() {
        let (backend, server) = ("crm".to_string(), "crm-1".to_string());
        let lines = [
            RuntimeCommand::SetState {
                backend: backend.clone(),
                server: server.clone(),
                state: AdminState::Drain,
            },
            RuntimeCommand::SetWeight {
                backend: backend.clone(),
                server: server.clone(),
                weight: 0,
            },
            RuntimeCommand::SetHealth {
                backend: backend.clone(),
                server,
                up: false,
            },
            RuntimeCommand::ShowServersState { backend },
        ]
        .map(|c| c.line());
        assert_eq!(
            lines,
            [
                "set server crm/crm-1 state drain",
                "set server crm/crm-1 weight 0",
                "set server crm/crm-1 health down",
                "show servers state crm",
            ]
        );
    }
}

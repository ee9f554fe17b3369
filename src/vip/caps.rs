//! Which of the capabilities the real data plane needs this process lacks, read from
//! `CapEff` in /proc/self/status. It must never try to raise or drop a capability.

use std::fmt;

/// A capability the data plane needs, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    NetAdmin,
    NetRaw,
}

impl Capability {
    const ALL: [Capability; 2] = [Capability::NetAdmin, Capability::NetRaw];

    /// Bit number in the capability sets (linux/capability.h).
    fn bit(self) -> u32 {
        match self {
            Capability::NetAdmin => 12,
            Capability::NetRaw => 13,
        }
    }

    pub fn why(self) -> &'static str {
        match self {
            Capability::NetAdmin => "needed to add and remove the VIP addresses",
            Capability::NetRaw => "needed to announce the VIP with gratuitous ARP",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::NetRaw => "CAP_NET_RAW",
        })
    }
}

/// The capabilities missing from the effective set of this process. An unreadable
/// status file counts as "all missing" (the daemon then says so and exits).
pub fn missing() -> Vec<Capability> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    missing_from(&status)
}

/// The capabilities missing from the `CapEff:` line of a /proc/PID/status text.
pub fn missing_from(status: &str) -> Vec<Capability> {
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    Capability::ALL
        .into_iter()
        .filter(|c| effective & (1 << c.bit()) == 0)
        .collect()
}

/// The message the daemon prints before exiting 2, naming each missing capability.
pub fn explain(missing: &[Capability]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|c| format!("{c} ({})", c.why()))
        .collect();
    format!(
        "missing {}; run as root or with AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW \
         (see conf/havip.service), or use --observe-only",
        list.join(" and ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff() {
        let root = "Name:\thavip\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert!(missing_from(root).is_empty());
        let admin_only = "CapEff:\t0000000000001000\n";
        assert_eq!(missing_from(admin_only), vec![Capability::NetRaw]);
        assert_eq!(missing_from("CapEff:\t0000000000000000\n").len(), 2);
        assert_eq!(missing_from("garbage").len(), 2);
    }

    #[test]
    fn explains_what_to_do() {
        let text = explain(&[Capability::NetRaw]);
        assert!(text.starts_with(
            "missing CAP_NET_RAW (needed to announce the VIP with gratuitous ARP); run as root"
        ));
        assert!(text.contains("--observe-only"));
    }
}

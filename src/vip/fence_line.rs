//! The fence's orders, one text line each, from the daemon down a pipe to `havip fence`
//! (`fence.rs`, `fence_process.rs`):
//!
//! ```text
//! arm GROUP DEADLINE_NS IFINDEX ADDRESS/LEN [ADDRESS/LEN ...]
//! disarm GROUP
//! ```
//!
//! `DEADLINE_NS` is the end of the group's hold lease on CLOCK_MONOTONIC, which both
//! processes read the same (one boot, one clock). Text, because an operator reading a
//! strace or a core should see what was asked; both ends are the same binary, so the
//! format has no version. A line that does not parse is refused whole.

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceOrder {
    /// Take `addresses` off `ifindex` at `deadline_ns`, unless armed again or disarmed.
    Arm {
        group: String,
        deadline_ns: u64,
        ifindex: u32,
        addresses: Vec<IpNet>,
    },
    /// The daemon released the group itself.
    Disarm { group: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fence order {line:?}: {why}")]
pub struct FenceLineError {
    pub line: String,
    pub why: &'static str,
}

impl FenceOrder {
    /// The order as one line, newline included.
    pub fn encode(&self) -> String {
        match self {
            FenceOrder::Arm {
                group,
                deadline_ns,
                ifindex,
                addresses,
            } => {
                let mut line = format!("arm {group} {deadline_ns} {ifindex}");
                for address in addresses {
                    line.push(' ');
                    line.push_str(&address.to_string());
                }
                line.push('\n');
                line
            }
            FenceOrder::Disarm { group } => format!("disarm {group}\n"),
        }
    }

    pub fn decode(line: &str) -> Result<FenceOrder, FenceLineError> {
        let fail = |why| FenceLineError {
            line: line.chars().take(200).collect(),
            why,
        };
        let mut words = line.split_ascii_whitespace();
        let verb = words.next().ok_or_else(|| fail("empty"))?;
        let group = words.next().ok_or_else(|| fail("no group"))?.to_string();
        match verb {
            "disarm" => match words.next() {
                None => Ok(FenceOrder::Disarm { group }),
                Some(_) => Err(fail("words after the group")),
            },
            "arm" => {
                let deadline_ns = (words.next())
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| fail("no deadline"))?;
                let ifindex = (words.next())
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| fail("no interface index"))?;
                let addresses = words
                    .map(|w| w.parse::<IpNet>().map_err(|_| fail("not an address/len")))
                    .collect::<Result<Vec<_>, _>>()?;
                if addresses.is_empty() {
                    return Err(fail("no address"));
                }
                Ok(FenceOrder::Arm {
                    group,
                    deadline_ns,
                    ifindex,
                    addresses,
                })
            }
            _ => Err(fail("unknown verb")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_round_trip() {
        let arm = FenceOrder::Arm {
            group: "crm".into(),
            deadline_ns: 123_456_789_012,
            ifindex: 7,
            addresses: vec![
                "198.18.0.50/24".parse().expect("v4"),
                "2001:db8::50/64".parse().expect("v6"),
            ],
        };
        assert_eq!(
            arm.encode(),
            "arm crm 123456789012 7 198.18.0.50/24 2001:db8::50/64\n"
        );
        assert_eq!(FenceOrder::decode(&arm.encode()), Ok(arm));
        let disarm = FenceOrder::Disarm {
            group: "crm".into(),
        };
        assert_eq!(FenceOrder::decode(&disarm.encode()), Ok(disarm));
    }

    #[test]
    fn a_bad_line_is_refused_whole_and_named() {
        for (line, why) in [
            ("", "empty"),
            ("arm", "no group"),
            ("arm crm", "no deadline"),
            ("arm crm -1 7 198.18.0.50/24", "no deadline"),
            ("arm crm 5 x 198.18.0.50/24", "no interface index"),
            ("arm crm 5 7", "no address"),
            ("arm crm 5 7 198.18.0.50/24 nonsense", "not an address/len"),
            ("disarm crm extra", "words after the group"),
            ("hold crm", "unknown verb"),
        ] {
            let e = FenceOrder::decode(line).expect_err(line);
            assert_eq!(e.why, why, "{line}");
            assert!(e.to_string().contains(&format!("{line:?}")), "{e}");
        }
    }
}

//! What the cluster decided for each server of a pool: the operator's admin state and
//! weight (committed through Raft, `consensus::state::ServerRecord`), else the config's
//! weight and `ready`; up or down from the server's health checks. Pure: the records and
//! the check report in, the `Desired` per server out. It never reads HAProxy: what HAProxy
//! has is compared with this by `plan`, never fed back into it.

use std::collections::BTreeMap;

use super::codec::AdminState;
use super::plan::Desired;
use crate::config::Backend;
use crate::consensus::state::{Command, ServerHealth, ServerRecord, server_key};
use crate::health::{CheckReport, CheckState};

/// The operator's records of every server, from the `GroupState::servers` of this node's
/// groups given in name order. `havip backend` commits each record in every group (as `maintenance` does),
/// so they agree; where a command reached only some groups (one failed, or a group was
/// added since), the first group in name order that has a record wins, the same choice
/// on every node since their replicas agree.
pub fn records<'a>(
    groups: impl IntoIterator<Item = &'a BTreeMap<String, ServerRecord>>,
) -> BTreeMap<String, ServerRecord> {
    let mut out = BTreeMap::new();
    for servers in groups {
        for (key, record) in servers {
            out.entry(key.clone()).or_insert(*record);
        }
    }
    out
}

/// The desired state of every server of `pool`. `records` are the operator's, keyed by
/// `server_key`; `health` the up/down records of the pool's group; `checks` this node's
/// health checks, which decide only while the group has no record for a server.
pub fn desired(
    pool: &Backend,
    records: &BTreeMap<String, ServerRecord>,
    health: &BTreeMap<String, ServerHealth>,
    checks: &[CheckReport],
) -> BTreeMap<String, Desired> {
    pool.servers
        .iter()
        .map(|server| {
            let key = server_key(&pool.name, &server.name);
            let record = records.get(&key);
            let up = match health.get(&key) {
                Some(h) => Some(h.up),
                None => up(&server.checks, checks),
            };
            let desired = Desired {
                admin: record.and_then(|r| r.admin).unwrap_or(AdminState::Ready),
                weight: record.and_then(|r| r.weight).unwrap_or(server.weight),
                up,
            };
            (server.name.clone(), desired)
        })
        .collect()
}

/// What the holder of `pool`'s group (this node, `me`) proposes: each server whose checks
/// have a verdict that differs from the group's record. Nothing from a node that does not
/// hold: only the holder's view decides (README, "Behind the VIP: HAProxy", says why).
pub fn health_reports(
    pool: &Backend,
    me: &str,
    holds: bool,
    health: &BTreeMap<String, ServerHealth>,
    checks: &[CheckReport],
    at_unix_ms: u64,
) -> Vec<Command> {
    if !holds {
        return Vec::new();
    }
    pool.servers
        .iter()
        .filter_map(|server| {
            let seen = up(&server.checks, checks)?;
            let recorded = health.get(&server_key(&pool.name, &server.name));
            (recorded.map(|h| h.up) != Some(seen)).then(|| Command::SetServerHealth {
                pool: pool.name.clone(),
                server: server.name.clone(),
                up: seen,
                node: me.to_string(),
                at_unix_ms,
            })
        })
        .collect()
}

/// Up while every named check is up after rise/fall; None until each has a first result
/// (a check missing from the report, which a reload may cause, counts as no result).
fn up(names: &[String], checks: &[CheckReport]) -> Option<bool> {
    let mut all_up = true;
    for name in names {
        let report = checks.iter().find(|c| &c.name == name)?;
        if report.probes == 0 {
            return None;
        }
        all_up &= report.state == CheckState::Up;
    }
    Some(all_up)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{BackendServer, HaproxyTarget};
    use crate::consensus::state::GroupState;

    fn pool() -> Backend {
        let server = |name: &str, checks: &[&str]| BackendServer {
            name: name.into(),
            address: "198.18.0.21:8080".parse().unwrap(),
            weight: 10,
            checks: checks.iter().map(ToString::to_string).collect(),
        };
        Backend {
            name: "crm".into(),
            group: "crm".into(),
            haproxy: HaproxyTarget {
                socket: PathBuf::from("/run/haproxy/admin.sock"),
                backend: "crm".into(),
            },
            servers: vec![server("crm-1", &["a"]), server("crm-2", &["a", "b"])],
        }
    }

    fn check(name: &str, state: CheckState, probes: u64) -> CheckReport {
        CheckReport {
            name: name.into(),
            state,
            last_ok: state == CheckState::Up,
            last_latency_ms: 0.1,
            last_detail: String::new(),
            last_failure: None,
            since_unix_ms: 0,
            probes,
        }
    }

    #[test]
    fn config_defaults_then_records_override() {
        let checks = [
            check("a", CheckState::Up, 3),
            check("b", CheckState::Down, 3),
        ];
        let got = desired(&pool(), &BTreeMap::new(), &BTreeMap::new(), &checks);
        assert_eq!(
            got["crm-1"],
            Desired {
                admin: AdminState::Ready,
                weight: 10,
                up: Some(true)
            }
        );
        // crm-2 needs both checks.
        assert_eq!(got["crm-2"].up, Some(false));

        let mut records = BTreeMap::new();
        records.insert(
            server_key("crm", "crm-1"),
            ServerRecord {
                admin: Some(AdminState::Drain),
                weight: None,
                since_unix_ms: 1,
            },
        );
        records.insert(
            server_key("other", "crm-2"),
            ServerRecord {
                admin: Some(AdminState::Maint),
                weight: Some(1),
                since_unix_ms: 1,
            },
        );
        let got = desired(&pool(), &records, &BTreeMap::new(), &checks);
        assert_eq!(
            (got["crm-1"].admin, got["crm-1"].weight),
            (AdminState::Drain, 10)
        );
        // Another pool's record of a server with the same name does not apply here.
        assert_eq!(
            (got["crm-2"].admin, got["crm-2"].weight),
            (AdminState::Ready, 10)
        );
    }

    fn none_health() -> BTreeMap<String, ServerHealth> {
        BTreeMap::new()
    }

    fn health(rows: &[(&str, bool)]) -> BTreeMap<String, ServerHealth> {
        rows.iter()
            .map(|(server, up)| {
                let h = ServerHealth {
                    up: *up,
                    node: "gw-a".into(),
                    since_unix_ms: 1,
                };
                (server_key("crm", server), h)
            })
            .collect()
    }

    #[test]
    fn the_holders_record_decides_up_and_down_for_every_gateway() {
        // This node's own check says crm-1 is down; the holder's record says up: up.
        let checks = [
            check("a", CheckState::Down, 3),
            check("b", CheckState::Up, 3),
        ];
        let got = desired(
            &pool(),
            &BTreeMap::new(),
            &health(&[("crm-1", true)]),
            &checks,
        );
        assert_eq!(got["crm-1"].up, Some(true));
        // No record for crm-2 yet: this node's checks decide meanwhile.
        assert_eq!(got["crm-2"].up, Some(false));
    }

    #[test]
    fn only_the_holder_proposes_and_only_what_differs() {
        let checks = [
            check("a", CheckState::Up, 3),
            check("b", CheckState::Down, 3),
        ];
        let recorded = health(&[("crm-1", true)]);
        assert!(health_reports(&pool(), "gw-b", false, &recorded, &checks, 5).is_empty());
        let got = health_reports(&pool(), "gw-a", true, &recorded, &checks, 5);
        assert_eq!(
            got,
            [Command::SetServerHealth {
                pool: "crm".into(),
                server: "crm-2".into(),
                up: false,
                node: "gw-a".into(),
                at_unix_ms: 5,
            }]
        );
        // A check without a first result proposes nothing.
        let pending = [check("a", CheckState::Down, 0)];
        assert!(health_reports(&pool(), "gw-a", true, &none_health(), &pending, 5).is_empty());
    }

    #[test]
    fn the_first_group_with_a_record_wins() {
        let record = |admin| ServerRecord {
            admin: Some(admin),
            weight: None,
            since_unix_ms: 1,
        };
        let mut a = GroupState::default();
        a.servers
            .insert(server_key("crm", "crm-1"), record(AdminState::Drain));
        let mut b = GroupState::default();
        b.servers
            .insert(server_key("crm", "crm-1"), record(AdminState::Maint));
        b.servers
            .insert(server_key("crm", "crm-2"), record(AdminState::Maint));
        let got = records([&a.servers, &b.servers]);
        assert_eq!(got["crm/crm-1"].admin, Some(AdminState::Drain));
        assert_eq!(got["crm/crm-2"].admin, Some(AdminState::Maint));
    }

    #[test]
    fn no_verdict_until_every_check_has_a_result() {
        let none = BTreeMap::new();
        let got = desired(
            &pool(),
            &none,
            &none_health(),
            &[check("a", CheckState::Down, 0)],
        );
        assert_eq!((got["crm-1"].up, got["crm-2"].up), (None, None));
        let got = desired(
            &pool(),
            &none,
            &none_health(),
            &[check("a", CheckState::Up, 1)],
        );
        assert_eq!((got["crm-1"].up, got["crm-2"].up), (Some(true), None));
    }
}

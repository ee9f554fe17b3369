//! What to tell one HAProxy backend, given what the cluster decided for each server and
//! what HAProxy reports: the commands that make them agree, and what differs (drift) in
//! the operator's words. Pure: values in, a plan out; the applier runs it and reads back.
//! It must never send a command for a server havip does not manage: HAProxy's other
//! servers are the operator's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::codec::{AdminState, ObservedServer, RuntimeCommand};

/// What the cluster decided for one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub admin: AdminState,
    pub weight: u16,
    /// From havip's checks; None while they have no verdict yet (HAProxy's own health is
    /// then left as it is, so a starting havip never marks a server down on no evidence).
    pub up: Option<bool>,
}

/// The commands for one backend, in order, and what differed before them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub commands: Vec<RuntimeCommand>,
    /// One line per difference ("crm-1: state ready, wanted drain"), servers in order;
    /// empty when HAProxy already has what was decided.
    pub differences: Vec<String>,
}

/// The plan for `backend` (HAProxy's name) to reach `desired` (by server name) from
/// `observed` (its `show servers state`). A server HAProxy lacks is a difference no
/// command can fix (its config must list it).
pub fn plan(
    backend: &str,
    desired: &BTreeMap<String, Desired>,
    observed: &[ObservedServer],
) -> Plan {
    let mut out = Plan::default();
    for (name, want) in desired {
        let Some(have) = observed.iter().find(|s| &s.name == name) else {
            out.differences
                .push(format!("{name}: not in HAProxy backend {backend}"));
            continue;
        };
        let server = || name.clone();
        let backend = || backend.to_string();
        let admin = have.admin();
        if admin != want.admin {
            out.differences
                .push(format!("{name}: state {admin}, wanted {}", want.admin));
            out.commands.push(RuntimeCommand::SetState {
                backend: backend(),
                server: server(),
                state: want.admin,
            });
        }
        // A server in maintenance reads as down whatever its health, and leaving
        // maintenance brings back a health of HAProxy's choosing: compare health only
        // where it means something, and state it again on the way out of maintenance.
        if let Some(up) = want.up
            && want.admin != AdminState::Maint
        {
            let leaving_maint = admin == AdminState::Maint;
            if have.up() != up || leaving_maint {
                if have.up() != up && !leaving_maint {
                    out.differences.push(format!(
                        "{name}: {}, wanted {}",
                        updown(have.up()),
                        updown(up)
                    ));
                }
                out.commands.push(RuntimeCommand::SetHealth {
                    backend: backend(),
                    server: server(),
                    up,
                });
            }
        }
        if have.weight != want.weight {
            out.differences.push(format!(
                "{name}: weight {}, wanted {}",
                have.weight, want.weight
            ));
            out.commands.push(RuntimeCommand::SetWeight {
                backend: backend(),
                server: server(),
                weight: want.weight,
            });
        }
    }
    out
}

fn updown(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(name: &str, op_state: u8, admin_bits: u16, weight: u16) -> ObservedServer {
        ObservedServer {
            name: name.into(),
            op_state,
            admin_bits,
            weight,
            initial_weight: 1,
        }
    }

    fn desired(rows: &[(&str, AdminState, u16, Option<bool>)]) -> BTreeMap<String, Desired> {
        rows.iter()
            .map(|(n, admin, weight, up)| {
                (
                    n.to_string(),
                    Desired {
                        admin: *admin,
                        weight: *weight,
                        up: *up,
                    },
                )
            })
            .collect()
    }

    fn lines(plan: &Plan) -> Vec<String> {
        plan.commands.iter().map(RuntimeCommand::line).collect()
    }

    use AdminState::{Drain, Maint, Ready};

    /// One row per situation: what HAProxy has (op state, admin bits, weight), what was
    /// decided, the commands expected.
    #[test]
    fn commands_for_every_difference_and_none_for_agreement() {
        type Have = (u8, u16, u16);
        type Want = (AdminState, u16, Option<bool>);
        let rows: &[(Have, Want, &[&str])] = &[
            ((2, 0, 10), (Ready, 10, Some(true)), &[]),
            ((2, 0, 10), (Ready, 10, None), &[]),
            ((0, 0, 10), (Ready, 10, None), &[]),
            (
                (2, 0, 10),
                (Drain, 10, Some(true)),
                &["set server crm/crm-1 state drain"],
            ),
            ((2, 8, 10), (Drain, 10, Some(true)), &[]),
            (
                (2, 8, 10),
                (Ready, 10, Some(true)),
                &["set server crm/crm-1 state ready"],
            ),
            (
                (2, 0, 10),
                (Maint, 10, Some(true)),
                &["set server crm/crm-1 state maint"],
            ),
            // In maintenance HAProxy reports the server down: that is no difference.
            ((0, 1, 10), (Maint, 10, Some(true)), &[]),
            // Leaving maintenance states the health again, after the state.
            (
                (0, 1, 10),
                (Ready, 10, Some(true)),
                &[
                    "set server crm/crm-1 state ready",
                    "set server crm/crm-1 health up",
                ],
            ),
            (
                (2, 0, 10),
                (Ready, 10, Some(false)),
                &["set server crm/crm-1 health down"],
            ),
            (
                (0, 0, 10),
                (Ready, 10, Some(true)),
                &["set server crm/crm-1 health up"],
            ),
            // Stopping counts as down.
            (
                (3, 0, 10),
                (Ready, 10, Some(true)),
                &["set server crm/crm-1 health up"],
            ),
            (
                (2, 0, 10),
                (Ready, 3, Some(true)),
                &["set server crm/crm-1 weight 3"],
            ),
            (
                (2, 0, 1),
                (Drain, 0, Some(false)),
                &[
                    "set server crm/crm-1 state drain",
                    "set server crm/crm-1 health down",
                    "set server crm/crm-1 weight 0",
                ],
            ),
            // Config maintenance (`disabled` in haproxy.cfg) reads as maint.
            ((0, 4, 10), (Maint, 10, None), &[]),
        ];
        for ((op, bits, weight), (admin, w, up), want) in rows {
            let got = plan(
                "crm",
                &desired(&[("crm-1", *admin, *w, *up)]),
                &[observed("crm-1", *op, *bits, *weight)],
            );
            assert_eq!(
                lines(&got),
                *want,
                "have {op}/{bits}/{weight}, want {admin}/{w}/{up:?}"
            );
            assert_eq!(got.differences.is_empty(), want.is_empty(), "{got:?}");
        }
    }

    #[test]
    fn differences_read_in_the_operators_words() {
        let got = plan(
            "crm",
            &desired(&[
                ("crm-1", Drain, 5, Some(false)),
                ("crm-2", Ready, 1, Some(true)),
                ("crm-3", Ready, 1, None),
            ]),
            &[
                observed("crm-1", 2, 0, 10),
                observed("crm-2", 2, 0, 1),
                observed("other", 0, 1, 1),
            ],
        );
        assert_eq!(
            got.differences,
            [
                "crm-1: state ready, wanted drain",
                "crm-1: up, wanted down",
                "crm-1: weight 10, wanted 5",
                "crm-3: not in HAProxy backend crm",
            ]
        );
        // Nothing is sent for `other`, which havip does not manage, nor for crm-3, which
        // HAProxy lacks.
        assert!(lines(&got).iter().all(|l| l.contains("crm-1")), "{got:?}");
    }
}

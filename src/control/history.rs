//! `havip history [--group G]`: the committed history of each group (master changes,
//! health transitions, pins, maintenance, backends, config reloads), as this node's replica
//! has it. Read-only.

use super::context::Groups;
use super::protocol::{GroupHistory, Response};

/// The history of `group`, or of every group for none.
pub fn history(groups: &Groups, group: Option<String>) -> Response {
    let found = groups
        .iter()
        .filter(|(name, _)| group.as_ref().is_none_or(|g| g == *name))
        .map(|(name, h)| GroupHistory {
            group: name.clone(),
            entries: h.state.borrow().history.iter().cloned().collect(),
        })
        .collect::<Vec<_>>();
    if found.is_empty() {
        return Response::Error {
            message: format!("no group named {:?}", group.unwrap_or_default()),
        };
    }
    Response::History { groups: found }
}

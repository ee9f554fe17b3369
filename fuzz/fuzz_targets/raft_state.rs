//! The replicated state (`consensus::state`): commands as a committed log carries them
//! (selector even: a JSON list, applied in order to an empty `GroupState`) and a group
//! state as a snapshot carries it (odd: decoded, then every command of the seeds applied).
//! Never a panic, and history stays within `HISTORY_LIMIT` whatever a peer committed.
#![no_main]

use havip::consensus::state::{Command, GroupState, HISTORY_LIMIT};
use havip_fuzz::Cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let selector = input.u8();
    let json = input.rest();
    if selector % 2 == 0 {
        let Ok(commands) = serde_json::from_slice::<Vec<Command>>(json) else {
            return;
        };
        let mut state = GroupState::default();
        for c in &commands {
            let _ = c.to_string();
            state.apply(c);
            assert!(state.history.len() <= HISTORY_LIMIT);
        }
    } else {
        let Ok(mut state) = serde_json::from_slice::<GroupState>(json) else {
            return;
        };
        let before = state.history.len();
        state.apply(&Command::Pin {
            node: Some("gw-b".into()),
            at_unix_ms: 0,
        });
        // A snapshot may carry any history; applying never grows it past the larger of
        // what it had and the limit.
        assert!(state.history.len() <= before.max(HISTORY_LIMIT));
    }
});

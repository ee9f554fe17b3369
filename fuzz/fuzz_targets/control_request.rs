//! The control socket's request line (`control::socket::read_request`), what any local
//! user who may connect can send, and the daemon's response line as the CLI reads it.
//! Never a panic; a refused line gets an error response that encodes.
#![no_main]

use havip::control::protocol::Response;
use havip::control::socket::read_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server reads the line into a String: bytes that are not UTF-8 never get here.
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match read_request(line) {
        Ok(request) => {
            let _ = (request.changes_the_cluster(), request.command_name());
        }
        Err(message) => assert!(serde_json::to_string(&Response::Error { message }).is_ok()),
    }
    let _ = serde_json::from_str::<Response>(line);
});

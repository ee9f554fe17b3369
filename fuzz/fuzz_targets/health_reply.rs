//! What a health probe makes of the reply it got (`health::reply`): an HTTP body gathered
//! chunk by chunk up to its 64 KiB limit and searched for `expect_body`, a TCP reply
//! compared with `expect`, a check script's exit status and output folded into one
//! detail line. Never a panic, the body never beyond its limit, details bounded.
#![no_main]

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use havip::health::reply::{
    BODY_LIMIT, BodyPrefix, exec_verdict, judge_body, judge_reply, show_output,
};
use havip_fuzz::Cursor;
use libfuzzer_sys::fuzz_target;

fn http(input: &mut Cursor<'_>) {
    let code = input.u16();
    let n = usize::from(input.u8());
    let needle = String::from_utf8_lossy(input.take(n)).into_owned();
    let mut body = BodyPrefix::default();
    let mut total = 0usize;
    while !input.is_empty() {
        let repeat = usize::from(input.u8()).max(1);
        let n = usize::from(input.u16());
        let chunk = input.take(n);
        let mut full = false;
        for _ in 0..repeat {
            total += chunk.len();
            if body.push(chunk) {
                full = true;
                break;
            }
        }
        assert!(body.bytes().len() <= BODY_LIMIT);
        if full {
            assert!(total >= BODY_LIMIT);
            break;
        }
    }
    let _ = judge_body(code, &body, Some(&needle)).map_err(|e| e.to_string());
    assert!(judge_body(code, &body, None).is_ok());
}

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    match input.u8() % 3 {
        0 => http(&mut input),
        1 => {
            let n = usize::from(input.u8());
            let expect = String::from_utf8_lossy(input.take(n)).into_owned();
            // The checker reads at most as many bytes as `expect` has.
            let reply = input.take(expect.len());
            let verdict = judge_reply(reply, &expect).map_err(|e| e.to_string());
            assert_eq!(verdict.is_ok(), reply == expect.as_bytes());
        }
        _ => {
            let raw = i32::from_be_bytes([input.u8(), input.u8(), input.u8(), input.u8()]);
            let n = usize::from(input.u16());
            let stdout = input.take(n);
            let stderr = input.rest();
            let output = show_output(stdout, stderr);
            // 200 bytes and the "..." of a cut.
            assert!(output.len() <= 203, "{} bytes of detail", output.len());
            let _ = exec_verdict(ExitStatus::from_raw(raw), Duration::ZERO, &output);
        }
    }
});

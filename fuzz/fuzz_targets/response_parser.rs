//! The harness's HTTP/1.1 response parser reads whatever a server under test sends,
//! including garbage and partial responses: it must never panic, and what it calls a
//! complete response must fit in the bytes it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shutdown_harness::response::{parse, BodyFraming, Progress};

fuzz_target!(|data: &[u8]| {
    for eof in [false, true] {
        if let Progress::Complete(head) = parse(data, eof) {
            assert!(head.head_len <= data.len());
            assert!((100..1000).contains(&head.status));
            if let BodyFraming::Length(n) = head.framing {
                assert!(head.head_len + n <= data.len() || head.status < 200 || head.status == 204 || head.status == 304);
            }
        }
        // Every prefix is a valid state too (the client calls it as bytes arrive).
        let half = data.len() / 2;
        let _ = parse(&data[..half], eof);
    }
});

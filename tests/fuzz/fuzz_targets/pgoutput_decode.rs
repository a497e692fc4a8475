//! Fuzzes `driftless::pgoutput::decode` under every protocol version and stream state: it must
//! never panic, and whatever it accepts must re-encode to exactly the input bytes.
#![no_main]

use bytes::Bytes;
use driftless::pgoutput::{DecodeContext, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    for proto_version in 1..=4 {
        for in_stream in [false, true] {
            let ctx = DecodeContext {
                proto_version,
                in_stream,
            };
            if let Ok(msg) = decode(&buf, &ctx) {
                assert_eq!(
                    encode(&msg, &ctx),
                    data,
                    "accepted bytes must re-encode identically"
                );
            }
        }
    }
});

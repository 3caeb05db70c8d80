//! The SIP receive path: `parse_message` (normaliser, rsip, mandatory headers) and
//! the whole user agent core fed the same bytes as a datagram and as a TCP stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = callbridge::sip::parse_message(data);
    callbridge::sip::fuzz_user_agent(data);
});

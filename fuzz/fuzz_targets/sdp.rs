//! The SIP peer's SDP answer parser (`media::sdp::parse_answer`).
#![no_main]

use callbridge::media::codec::AudioCodec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = callbridge::media::sdp::parse_answer(text, &[AudioCodec::Pcmu, AudioCodec::Pcma]);
        let _ = callbridge::media::sdp::parse_answer(text, &[AudioCodec::Pcma]);
    }
});

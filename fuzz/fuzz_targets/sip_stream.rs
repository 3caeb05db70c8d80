//! The TCP/TLS stream framer (`sip::StreamFramer`): the same bytes framed whole and
//! in reads of varying sizes must give the same messages, within the size limit
//! (first input byte: the read-size seed).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callbridge::sip::fuzz_stream(data);
});

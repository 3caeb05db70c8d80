//! Per-packet cost of the relay path without sockets: parse a datagram from the SIP
//! side, relay (payload-type map, optional µ/A-law conversion, header rewrite), and
//! marshal toward the SIP side. A measurement, not a pass/fail check, so it is ignored
//! by default:
//!
//! ```text
//! cargo test --release --test media_relay_cost -- --ignored --nocapture
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callbridge::media::codec::{AudioCodec, PayloadFormat};
use callbridge::media::relay::{Relay, Towards};
use callbridge::media::rewrite::RtpRewriter;
use rtc::rtp;
use rtc::shared::marshal::{Marshal, Unmarshal};

const PCMU: PayloadFormat = PayloadFormat {
    codec: AudioCodec::Pcmu,
    payload_type: 0,
    dtmf_payload_type: Some(101),
};
const PCMA: PayloadFormat = PayloadFormat {
    codec: AudioCodec::Pcma,
    payload_type: 8,
    dtmf_payload_type: Some(101),
};
const N: u32 = 200_000;

fn datagram(seq: u16) -> Vec<u8> {
    let p = rtp::Packet {
        header: rtp::Header {
            version: 2,
            payload_type: 0,
            sequence_number: seq,
            timestamp: u32::from(seq) * 160,
            ssrc: 0x1234_5678,
            ..Default::default()
        },
        payload: Bytes::from(vec![0x55u8; 160]),
    };
    p.marshal().unwrap().to_vec()
}

/// Nanoseconds per packet for unmarshal + relay + marshal through `relay`.
fn measure(mut relay: Relay) -> f64 {
    let input: Vec<Vec<u8>> = (0..1024u16).map(datagram).collect();
    let mut out = vec![0u8; 1500];
    let start = Instant::now();
    let t0 = Instant::now();
    for i in 0..N {
        let raw = &input[(i % 1024) as usize];
        let packet = rtp::Packet::unmarshal(&mut &raw[..]).unwrap();
        let now = t0 + Duration::from_millis(u64::from(i) * 20);
        let relayed = relay.relay(now, packet).unwrap();
        let n = relayed.marshal_to(&mut out).unwrap();
        black_box(&out[..n]);
    }
    start.elapsed().as_nanos() as f64 / f64::from(N)
}

fn relay(output: PayloadFormat) -> Relay {
    Relay::new(
        Towards::Sip,
        PCMU,
        output,
        RtpRewriter::new(1, 1, 1, 8000, 160),
    )
    .unwrap()
}

#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn relay_cost_per_packet() {
    let _ = measure(relay(PCMU)); // warm-up
    let pass = measure(relay(PCMU));
    let conv = measure(relay(PCMA));
    let mut rw = RtpRewriter::new(1, 1, 1, 8000, 160);
    let t0 = Instant::now();
    let start = Instant::now();
    for i in 0..N {
        black_box(rw.rewrite(
            t0 + Duration::from_millis(u64::from(i) * 20),
            7,
            i as u16,
            i * 160,
        ));
    }
    let rewrite = start.elapsed().as_nanos() as f64 / f64::from(N);
    eprintln!(
        "per 20 ms G.711 packet (160 B): rewrite only {rewrite:.0} ns; parse+relay+marshal passthrough {pass:.0} ns; with µ->A conversion {conv:.0} ns"
    );
}

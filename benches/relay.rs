//! Per-packet cost of the media relay path, without sockets or SRTP: parse a datagram
//! from the SIP side, relay it (payload-type map, optional µ/A-law conversion, header
//! rewrite) and marshal it again.
//!
//! Run: `cargo bench --bench relay`. Results are in `docs/benchmarks.md`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callbridge::media::codec::{AudioCodec, PayloadFormat};
use callbridge::media::relay::{Relay, Towards};
use callbridge::media::rewrite::RtpRewriter;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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
    p.marshal().expect("marshal").to_vec()
}

fn relay_path(c: &mut Criterion, name: &str, output: PayloadFormat) {
    let input: Vec<Vec<u8>> = (0..1024u16).map(datagram).collect();
    let mut relay = Relay::new(
        Towards::Sip,
        PCMU,
        output,
        RtpRewriter::new(1, 1, 1, 8000, 160),
    )
    .expect("relay");
    let mut out = vec![0u8; 1500];
    let t0 = Instant::now();
    let mut i: u64 = 0;
    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            let raw = &input[(i % 1024) as usize];
            let packet = rtp::Packet::unmarshal(&mut &raw[..]).expect("parse");
            let now = t0 + Duration::from_millis(i * 20);
            i += 1;
            let relayed = relay.relay(now, packet).expect("relay");
            let n = relayed.marshal_to(&mut out).expect("marshal");
            black_box(&out[..n]);
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    relay_path(c, "pcmu_passthrough", PCMU);
    relay_path(c, "pcmu_to_pcma", PCMA);
    let mut rewriter = RtpRewriter::new(1, 1, 1, 8000, 160);
    let t0 = Instant::now();
    let mut seq: u16 = 0;
    c.bench_function("rewrite_header", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let now = t0 + Duration::from_millis(u64::from(seq) * 20);
            black_box(rewriter.rewrite(now, 0x1234, seq, u32::from(seq) * 160));
        })
    });
}

criterion_group!(relay_benches, benches);
criterion_main!(relay_benches);

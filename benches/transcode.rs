//! Per-frame cost of the transcoding path and of its parts, without sockets or SRTP:
//! the whole Opus → PCMU and PCMU → Opus directions (jitter buffer, decode,
//! repacketise, encode, header rewrite), the raw Opus calls at several complexities,
//! the jitter buffer alone, and the relay pipeline for comparison.
//!
//! Run: `cargo bench --bench transcode`. Results are in `docs/benchmarks.md`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callbridge::media::audio::{Decoder, Encoder, OpusSettings, PayloadPool};
use callbridge::media::codec::{AudioCodec, PayloadFormat};
use callbridge::media::g711;
use callbridge::media::jitter::{Incoming, JitterBuffer, JitterConfig};
use callbridge::media::pipeline::{LegFormat, Pipeline};
use callbridge::media::relay::Towards;
use callbridge::media::rewrite::RtpRewriter;
use callbridge::media::transcode::{TranscodeConfig, Transcoder};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rtc::rtp;

const OPUS: PayloadFormat = PayloadFormat {
    codec: AudioCodec::Opus,
    payload_type: 111,
    dtmf_payload_type: Some(126),
};
const PCMU: PayloadFormat = PayloadFormat {
    codec: AudioCodec::Pcmu,
    payload_type: 0,
    dtmf_payload_type: Some(101),
};
/// Packets in the input rings (one second of audio).
const RING: usize = 50;

/// A speech-like test signal: two tones plus a little noise, at `rate`.
fn signal(rate: u32, n: usize, offset: usize) -> Vec<i16> {
    let mut seed = (offset as u32).wrapping_mul(2_654_435_761);
    (0..n)
        .map(|i| {
            let t = (offset + i) as f64 / f64::from(rate);
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = f64::from(seed % 600) - 300.0;
            (4000.0 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()
                + 2000.0 * (2.0 * std::f64::consts::PI * 1250.0 * t).sin()
                + noise) as i16
        })
        .collect()
}

/// One second of browser-like Opus packets (48 kHz mono encoder, 20 ms, FEC on).
fn opus_packets() -> Vec<Bytes> {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).expect("encoder");
    enc.set_inband_fec(true).expect("fec");
    enc.set_packet_loss_perc(10).expect("loss");
    (0..RING)
        .map(|k| {
            Bytes::from(
                enc.encode_vec(&signal(48_000, 960, k * 960), 1500)
                    .expect("encode"),
            )
        })
        .collect()
}

/// One second of 20 ms PCMU packets.
fn pcmu_packets() -> Vec<Bytes> {
    (0..RING)
        .map(|k| {
            signal(8000, 160, k * 160)
                .into_iter()
                .map(g711::linear_to_ulaw)
                .collect::<Vec<u8>>()
                .into()
        })
        .collect()
}

fn packet(pt: u8, seq: u16, ts: u32, payload: Bytes) -> rtp::Packet {
    rtp::Packet {
        header: rtp::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc: 0x1234_5678,
            ..Default::default()
        },
        payload,
    }
}

/// One transcoded direction, fed one packet per iteration 20 ms apart (so each
/// iteration releases, decodes and encodes exactly one frame).
fn direction(
    c: &mut Criterion,
    name: &str,
    input: PayloadFormat,
    output: PayloadFormat,
    payloads: Vec<Bytes>,
    opus: OpusSettings,
) {
    let ticks = input.codec.clock_rate() / 50;
    let mut t = Transcoder::new(
        input,
        output,
        20,
        RtpRewriter::new(
            1,
            1,
            1,
            output.codec.clock_rate(),
            output.codec.clock_rate() / 50,
        ),
        &TranscodeConfig {
            opus,
            ..Default::default()
        },
    )
    .expect("transcoder");
    let t0 = Instant::now();
    let mut i: u32 = 0;
    let mut group = c.benchmark_group("transcode");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            let p = packet(
                input.payload_type,
                i as u16,
                i.wrapping_mul(ticks),
                payloads[i as usize % RING].clone(),
            );
            let now = t0 + Duration::from_millis(u64::from(i) * 20);
            i += 1;
            let _ = t.handle_packet(now, p);
            while let Some(out) = t.poll_output() {
                black_box(out);
            }
        })
    });
    group.finish();
}

fn transcode(c: &mut Criterion) {
    let opus = opus_packets();
    let pcmu = pcmu_packets();
    let default = OpusSettings::default();
    direction(c, "opus_to_pcmu", OPUS, PCMU, opus, default);
    for complexity in [0u8, 3, 5, 10] {
        let settings = OpusSettings {
            complexity,
            ..default
        };
        let name = format!("pcmu_to_opus_c{complexity}");
        direction(c, &name, PCMU, OPUS, pcmu.clone(), settings);
    }
}

fn codecs(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    let opus = opus_packets();
    let mut dec = Decoder::new(AudioCodec::Opus).expect("decoder");
    let mut pcm = vec![0i16; 960];
    let mut k = 0usize;
    group.bench_function("opus_decode_20ms_to_8k", |b| {
        b.iter(|| {
            k += 1;
            black_box(dec.decode(&opus[k % RING], &mut pcm));
        })
    });
    let frames: Vec<Vec<i16>> = (0..RING).map(|k| signal(8000, 160, k * 160)).collect();
    let mut pool = PayloadPool::default();
    for complexity in [0u8, 3, 5, 10] {
        let mut enc = Encoder::new(
            AudioCodec::Opus,
            &OpusSettings {
                complexity,
                ..Default::default()
            },
        )
        .expect("encoder");
        group.bench_function(format!("opus_encode_20ms_from_8k_c{complexity}"), |b| {
            b.iter(|| {
                k += 1;
                black_box(enc.encode(&frames[k % RING], &mut pool));
            })
        });
    }
    let mut ulaw = Encoder::new(AudioCodec::Pcmu, &OpusSettings::default()).expect("encoder");
    group.bench_function("pcmu_encode_20ms", |b| {
        b.iter(|| {
            k += 1;
            black_box(ulaw.encode(&frames[k % RING], &mut pool));
        })
    });
    group.finish();
}

fn jitter(c: &mut Criterion) {
    let mut jb = JitterBuffer::new(JitterConfig::default(), 8000);
    let payload = Bytes::from_static(&[0u8; 160]);
    let t0 = Instant::now();
    let mut i: u32 = 0;
    let mut group = c.benchmark_group("jitter");
    group.throughput(Throughput::Elements(1));
    group.bench_function("push_and_release", |b| {
        b.iter(|| {
            // 3 ms of jitter every third packet, so the estimator has work to do.
            let now = t0
                + Duration::from_millis(u64::from(i) * 20)
                + Duration::from_millis(u64::from(i % 3));
            jb.handle_packet(
                now,
                Incoming {
                    ssrc: 1,
                    seq: i as u16,
                    ts: i.wrapping_mul(160),
                    payload_type: 0,
                    marker: false,
                    audio: true,
                    payload: payload.clone(),
                },
            );
            i += 1;
            while let Some(p) = jb.poll_output(now) {
                black_box(p);
            }
        })
    });
    group.finish();
}

fn relay_pipeline(c: &mut Criterion) {
    let leg = |format| LegFormat {
        format,
        ptime_ms: 20,
    };
    let mut p = Pipeline::new(
        Towards::Sip,
        leg(PCMU),
        leg(PCMU),
        false,
        RtpRewriter::new(1, 1, 1, 8000, 160),
        &TranscodeConfig::default(),
    )
    .expect("pipeline");
    let payloads = pcmu_packets();
    let t0 = Instant::now();
    let mut i: u32 = 0;
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    group.bench_function("relay_pcmu", |b| {
        b.iter(|| {
            let now = t0 + Duration::from_millis(u64::from(i) * 20);
            let pkt = packet(
                0,
                i as u16,
                i.wrapping_mul(160),
                payloads[i as usize % RING].clone(),
            );
            i += 1;
            let _ = p.handle_packet(now, pkt);
            black_box(p.poll_output());
        })
    });
    group.finish();
}

criterion_group!(transcode_benches, transcode, codecs, jitter, relay_pipeline);
criterion_main!(transcode_benches);

//! Transcoder tests with fake time: tones through Opus ↔ G.711, repacketisation,
//! loss recovery and DTMF mapping.

use std::time::Duration;

use super::*;

const MS: Duration = Duration::from_millis(1);
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

/// Relative power of `freq` in `x` (Goertzel), normalised by the signal's total power.
fn tone_share(x: &[f64], rate: f64, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    let total: f64 = x.iter().map(|v| v * v).sum::<f64>() * x.len() as f64 / 2.0;
    if total == 0.0 { 0.0 } else { power / total }
}

fn sine(rate: u32, freq: f64, n: usize, offset: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = (offset + i) as f64 / f64::from(rate);
            (10_000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
        })
        .collect()
}

fn packet(pt: u8, seq: u16, ts: u32, payload: Vec<u8>) -> rtp::Packet {
    rtp::Packet {
        header: rtp::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc: 0x5555,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    }
}

/// Browser-like Opus packets: 48 kHz mono encoder, 20 ms frames of a `freq` tone.
fn opus_stream(freq: f64, n: usize) -> Vec<Vec<u8>> {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    enc.set_inband_fec(true).unwrap();
    enc.set_packet_loss_perc(20).unwrap();
    (0..n)
        .map(|k| {
            enc.encode_vec(&sine(48_000, freq, 960, k * 960), 1500)
                .unwrap()
        })
        .collect()
}

/// Feeds `(arrival offset, packet)` pairs and drains at every deadline.
fn run(t: &mut Transcoder, t0: Instant, input: Vec<(Duration, rtp::Packet)>) -> Vec<rtp::Packet> {
    let mut out = Vec::new();
    for (at, p) in input {
        let now = t0 + at;
        while let Some(d) = t.poll_timeout().filter(|d| *d <= now) {
            t.handle_timeout(d);
            out.extend(std::iter::from_fn(|| t.poll_output()));
        }
        let _ = t.handle_packet(now, p);
        out.extend(std::iter::from_fn(|| t.poll_output()));
    }
    while let Some(d) = t.poll_timeout() {
        t.handle_timeout(d);
        out.extend(std::iter::from_fn(|| t.poll_output()));
    }
    out
}

fn transcoder(input: PayloadFormat, output: PayloadFormat, ptime: u32) -> Transcoder {
    Transcoder::new(
        input,
        output,
        ptime,
        RtpRewriter::new(0xABCD, 100, 1000, output.codec.clock_rate(), 160),
        &TranscodeConfig::default(),
    )
    .unwrap()
}

fn assert_continuous(out: &[&rtp::Packet], ts_step: u32) {
    for w in out.windows(2) {
        assert_eq!(
            w[1].header.sequence_number,
            w[0].header.sequence_number.wrapping_add(1)
        );
        assert_eq!(
            w[1].header.timestamp.wrapping_sub(w[0].header.timestamp),
            ts_step
        );
        assert_eq!(w[1].header.ssrc, 0xABCD);
    }
}

#[test]
fn opus_tone_comes_out_as_pcmu_tone() {
    let mut t = transcoder(OPUS, PCMU, 20);
    let t0 = Instant::now();
    let input = opus_stream(1000.0, 100)
        .into_iter()
        .enumerate()
        .map(|(k, p)| {
            (
                20 * MS * k as u32 + 5 * MS,
                packet(111, k as u16, 7 + 960 * k as u32, p),
            )
        })
        .collect();
    let out = run(&mut t, t0, input);
    let audio: Vec<&rtp::Packet> = out.iter().filter(|p| p.header.payload_type == 0).collect();
    assert_eq!(audio.len(), 100);
    assert!(audio.iter().all(|p| p.payload.len() == 160));
    assert_continuous(&audio, 160);
    assert!(audio[0].header.marker);
    let pcm: Vec<f64> = audio[10..]
        .iter()
        .flat_map(|p| {
            p.payload
                .iter()
                .map(|&c| f64::from(g711::ulaw_to_linear(c)))
        })
        .collect();
    let share = tone_share(&pcm, 8000.0, 1000.0);
    assert!(share > 0.8, "1 kHz share {share}");
    assert!(tone_share(&pcm, 8000.0, 1500.0) < 0.01);
    let w = t.work();
    assert_eq!((w.decoded, w.encoded, w.concealed), (100, 100, 0));
}

#[test]
fn pcmu_tone_comes_out_as_opus_tone_at_48khz_timestamps() {
    let mut t = transcoder(PCMU, OPUS, 20);
    let t0 = Instant::now();
    let input = (0..100usize)
        .map(|k| {
            let payload = sine(8000, 700.0, 160, k * 160)
                .into_iter()
                .map(g711::linear_to_ulaw)
                .collect();
            (
                20 * MS * k as u32,
                packet(0, 9000 + k as u16, 160 * k as u32, payload),
            )
        })
        .collect();
    let out = run(&mut t, t0, input);
    let audio: Vec<&rtp::Packet> = out.iter().collect();
    assert_eq!(audio.len(), 100);
    assert!(audio.iter().all(|p| p.header.payload_type == 111));
    assert_continuous(&audio, 960);
    // Decode as a browser does: 48 kHz.
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut pcm = Vec::new();
    let mut buf = [0i16; 5760];
    for p in &audio {
        let n = dec.decode(&p.payload, &mut buf, false).unwrap();
        assert_eq!(n, 960);
        pcm.extend(buf[..n].iter().map(|&s| f64::from(s)));
    }
    let share = tone_share(&pcm[48_000 / 5..], 48_000.0, 700.0);
    assert!(share > 0.8, "700 Hz share {share}");
}

#[test]
fn twenty_ms_pcmu_is_repacketised_to_thirty_ms() {
    let mut t = transcoder(PCMU, PCMU, 30);
    let t0 = Instant::now();
    let input = (0..30usize)
        .map(|k| {
            (
                20 * MS * k as u32,
                packet(0, k as u16, 160 * k as u32, vec![0x55; 160]),
            )
        })
        .collect();
    let out = run(&mut t, t0, input);
    let refs: Vec<&rtp::Packet> = out.iter().collect();
    assert_eq!(refs.len(), 20);
    assert!(
        refs.iter()
            .all(|p| p.payload.len() == 240 && p.payload.iter().all(|&b| b == 0x55))
    );
    assert_continuous(&refs, 240);
}

#[test]
fn lost_opus_packet_is_recovered_from_fec_and_timing_is_kept() {
    let mut t = transcoder(OPUS, PCMU, 20);
    let t0 = Instant::now();
    let input = opus_stream(400.0, 50)
        .into_iter()
        .enumerate()
        .filter(|(k, _)| *k != 20)
        .map(|(k, p)| (20 * MS * k as u32, packet(111, k as u16, 960 * k as u32, p)))
        .collect();
    let out = run(&mut t, t0, input);
    let refs: Vec<&rtp::Packet> = out.iter().collect();
    assert_eq!(refs.len(), 50, "the lost frame is replaced");
    assert_continuous(&refs, 160);
    let w = t.work();
    assert_eq!((w.fec_recovered + w.concealed, w.decoded), (1, 49));
    assert_eq!(w.fec_recovered, 1, "FEC was in the next packet");
}

#[test]
fn dtmf_event_keeps_its_place_on_the_timeline() {
    let mut t = transcoder(OPUS, PCMU, 20);
    let t0 = Instant::now();
    let mut input: Vec<(Duration, rtp::Packet)> = opus_stream(400.0, 10)
        .into_iter()
        .enumerate()
        .map(|(k, p)| (20 * MS * k as u32, packet(111, k as u16, 960 * k as u32, p)))
        .collect();
    // An event starting at audio timestamp 9600 (200 ms), 8 kHz durations.
    for (i, end) in [(0u16, false), (1, false), (2, true)] {
        let dur = (i + 1) * 160;
        let payload = vec![
            7,
            if end { 0x8A } else { 0x0A },
            (dur >> 8) as u8,
            dur as u8,
        ];
        input.push((
            200 * MS + 20 * MS * u32::from(i),
            packet(126, 10 + i, 9600, payload),
        ));
    }
    let out = run(&mut t, t0, input);
    let events: Vec<&rtp::Packet> = out
        .iter()
        .filter(|p| p.header.payload_type == 101)
        .collect();
    assert_eq!(events.len(), 3);
    let first_audio = out.iter().find(|p| p.header.payload_type == 0).unwrap();
    // 200 ms after the first audio frame on the 8 kHz clock.
    assert!(
        events
            .iter()
            .all(|e| e.header.timestamp == first_audio.header.timestamp + 1600)
    );
    assert_eq!(&events[2].payload[..], &[7, 0x8A, 1, 224]);
    let seqs: Vec<u16> = out.iter().map(|p| p.header.sequence_number).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{seqs:?}"
    );
}

#[test]
fn unknown_payload_types_are_refused() {
    let mut t = transcoder(OPUS, PCMU, 20);
    let e = t
        .handle_packet(Instant::now(), packet(13, 1, 1, vec![0]))
        .unwrap_err();
    assert_eq!(e, Dropped::UnknownPayloadType(13));
    let mut no_dtmf = Transcoder::new(
        OPUS,
        PayloadFormat {
            dtmf_payload_type: None,
            ..PCMU
        },
        20,
        RtpRewriter::new(1, 1, 1, 8000, 160),
        &TranscodeConfig::default(),
    )
    .unwrap();
    let e = no_dtmf
        .handle_packet(Instant::now(), packet(126, 1, 1, vec![0; 4]))
        .unwrap_err();
    assert_eq!(e, Dropped::NotNegotiatedOnOutput(126));
}

/// Asserts the output is one timeline: sequence numbers +1 in sending order, audio
/// timestamps growing by `step`, and the first packet of every event after all audio
/// that starts at or before it and before all audio that starts after it (its repeats
/// keep the start timestamp while the audio goes on, RFC 4733).
fn assert_timeline_order(out: &[rtp::Packet], event_pt: u8, step: u32) {
    let seqs: Vec<u16> = out.iter().map(|p| p.header.sequence_number).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "sequence in sending order: {seqs:?}"
    );
    let base = out[0].header.timestamp;
    let rel = |p: &rtp::Packet| i64::from(p.header.timestamp.wrapping_sub(base) as i32);
    let audio: Vec<i64> = out
        .iter()
        .filter(|p| p.header.payload_type != event_pt)
        .map(rel)
        .collect();
    assert!(
        audio.windows(2).all(|w| w[1] - w[0] == i64::from(step)),
        "audio timestamps: {audio:?}"
    );
    for (i, e) in out.iter().enumerate() {
        let starts_event = e.header.payload_type == event_pt
            && !out[..i].iter().any(|p| {
                p.header.payload_type == event_pt && p.header.timestamp == e.header.timestamp
            });
        if !starts_event {
            continue;
        }
        let ets = rel(e);
        for (j, a) in out.iter().enumerate() {
            if a.header.payload_type == event_pt {
                continue;
            }
            let ats = rel(a);
            if j < i {
                assert!(
                    ats <= ets,
                    "audio at {ats} sent before the event at {ets} must not be later"
                );
            } else {
                assert!(
                    ats >= ets,
                    "audio at {ats} sent after the event at {ets} must not be earlier"
                );
            }
        }
    }
}

#[test]
fn incoming_event_leaves_after_the_audio_before_it_when_repacketising() {
    // 20 ms Opus in, 30 ms PCMU out: when the event comes out of the jitter buffer
    // the 30 ms frame holding the audio before it is still being filled.
    let mut t = transcoder(OPUS, PCMU, 30);
    let t0 = Instant::now();
    let mut input: Vec<(Duration, rtp::Packet)> = Vec::new();
    let stream = opus_stream(400.0, 20);
    let mut seq = 0u16;
    for (k, p) in stream.into_iter().enumerate() {
        if k == 5 {
            // An event starting at audio frame 5 (timeline position 800, inside the
            // output frame 720-960), sent before that audio frame.
            for (i, end) in [(0u16, false), (1, false), (2, true)] {
                let dur = (i + 1) * 160;
                let payload = vec![4, if end { 0x8A } else { 0x0A }, 0, dur as u8];
                input.push((20 * MS * k as u32 + MS * u32::from(i), {
                    let mut e = packet(126, seq, 960 * k as u32, payload);
                    e.header.marker = i == 0;
                    e
                }));
                seq += 1;
            }
        }
        input.push((
            20 * MS * k as u32 + 3 * MS,
            packet(111, seq, 960 * k as u32, p),
        ));
        seq += 1;
    }
    let out = run(&mut t, t0, input);
    let events: Vec<&rtp::Packet> = out
        .iter()
        .filter(|p| p.header.payload_type == 101)
        .collect();
    assert_eq!(events.len(), 3);
    assert!(events[0].header.marker && !events[1].header.marker);
    assert_timeline_order(&out, 101, 240);
    let first = out[0].header.timestamp;
    assert_eq!(events[0].header.timestamp.wrapping_sub(first), 800);
}

#[test]
fn generated_event_takes_the_next_audio_position_in_order() {
    let mut t = transcoder(OPUS, PCMU, 30);
    let t0 = Instant::now();
    let stream = opus_stream(400.0, 40);
    let mut out = Vec::new();
    // Digits 170 ms apart: each is due at another phase of the 20 ms audio releases.
    let timing = crate::media::dtmf::DtmfTiming {
        gap: 70 * MS,
        ..Default::default()
    };
    let mut dtmf = crate::media::dtmf::DtmfSender::new(timing);
    dtmf.push_digits(t0 + 95 * MS, "123").unwrap();
    // Drive it as the bridge does: every 1 ms of fake time, audio due first, then
    // the events due, then drain the one output queue. Packets arrive with jitter.
    let mut next_packet = 0usize;
    let arrival = |k: usize| 20 * k as u32 + (k as u32 * 7) % 5;
    for ms in 0..900u32 {
        let now = t0 + MS * ms;
        if next_packet < stream.len() && ms == arrival(next_packet) {
            let p = packet(
                111,
                next_packet as u16,
                960 * next_packet as u32,
                stream[next_packet].clone(),
            );
            t.handle_packet(now, p).unwrap();
            next_packet += 1;
        }
        if t.poll_timeout().is_some_and(|d| d <= now) {
            t.handle_timeout(now);
        }
        while let Some(e) = dtmf.poll_output(now) {
            t.inject_event(now, 101, &e);
        }
        out.extend(std::iter::from_fn(|| t.poll_output()));
    }
    let events: Vec<&rtp::Packet> = out
        .iter()
        .filter(|p| p.header.payload_type == 101)
        .collect();
    assert_eq!(events.len(), 21, "three digits of 4 + 3 end packets");
    assert_timeline_order(&out, 101, 240);
    let starts: std::collections::BTreeSet<u32> =
        events.iter().map(|e| e.header.timestamp).collect();
    assert_eq!(starts.len(), 3, "one timestamp per digit");
}

#[test]
fn marker_starts_each_talk_spurt_when_transcoding() {
    let mut t = transcoder(OPUS, PCMU, 20);
    let t0 = Instant::now();
    let stream = opus_stream(400.0, 30);
    let mut input = Vec::new();
    for (k, p) in stream.into_iter().enumerate() {
        // Frames 10.. come after one second of silence (DTX: nothing sent, sequence
        // continuous, timestamp advanced); frames 20.. from a restarted source.
        let (gap_ms, gap_ts) = if k >= 10 { (1000, 48_000) } else { (0, 0) };
        let mut pkt = packet(111, k as u16, 960 * k as u32 + gap_ts, p);
        if k >= 20 {
            pkt.header.ssrc = 0x6666;
            pkt.header.sequence_number = 40_000 + k as u16;
        }
        // The source sets the marker on every packet: never copied.
        pkt.header.marker = true;
        input.push((20 * MS * k as u32 + MS * gap_ms, pkt));
    }
    let out = run(&mut t, t0, input);
    assert_eq!(out.len(), 30);
    let marked: Vec<usize> = (0..out.len()).filter(|&i| out[i].header.marker).collect();
    assert_eq!(marked, vec![0, 10, 20]);
}

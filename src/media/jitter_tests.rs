//! Jitter buffer tests with fake time: a scripted sender, a network that delays, drops,
//! reorders and duplicates, and a driver that jumps to the buffer's next deadline.

use super::*;

const MS: Duration = Duration::from_millis(1);
const FRAME: u32 = 160;

/// One packet on the simulated wire.
#[derive(Clone)]
struct Wire {
    arrival: Instant,
    packet: Incoming,
}

/// What the buffer released and when.
#[derive(Debug, Clone)]
struct Out {
    at: Instant,
    playout: Playout,
}

fn audio(ssrc: u32, seq: u16, ts: u32) -> Incoming {
    Incoming {
        ssrc,
        seq,
        ts,
        payload_type: 0,
        marker: false,
        audio: true,
        payload: Bytes::copy_from_slice(&seq.to_be_bytes()),
    }
}

/// `n` packets from seq `seq0`, ts `ts0`, sent every `interval` from `t0`, with a
/// network delay per packet index given by `delay` (`None`: lost).
fn stream(
    t0: Instant,
    n: u16,
    seq0: u16,
    ts0: u32,
    interval: Duration,
    mut delay: impl FnMut(u16) -> Option<Duration>,
) -> Vec<Wire> {
    (0..n)
        .filter_map(|i| {
            let d = delay(i)?;
            Some(Wire {
                arrival: t0 + interval * u32::from(i) + d,
                packet: audio(
                    7,
                    seq0.wrapping_add(i),
                    ts0.wrapping_add(u32::from(i) * FRAME),
                ),
            })
        })
        .collect()
}

/// Feeds `wire` (sorted by arrival here) and drains the buffer at every deadline.
fn run(jb: &mut JitterBuffer, mut wire: Vec<Wire>) -> Vec<Out> {
    wire.sort_by_key(|w| w.arrival);
    let mut out = Vec::new();
    let drain = |jb: &mut JitterBuffer, now: Instant, out: &mut Vec<Out>| {
        while let Some(p) = jb.poll_output(now) {
            out.push(Out {
                at: now,
                playout: p,
            });
        }
    };
    for w in wire {
        while let Some(t) = jb.poll_timeout().filter(|t| *t <= w.arrival) {
            drain(jb, t, &mut out);
        }
        jb.handle_packet(w.arrival, w.packet);
        drain(jb, w.arrival, &mut out);
    }
    while let Some(t) = jb.poll_timeout() {
        drain(jb, t, &mut out);
    }
    out
}

fn frames(out: &[Out]) -> Vec<&Frame> {
    out.iter()
        .filter_map(|o| match &o.playout {
            Playout::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn lost(out: &[Out]) -> Vec<(i64, u32, Option<Bytes>)> {
    out.iter()
        .filter_map(|o| match &o.playout {
            Playout::Lost { ts, duration, fec } => Some((*ts, *duration, fec.clone())),
            _ => None,
        })
        .collect()
}

/// A small deterministic pseudo-random generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn jb() -> JitterBuffer {
    JitterBuffer::new(JitterConfig::default(), 8000)
}

#[test]
fn steady_stream_plays_in_order_after_min_delay() {
    let t0 = Instant::now();
    let mut jb = jb();
    let wire = stream(t0, 100, 1000, 5000, 20 * MS, |_| Some(30 * MS));
    let out = run(&mut jb, wire);
    let f = frames(&out);
    assert_eq!(f.len(), 100);
    assert!(lost(&out).is_empty());
    for (i, o) in out.iter().enumerate() {
        // Sent at t0 + 20i, arrived 30 ms later, played min_delay (20 ms) after that.
        assert_eq!(o.at, t0 + 20 * MS * i as u32 + 50 * MS, "packet {i}");
    }
    for w in f.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert_eq!(w[1].ts, w[0].ts + 160);
    }
    let s = jb.stats();
    assert_eq!(s.target_delay, 20 * MS);
    assert_eq!(
        (s.received, s.released, s.late, s.concealed),
        (100, 100, 0, 0)
    );
}

#[test]
fn reordered_packets_come_out_in_order() {
    let t0 = Instant::now();
    let mut jb = jb();
    // Every odd packet overtakes its even predecessor by 5 ms.
    let wire = stream(t0, 100, 65_500, 0, 20 * MS, |i| {
        Some(if i % 2 == 0 { 30 * MS } else { 5 * MS })
    });
    let out = run(&mut jb, wire);
    let f = frames(&out);
    assert_eq!(f.len(), 100, "sequence wrap and reordering");
    assert!(f.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert!(lost(&out).is_empty());
    let s = jb.stats();
    assert!(s.reordered >= 49, "{s:?}");
    assert_eq!(s.late, 0);
}

#[test]
fn single_loss_is_concealed_with_the_next_payload_for_fec() {
    let t0 = Instant::now();
    let mut jb = jb();
    let wire = stream(t0, 30, 100, 8000, 20 * MS, |i| (i != 10).then_some(10 * MS));
    let out = run(&mut jb, wire);
    let l = lost(&out);
    assert_eq!(l.len(), 1);
    let (ts, duration, fec) = &l[0];
    assert_eq!((*ts, *duration), (8000 + 10 * 160, 160));
    assert_eq!(fec.as_deref(), Some(&111u16.to_be_bytes()[..]));
    // The concealment comes exactly when packet 10 would have played.
    let at = out
        .iter()
        .find(|o| matches!(o.playout, Playout::Lost { .. }))
        .map(|o| o.at);
    assert_eq!(at, Some(t0 + 200 * MS + 30 * MS));
    assert_eq!(frames(&out).len(), 29);
    assert_eq!(jb.stats().concealed, 1);
}

#[test]
fn short_burst_is_concealed_packet_by_packet() {
    let t0 = Instant::now();
    let mut jb = jb();
    let wire = stream(t0, 30, 0, 0, 20 * MS, |i| {
        (!(10..13).contains(&i)).then_some(10 * MS)
    });
    let out = run(&mut jb, wire);
    let l = lost(&out);
    let ts: Vec<i64> = l.iter().map(|x| x.0).collect();
    assert_eq!(ts, vec![1600, 1760, 1920]);
    assert!(l[0].2.is_none() && l[1].2.is_none(), "no FEC source yet");
    assert!(l[2].2.is_some(), "packet 13 carries FEC for 12");
}

#[test]
fn long_burst_skips_to_the_last_missing_packet() {
    let t0 = Instant::now();
    let mut jb = jb();
    let wire = stream(t0, 40, 0, 0, 20 * MS, |i| {
        (!(10..20).contains(&i)).then_some(10 * MS)
    });
    let out = run(&mut jb, wire);
    let l = lost(&out);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0].0, 19 * 160);
    assert!(l[0].2.is_some());
    let s = jb.stats();
    assert_eq!((s.skipped, s.concealed, s.released), (9, 1, 30));
}

#[test]
fn delay_bursts_raise_the_target_and_stop_late_losses() {
    let t0 = Instant::now();
    let mut jb = jb();
    // Every 50 packets a 5-packet burst: a queue builds up to 80 ms, then drains.
    let wire = stream(t0, 500, 0, 0, 20 * MS, |i| {
        let k = i % 50;
        Some(
            if k < 5 {
                (80 - 20 * u32::from(k)) * MS
            } else {
                5 * MS
            } + 5 * MS,
        )
    });
    let out = run(&mut jb, wire);
    let s = jb.stats();
    assert!(
        (80 * MS..=100 * MS).contains(&s.target_delay),
        "target {:?}",
        s.target_delay
    );
    // Whatever was lost was lost during the first burst, before the buffer adapted.
    let late_ts: Vec<i64> = lost(&out).iter().map(|l| l.0).collect();
    assert!(late_ts.iter().all(|&ts| ts < 10 * 160), "{late_ts:?}");
    assert!(frames(&out).len() >= 495, "{s:?}");
}

#[test]
fn random_jitter_within_max_delay_loses_nothing_after_warm_up() {
    let t0 = Instant::now();
    let mut jb = jb();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let wire = stream(t0, 1500, 0, 0, 20 * MS, |_| {
        Some(Duration::from_micros(10_000 + rng.below(60_000)))
    });
    let out = run(&mut jb, wire);
    let s = jb.stats();
    assert!(
        s.target_delay >= 55 * MS && s.target_delay <= 70 * MS,
        "{s:?}"
    );
    let late_after_warm_up = lost(&out).iter().filter(|l| l.0 > 100 * 160).count();
    assert_eq!(late_after_warm_up, 0, "{s:?}");
    assert!(s.reordered > 100, "{s:?}");
}

/// A sender whose clock is off by `ppm` parts per million: it sends 160 ticks every
/// `20 ms * (1 - ppm/1e6)` of our time.
fn drift(ppm: i64) {
    let t0 = Instant::now();
    let mut jb = jb();
    let mut rng = Rng(12345);
    let interval = Duration::from_nanos((20_000_000i64 - 20 * ppm) as u64);
    let wire = stream(t0, 3000, 0, 0, interval, |_| {
        Some(Duration::from_micros(20_000 + rng.below(4_000)))
    });
    let arrivals: Vec<Instant> = {
        let mut w = wire.clone();
        w.sort_by_key(|w| w.packet.seq);
        w.iter().map(|w| w.arrival).collect()
    };
    let out = run(&mut jb, wire);
    let s = jb.stats();
    assert_eq!(
        (s.concealed, s.late, s.skipped),
        (0, 0, 0),
        "{ppm} ppm: {s:?}"
    );
    assert_eq!(s.released, 3000);
    // The wait stays bounded: no creeping delay, no starvation.
    let waits: Vec<Duration> = frames(&out)
        .iter()
        .zip(out.iter())
        .map(|(f, o)| o.at.saturating_duration_since(arrivals[f.seq as usize]))
        .collect();
    let worst = waits.iter().skip(500).max().copied().unwrap_or_default();
    assert!(worst <= 40 * MS, "{ppm} ppm: worst wait {worst:?}");
}

#[test]
fn sender_clock_fast_by_half_a_percent() {
    drift(5000);
}

#[test]
fn sender_clock_slow_by_half_a_percent() {
    drift(-5000);
}

#[test]
fn packet_after_its_slot_is_dropped_as_late() {
    let t0 = Instant::now();
    let mut jb = jb();
    // Packet 10 arrives 500 ms late, long after it was concealed.
    let wire = stream(t0, 40, 0, 0, 20 * MS, |i| {
        Some(if i == 10 { 500 * MS } else { 10 * MS })
    });
    let out = run(&mut jb, wire);
    assert_eq!(lost(&out).len(), 1);
    assert!(frames(&out).iter().all(|f| f.seq != 10));
    assert_eq!(jb.stats().late, 1);
}

#[test]
fn duplicates_are_dropped() {
    let t0 = Instant::now();
    let mut jb = jb();
    let mut wire = stream(t0, 10, 0, 0, 20 * MS, |_| Some(10 * MS));
    let mut dup = wire[4].clone();
    dup.arrival += 3 * MS;
    wire.push(dup);
    let out = run(&mut jb, wire);
    assert_eq!(frames(&out).len(), 10);
    assert_eq!(jb.stats().duplicates, 1);
}

#[test]
fn source_restart_continues_the_timeline() {
    let t0 = Instant::now();
    let mut jb = jb();
    let mut wire = stream(t0, 10, 500, 1000, 20 * MS, |_| Some(10 * MS));
    // A new SSRC with unrelated sequence and timestamp, 100 ms after the last packet.
    let t1 = t0 + 20 * MS * 9 + 100 * MS;
    for mut w in stream(t1, 10, 40_000, 3_000_000_000, 20 * MS, |_| Some(10 * MS)) {
        w.packet.ssrc = 99;
        wire.push(w);
    }
    let out = run(&mut jb, wire);
    let f = frames(&out);
    assert_eq!(f.len(), 20);
    assert!(f.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    // 100 ms of wall-clock time = 800 ticks between the two sources.
    assert_eq!(f[10].ts - f[9].ts, 800);
    assert!(f[10..].windows(2).all(|w| w[1].ts - w[0].ts == 160));
    assert!(lost(&out).is_empty());
    assert_eq!(jb.stats().resets, 1);
}

#[test]
fn full_buffer_releases_without_waiting() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(
        JitterConfig {
            max_packets: 4,
            ..Default::default()
        },
        8000,
    );
    for i in 0..8u16 {
        jb.handle_packet(t0, audio(1, i, u32::from(i) * 160));
    }
    let mut released = 0;
    while jb.poll_output(t0).is_some() {
        released += 1;
    }
    assert_eq!(released, 4);
    assert_eq!(jb.len(), 4);
    assert_eq!(jb.stats().overflows, 4);
}

#[test]
fn events_are_released_on_arrival_and_do_not_skew_timing() {
    let t0 = Instant::now();
    let mut jb = jb();
    let mut wire = stream(t0, 10, 0, 0, 20 * MS, |_| Some(10 * MS));
    // An RFC 4733 event in seq 10..13, all with the event's start timestamp.
    for k in 0..3u16 {
        let mut p = audio(7, 10 + k, 1600);
        p.audio = false;
        p.payload_type = 101;
        wire.push(Wire {
            arrival: t0 + 20 * MS * u32::from(10 + k) + 10 * MS,
            packet: p,
        });
    }
    wire.extend(stream(t0 + 260 * MS, 10, 13, 13 * 160, 20 * MS, |_| {
        Some(10 * MS)
    }));
    let out = run(&mut jb, wire);
    let f = frames(&out);
    assert_eq!(f.len(), 23);
    assert!(f.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let events: Vec<&Out> = out
        .iter()
        .filter(|o| matches!(&o.playout, Playout::Frame(f) if !f.audio))
        .collect();
    assert_eq!(events.len(), 3);
    assert_eq!(jb.stats().target_delay, 20 * MS);
    assert!(lost(&out).is_empty());
}

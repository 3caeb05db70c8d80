//! End to end on loopback, no SIP: test browser <-> WebRtcLeg <-> Bridge <-> RtpLeg <->
//! a UDP echo socket.
//!
//! The echo socket stands in for SIPp's `-rtp_echo` (which sends every RTP packet back
//! to where it came from): the browser's tone frames travel to the "SIP peer" and back,
//! so the browser can compare what it sent with what it received.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use callbridge::media::bridge::{Bridge, BridgeStats};
use callbridge::media::codec::AudioCodec;
use callbridge::media::g711;
use callbridge::media::rtp_leg::RtpLeg;
use callbridge::media::sdp;
use callbridge::media::webrtc_leg::{IceCandidate, WebRtcEvent, WebRtcLeg, WebRtcLegConfig};
use common::browser::{Browser, BrowserOptions, ReceivedPacket, frame_number};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const G711: [AudioCodec; 2] = [AudioCodec::Pcmu, AudioCodec::Pcma];
/// Tone frames the browser sends (2 s at 50 pps).
const FRAMES: u32 = 100;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// One packet as the echo peer saw it: (payload type, ssrc, sequence number).
type Seen = (u8, u32, u16);

/// The fake SIP peer: echoes RTP back to its source, optionally restarting its stream
/// (new SSRC, sequence and timestamp base) after `restart_after` packets.
struct EchoPeer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl EchoPeer {
    async fn start(restart_after: Option<usize>) -> EchoPeer {
        let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let mut count = 0usize;
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if n < 12 {
                    continue;
                }
                let pt = buf[1] & 0x7F;
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                log.lock().unwrap().push((pt, ssrc, seq));
                count += 1;
                if restart_after.is_some_and(|k| count > k) {
                    // A different source: new SSRC, sequence jumped, timestamp jumped.
                    let seq = seq.wrapping_add(20_000).to_be_bytes();
                    let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]])
                        .wrapping_add(1_000_000_000)
                        .to_be_bytes();
                    buf[2..4].copy_from_slice(&seq);
                    buf[4..8].copy_from_slice(&ts);
                    buf[8..12].copy_from_slice(&0xDEAD_BEEFu32.to_be_bytes());
                }
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
        EchoPeer { addr, seen, task }
    }

    /// The answer SIPp would send for our offer, choosing `codec`.
    fn answer_sdp(&self, codec: AudioCodec) -> String {
        let pt = codec.static_payload_type().unwrap();
        format!(
            "v=0\r\no=sipp 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {pt} 101\r\na=rtpmap:{pt} {name}/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
            ip = self.addr.ip(),
            port = self.addr.port(),
            name = codec.encoding_name(),
        )
    }
}

/// What a scenario does besides the basic call.
#[derive(Default)]
struct Scenario {
    /// The SIP side answers this codec (PCMU when `None`).
    sip_codec: Option<AudioCodec>,
    /// The echo peer restarts its stream after this many packets.
    restart_after: Option<usize>,
    /// Half way through, the SIP side's SDP changes (183 -> 200 OK) to a second echo
    /// peer answering this codec.
    switch_to: Option<AudioCodec>,
}

/// Everything a scenario produced.
struct Outcome {
    browser: Arc<Browser>,
    leg: Arc<WebRtcLeg>,
    sent: Vec<Bytes>,
    received: Vec<ReceivedPacket>,
    /// What the (first) echo peer saw.
    seen_by_sip: Vec<Seen>,
    /// What the second echo peer saw, in a switch scenario.
    seen_by_second: Vec<Seen>,
    stats: BridgeStats,
    /// Packets the gateway's WebRTC stack counted as received from the browser.
    inbound_rtp_packets: u64,
}

/// Forwards trickled candidates both ways until both sides ended gathering.
fn pump_candidates(
    browser: Arc<Browser>,
    leg: Arc<WebRtcLeg>,
    mut events: mpsc::UnboundedReceiver<WebRtcEvent>,
) -> JoinHandle<()> {
    let mut from_browser = browser.take_candidates();
    tokio::spawn(async move {
        let (mut gw_done, mut br_done) = (false, false);
        while !(gw_done && br_done) {
            tokio::select! {
                ev = events.recv(), if !gw_done => match ev {
                    Some(WebRtcEvent::LocalCandidate(Some(c))) => browser.add_remote_candidate(c).await,
                    Some(WebRtcEvent::LocalCandidate(None)) | None => gw_done = true,
                    Some(WebRtcEvent::Failed(why)) => panic!("gateway leg failed: {why}"),
                    Some(WebRtcEvent::Connected) => {}
                },
                c = from_browser.recv(), if !br_done => match c {
                    Some(Some(c)) => leg.add_remote_candidate(Some(c)).await.expect("gateway accepts candidate"),
                    Some(None) | None => {
                        leg.add_remote_candidate(None).await.unwrap();
                        br_done = true;
                    }
                },
            }
        }
    })
}

/// Runs one call: browser offers, gateway answers, the SIP side answers from the echo
/// peer; the browser sends `FRAMES` tone frames (then 3 DTMF packets) and collects.
async fn run_call(scenario: Scenario) -> Outcome {
    let sip_codec = scenario.sip_codec.unwrap_or(AudioCodec::Pcmu);
    let echo = EchoPeer::start(scenario.restart_after).await;
    let second = EchoPeer::start(None).await;
    let browser = Browser::new(BrowserOptions::default()).await;

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let cfg = WebRtcLegConfig::loopback(G711.to_vec()).expect("a media worker");
    let (leg, answer) = WebRtcLeg::answer(&cfg, browser.offer_sdp(), events_tx)
        .await
        .expect("gateway answers");
    assert!(answer.contains("PCMU/8000"), "answer:\n{answer}");
    assert!(answer.contains("telephone-event/8000"), "answer:\n{answer}");
    assert!(
        !answer.to_lowercase().contains("opus"),
        "answer must not carry Opus:\n{answer}"
    );
    let leg = Arc::new(leg);
    browser.set_answer(&answer).await;
    let pump = pump_candidates(browser.clone(), leg.clone(), events_rx);

    // SIP side, as the call module will drive it.
    let rtp = RtpLeg::bind(LOOPBACK, (20_000, 29_999))
        .await
        .expect("RTP port");
    let offer = sdp::build_offer(LOOPBACK, rtp.local_addr().port(), 1, &G711);
    assert!(offer.contains("a=rtpmap:101 telephone-event/8000"));
    let remote = sdp::parse_answer(&echo.answer_sdp(sip_codec), &G711).expect("parse SIP answer");
    assert_eq!(remote.format.codec, sip_codec);
    let bridge = Bridge::start(&leg, rtp, remote).expect("bridge starts");

    assert!(
        browser.wait_connected(CONNECT_TIMEOUT).await,
        "browser never connected"
    );
    let sender = browser.start_sending_tone(FRAMES);
    if let Some(codec) = scenario.switch_to {
        tokio::time::sleep(Duration::from_millis(u64::from(FRAMES) * 10)).await;
        let remote = sdp::parse_answer(&second.answer_sdp(codec), &G711).expect("parse 200 OK SDP");
        bridge.update_remote(remote);
    }
    let sent = tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .expect("sender timed out")
        .unwrap();
    // RFC 4733 event (digit 5, end bit on the last one) on the browser's telephone-event type.
    let dtmf_pt = browser.options().dtmf_payload_type;
    for (i, end) in [(0u16, false), (1, false), (2, true)] {
        let dur = (i + 1) * 160;
        let ev = [
            5u8,
            if end { 0x80 } else { 0 } | 10,
            (dur >> 8) as u8,
            dur as u8,
        ];
        assert!(
            browser
                .send_rtp(dtmf_pt, i == 0, 0, Bytes::copy_from_slice(&ev))
                .await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expected = sent.len() + 3;
    let _ = browser
        .wait_received(expected, Duration::from_secs(5))
        .await;
    // Settle: anything still in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stats = bridge.stats();
    let report = leg.stats().await;
    let inbound_rtp_packets = report
        .inbound_rtp_streams()
        .map(|s| s.received_rtp_stream_stats.packets_received)
        .sum();
    bridge.stop().await;
    leg.close().await;
    browser.close().await;
    pump.abort();
    echo.task.abort();
    second.task.abort();
    Outcome {
        received: browser.received(),
        seen_by_sip: echo.seen.lock().unwrap().clone(),
        seen_by_second: second.seen.lock().unwrap().clone(),
        browser,
        leg,
        sent,
        stats,
        inbound_rtp_packets,
    }
}

/// Runs `scenario` under an overall timeout.
async fn run(scenario: Scenario) -> Outcome {
    let out = tokio::time::timeout(Duration::from_secs(60), run_call(scenario))
        .await
        .expect("scenario timed out");
    eprintln!(
        "sent {}, received {} packets, stats {:?}, gateway inbound RTP {}",
        out.sent.len(),
        out.received.len(),
        out.stats,
        out.inbound_rtp_packets
    );
    out
}

/// The audio frames among `received`, in arrival order.
fn audio(received: &[ReceivedPacket]) -> Vec<&ReceivedPacket> {
    received.iter().filter(|p| p.payload_type == 0).collect()
}

/// Asserts at least 90 % of `expected` payloads arrived, byte for byte.
fn assert_payloads_back(expected: &[Bytes], received: &[&ReceivedPacket]) {
    let got: std::collections::HashSet<&[u8]> = received.iter().map(|p| &p.payload[..]).collect();
    let matched = expected.iter().filter(|p| got.contains(&p[..])).count();
    assert!(
        matched * 10 >= expected.len() * 9,
        "only {matched} of {} payloads came back identical ({} packets received)",
        expected.len(),
        received.len()
    );
}

/// Asserts sequence numbers go up by one (gaps only where packets were lost) and the
/// timestamp moves by 160 per sequence step (up to 4 frames across a source restart).
fn assert_continuous(packets: &[&ReceivedPacket], sent: usize) {
    let mut gaps = 0usize;
    for w in packets.windows(2) {
        let dseq = w[1].sequence_number.wrapping_sub(w[0].sequence_number);
        assert!(
            (1..=3).contains(&dseq),
            "sequence jump {dseq}: {:?} -> {:?}",
            w[0].sequence_number,
            w[1].sequence_number
        );
        gaps += usize::from(dseq - 1);
        let dts = w[1].timestamp.wrapping_sub(w[0].timestamp);
        let per_step = dts / u32::from(dseq);
        assert!(
            dts % 160 == 0 && (160..=640).contains(&per_step),
            "timestamp step {dts} over {dseq} packets at seq {}",
            w[1].sequence_number
        );
    }
    assert!(
        gaps <= sent - packets.len(),
        "{gaps} gaps but only {} packets missing",
        sent - packets.len()
    );
}

fn assert_gateway_ssrc(outcome: &Outcome) {
    let ssrc = outcome.leg.local_ssrc();
    assert_ne!(ssrc, outcome.browser.ssrc());
    assert!(
        outcome.received.iter().all(|p| p.ssrc == ssrc),
        "every packet must carry the gateway's SSRC"
    );
}

/// DTMF went out as 101 on the SIP side and came back as the browser's type.
fn assert_dtmf_mapped(outcome: &Outcome) {
    assert_dtmf_mapped_to(outcome, &outcome.seen_by_sip);
}

/// As [`assert_dtmf_mapped`], with the SIP peer that saw `seen`.
fn assert_dtmf_mapped_to(outcome: &Outcome, seen: &[Seen]) {
    let dtmf_pt = outcome.browser.options().dtmf_payload_type;
    assert_eq!(
        seen.iter().filter(|s| s.0 == 101).count(),
        3,
        "SIP side saw {:?}",
        seen.last()
    );
    let back: Vec<_> = outcome
        .received
        .iter()
        .filter(|p| p.payload_type == dtmf_pt)
        .collect();
    assert_eq!(back.len(), 3, "telephone-event packets back");
    assert_eq!(back[0].payload[0], 5);
    assert_eq!(back[2].payload[1] & 0x80, 0x80, "end bit kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_tone_comes_back_identical() {
    let out = run(Scenario::default()).await;
    let audio = audio(&out.received);
    assert_eq!(out.sent.len(), FRAMES as usize);
    assert_payloads_back(&out.sent, &audio);
    assert_continuous(&audio, out.sent.len());
    assert_gateway_ssrc(&out);
    // The SIP side saw our SIP SSRC, not the browser's, and PCMU.
    let sip_ssrcs: std::collections::HashSet<u32> = out.seen_by_sip.iter().map(|s| s.1).collect();
    assert_eq!(sip_ssrcs.len(), 1);
    assert!(!sip_ssrcs.contains(&out.browser.ssrc()));
    assert!(
        out.seen_by_sip
            .iter()
            .filter(|s| s.0 != 101)
            .all(|s| s.0 == 0)
    );
    assert_dtmf_mapped(&out);
    assert_eq!(out.stats.dropped_unknown_payload_type, 0);
    assert!(out.stats.to_sip >= FRAMES as u64 && out.stats.to_browser >= FRAMES as u64 * 9 / 10);
    // The stack's own statistics are reachable through the leg (for jitter/RTT later).
    assert!(
        out.inbound_rtp_packets >= u64::from(FRAMES),
        "gateway stats: {}",
        out.inbound_rtp_packets
    );
    // The stack's own statistics are reachable through the leg (for jitter/RTT later).
    assert!(
        out.inbound_rtp_packets >= u64::from(FRAMES),
        "gateway stats: {}",
        out.inbound_rtp_packets
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcma_sip_side_is_converted_both_ways() {
    // The counter bytes of the tone frames are fixed points of µ->A->µ.
    for k in 0..16u8 {
        assert_eq!(g711::alaw_to_ulaw(g711::ulaw_to_alaw(0x80 | k)), 0x80 | k);
    }
    let out = run(Scenario {
        sip_codec: Some(AudioCodec::Pcma),
        ..Default::default()
    })
    .await;
    let audio = audio(&out.received);
    assert!(
        out.seen_by_sip
            .iter()
            .filter(|s| s.0 != 101)
            .all(|s| s.0 == 8),
        "SIP side must get PCMA"
    );
    // Exact: the law conversion is deterministic.
    let expected: Vec<Bytes> = out
        .sent
        .iter()
        .map(|p| {
            p.iter()
                .map(|&u| g711::alaw_to_ulaw(g711::ulaw_to_alaw(u)))
                .collect::<Vec<u8>>()
                .into()
        })
        .collect();
    assert_payloads_back(&expected, &audio);
    // And within G.711 tolerance of what was sent, frame by frame.
    for p in &audio {
        let n = frame_number(&p.payload).expect("recognisable frame") as usize;
        for (&a, &b) in out.sent[n].iter().zip(p.payload.iter()).skip(4) {
            let (a, b) = (
                i32::from(g711::ulaw_to_linear(a)),
                i32::from(g711::ulaw_to_linear(b)),
            );
            assert!(
                (a - b).abs() <= 16 + a.abs() / 16,
                "sample {a} came back as {b}"
            );
        }
    }
    assert_continuous(&audio, out.sent.len());
    assert_gateway_ssrc(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_source_restart_keeps_browser_stream_continuous() {
    let restart_after = FRAMES as usize / 2;
    let out = run(Scenario {
        restart_after: Some(restart_after),
        ..Default::default()
    })
    .await;
    let audio = audio(&out.received);
    assert_payloads_back(&out.sent, &audio);
    assert_continuous(&audio, out.sent.len());
    assert_gateway_ssrc(&out);
    assert!(
        out.stats.source_resyncs >= 1,
        "the rewriter should have seen the restart: {:?}",
        out.stats
    );
    assert_dtmf_mapped(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_remote_moves_sip_side_and_keeps_streams_continuous() {
    // Early media from one address in PCMU, then the 200 OK points elsewhere in PCMA.
    let out = run(Scenario {
        switch_to: Some(AudioCodec::Pcma),
        ..Default::default()
    })
    .await;
    let audio = audio(&out.received);
    let first = &out.seen_by_sip;
    let second = &out.seen_by_second;
    assert!(
        first.len() >= 20 && second.len() >= 20,
        "first peer got {}, second {}",
        first.len(),
        second.len()
    );
    assert!(first.iter().all(|s| s.0 == 0), "before the switch: PCMU");
    assert!(
        second.iter().filter(|s| s.0 != 101).all(|s| s.0 == 8),
        "after the switch: PCMA"
    );
    // Toward the SIP side: one SSRC, sequence continuous across the switch.
    let last_first = first.last().unwrap();
    let first_second = second.first().unwrap();
    assert_eq!(
        last_first.1, first_second.1,
        "same SSRC toward both SIP addresses"
    );
    assert_eq!(
        first_second.2,
        last_first.2.wrapping_add(1),
        "sequence continues across the switch"
    );
    // Toward the browser: every frame decodes to its own number, continuous stream.
    let transcoded = |p: &Bytes| -> Bytes {
        p.iter()
            .map(|&u| g711::alaw_to_ulaw(g711::ulaw_to_alaw(u)))
            .collect::<Vec<u8>>()
            .into()
    };
    for p in &audio {
        let n = frame_number(&p.payload).expect("recognisable frame") as usize;
        assert!(
            p.payload == out.sent[n] || p.payload == transcoded(&out.sent[n]),
            "frame {n} altered"
        );
    }
    assert!(
        audio.len() * 10 >= out.sent.len() * 9,
        "{} of {} frames back",
        audio.len(),
        out.sent.len()
    );
    assert_continuous(&audio, out.sent.len());
    assert_gateway_ssrc(&out);
    assert_dtmf_mapped_to(&out, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_replaces_host_candidate_address() {
    let browser = Browser::new(BrowserOptions::default()).await;
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let public: IpAddr = "203.0.113.10".parse().unwrap();
    let cfg =
        WebRtcLegConfig::loopback_advertising(G711.to_vec(), Some(public)).expect("a media worker");
    let (leg, _answer) = WebRtcLeg::answer(&cfg, browser.offer_sdp(), events_tx)
        .await
        .expect("gateway answers");
    let mut candidates = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events_rx.recv())
            .await
            .expect("candidates in time")
        {
            Some(WebRtcEvent::LocalCandidate(Some(c))) => candidates.push(c),
            Some(WebRtcEvent::LocalCandidate(None)) | None => break,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(!candidates.is_empty());
    for c in &candidates {
        assert!(c.candidate.starts_with("candidate:"), "{c:?}");
        assert!(c.candidate.contains(" 203.0.113.10 "), "{c:?}");
        assert!(!c.candidate.contains("127.0.0.1"), "{c:?}");
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.sdp_mline_index, Some(0));
    }
    // mDNS and end-of-candidates from the browser are accepted without error.
    let mdns = IceCandidate {
        candidate:
            "candidate:1 1 udp 2122260223 4f1c0a6e-1111-2222-3333-444455556666.local 54321 typ host"
                .into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
    };
    leg.add_remote_candidate(Some(mdns)).await.unwrap();
    leg.add_remote_candidate(None).await.unwrap();
    let garbage = IceCandidate {
        candidate: "candidate:not a candidate".into(),
        sdp_mid: None,
        sdp_mline_index: None,
    };
    let e = leg.add_remote_candidate(Some(garbage)).await.unwrap_err();
    assert!(e.to_string().contains("not a candidate"), "{e}");
    leg.close().await;
    browser.close().await;
}

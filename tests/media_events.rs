//! Bridge behaviour beyond moving audio, end to end on loopback without SIP signalling:
//! DTMF both ways (in relay and transcode mode), RTCP and the quality report,
//! symmetric RTP latching (and strict source checking without it), and the inactivity
//! timeout.

mod common;
#[path = "common/media.rs"]
mod media;

use std::time::Duration;

use callbridge::media::bridge::{BridgeConfig, Leg, MediaEvent};
use callbridge::media::dtmf::{DtmfError, EventPayload};
use callbridge::media::latch::LatchPolicy;
use callbridge::media::sdp::Direction;
use common::browser::{BrowserOptions, PeerOptions, SeenPacket};
use media::{LoopbackCall, Setup};

/// Events (payload decoded) the SIP side saw on telephone-event payload type 101.
fn events_at_sip(seen: &[SeenPacket]) -> Vec<(u32, EventPayload)> {
    seen.iter()
        .filter(|p| p.payload_type == 101)
        .filter_map(|p| EventPayload::parse(&p.payload).map(|e| (p.timestamp, e)))
        .collect()
}

/// Digits in the order their first event packet arrived.
fn digits(events: &[(u32, EventPayload)]) -> String {
    let mut out = String::new();
    let mut last = None;
    for (ts, e) in events {
        if last != Some((*ts, e.event)) {
            last = Some((*ts, e.event));
            out.push(callbridge::media::dtmf::event_to_digit(e.event).unwrap_or('?'));
        }
    }
    out
}

async fn dtmf_both_ways(browser: BrowserOptions) {
    let mut call = LoopbackCall::start(Setup {
        browser,
        ..Setup::default()
    })
    .await;
    let transcoding = call.bridge().mode().is_transcoding();
    // Audio flows meanwhile, as in a real call.
    let audio = if transcoding {
        call.browser.start_sending_opus_tone(60, 440.0)
    } else {
        call.browser.start_sending_pcmu_sine(60, 440.0)
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // From the protocol (`dtmf` message) ...
    call.bridge().send_dtmf("1#").expect("digits accepted");
    assert_eq!(
        call.bridge().send_dtmf("1x"),
        Err(DtmfError::InvalidDigit('x'))
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // ... and in-band from the browser (RTCDTMFSender style: audio paused meanwhile).
    let _ = audio.await;
    call.browser.send_dtmf_event(9).await;
    // The echo brings every event back as the SIP peer's DTMF.
    for want in ['1', '#', '9'] {
        let got = call
            .wait_event(
                Duration::from_secs(5),
                |e| matches!(e, MediaEvent::Dtmf { leg: Leg::Sip, digit } if *digit == want),
            )
            .await;
        assert!(got.is_some(), "DTMF {want} from the SIP side not reported");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = call.peer.seen();
    let received = call.browser.received();
    let (_, all_events) = call.stop().await;

    let at_sip = events_at_sip(&seen);
    assert_eq!(digits(&at_sip), "1#9", "{at_sip:?}");
    // Generated digits: 7 packets each (durations up to 100 ms, three end packets).
    let one: Vec<&EventPayload> = at_sip
        .iter()
        .filter(|(_, e)| e.event == 1)
        .map(|(_, e)| e)
        .collect();
    assert_eq!(one.len(), 7);
    assert_eq!(one.iter().filter(|e| e.end).count(), 3);
    assert_eq!(one.last().map(|e| e.duration), Some(800));
    // Every packet of one event carries the event's timestamp.
    let ts_of = |ev: u8| -> Vec<u32> {
        at_sip
            .iter()
            .filter(|(_, e)| e.event == ev)
            .map(|(t, _)| *t)
            .collect()
    };
    assert!(ts_of(1).windows(2).all(|w| w[0] == w[1]));
    assert!(ts_of(11).windows(2).all(|w| w[0] == w[1]));
    assert_ne!(ts_of(1)[0], ts_of(11)[0]);
    // Sequence numbers toward the SIP side stay gap-free with events interleaved.
    let mut seqs: Vec<u16> = seen.iter().map(|p| p.sequence_number).collect();
    let first = seqs[0];
    seqs.sort_by_key(|s| s.wrapping_sub(first));
    let gaps = seqs
        .windows(2)
        .filter(|w| w[1] != w[0].wrapping_add(1))
        .count();
    assert_eq!(gaps, 0, "sequence gaps toward the SIP side");
    // And back at the browser on its own telephone-event type.
    let back: Vec<u8> = received
        .iter()
        .filter(|p| p.payload_type == 126)
        .map(|p| p.payload[0])
        .collect();
    for ev in [1u8, 11, 9] {
        assert!(
            back.contains(&ev),
            "event {ev} back at the browser: {back:?}"
        );
    }
    let browser_digits: Vec<char> = all_events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Dtmf {
                leg: Leg::Browser,
                digit,
            } => Some(*digit),
            _ => None,
        })
        .collect();
    assert_eq!(
        browser_digits,
        vec!['9'],
        "in-band DTMF from the browser reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_both_ways_when_relaying() {
    dtmf_both_ways(BrowserOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_both_ways_when_transcoding() {
    dtmf_both_ways(BrowserOptions::opus_only()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_gives_the_sip_leg_an_rtt_and_quality_is_reported() {
    let mut call = LoopbackCall::start(Setup {
        peer: PeerOptions {
            rtcp: true,
            ..Default::default()
        },
        config: BridgeConfig {
            stats_interval: Duration::from_millis(1500),
            rtcp_interval: Duration::from_millis(400),
            ..Default::default()
        },
        ..Setup::default()
    })
    .await;
    let audio = call.browser.start_sending_pcmu_sine(200, 440.0);
    let quality = call
        .wait_event(Duration::from_secs(8), |e| match e {
            // Both legs must have carried audio: on a loaded machine ICE and DTLS can
            // take longer than the first report interval, and the SIP peer sends on
            // its own, so an early report may have the SIP leg's figures only.
            MediaEvent::Quality(q) => {
                q.sip.rtt_ms.is_some()
                    && q.sip.packets_received > 0
                    && q.browser.packets_received > 0
            }
            _ => false,
        })
        .await
        .expect("a quality report with the SIP leg's RTT and audio from both legs");
    let MediaEvent::Quality(q) = quality else {
        unreachable!()
    };
    let rtt = q.sip.rtt_ms.unwrap_or_default();
    assert!(rtt < 50.0, "loopback RTT {rtt} ms");
    assert!(
        q.sip.mos > 4.0 && q.browser.mos > 4.0 && q.overall.mos > 4.0,
        "{q:?}"
    );
    assert_eq!(q.sip.loss_pct, 0.0);
    assert!(q.browser.packets_received > 0);
    assert_eq!(call.bridge().quality(), Some(*q));
    let _ = audio.await;
    let rtcp_at_peer = call.peer.rtcp_received();
    let (report, _) = call.stop().await;
    assert!(rtcp_at_peer >= 2, "peer got {rtcp_at_peer} RTCP reports");
    assert!(
        report.stats.rtcp_sent >= 2 && report.stats.rtcp_received >= 1,
        "{:?}",
        report.stats
    );
    assert!(report.quality.sip.rtt_ms.is_some());
    assert!(report.quality.overall.packets_received > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_from_another_port_is_latched() {
    let call = LoopbackCall::start(Setup {
        peer: PeerOptions {
            send_from_other_port: true,
            ..Default::default()
        },
        config: BridgeConfig {
            latch: LatchPolicy {
                symmetric: true,
                window: Duration::from_secs(10),
                window_packets: 50,
            },
            ..Default::default()
        },
        ..Setup::default()
    })
    .await;
    let alt = call.peer.alt_addr.expect("alternate port");
    let sent = call.browser.start_sending_pcmu_sine(50, 440.0);
    assert_eq!(sent.await.expect("sender"), 50);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = call.peer.seen();
    let (_, events) = call.stop().await;
    assert!(
        events.contains(&MediaEvent::Latched(alt)),
        "latched on {alt}: {events:?}"
    );
    let at_sdp = seen.iter().filter(|p| p.socket == 0).count();
    let at_alt = seen.iter().filter(|p| p.socket == 1).count();
    // Two packets go to the SDP address before the echo from the other port latches.
    assert!(
        at_sdp <= 4,
        "{at_sdp} packets still went to the SDP address"
    );
    assert!(
        at_alt >= 40,
        "only {at_alt} packets reached the real source"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_from_another_port_is_dropped_without_symmetric_rtp() {
    // The default: only the SDP's address is the far end.
    let call = LoopbackCall::start(Setup {
        peer: PeerOptions {
            send_from_other_port: true,
            ..Default::default()
        },
        ..Setup::default()
    })
    .await;
    let sent = call.browser.start_sending_pcmu_sine(50, 440.0);
    assert_eq!(sent.await.expect("sender"), 50);
    // Every echo from the other port has arrived once the peer saw all 50 and the
    // bridge counted as many drops.
    let drained = common::sipp::eventually(Duration::from_secs(5), || {
        call.bridge().stats().dropped_foreign_source >= 45
    })
    .await;
    let seen = call.peer.seen();
    let played = call.browser.received().len();
    let (report, events) = call.stop().await;
    assert!(drained, "{:?}", report.stats);
    assert!(
        !events.iter().any(|e| matches!(e, MediaEvent::Latched(_))),
        "{events:?}"
    );
    assert_eq!(played, 0, "nothing from the other port reached the browser");
    assert_eq!(report.stats.to_browser, 0);
    assert!(
        seen.iter().all(|p| p.socket == 0),
        "all our media went to the SDP address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sip_side_times_out() {
    let mut call = LoopbackCall::start(Setup {
        peer: PeerOptions {
            silent_after: Some(10),
            ..Default::default()
        },
        config: BridgeConfig {
            inactivity_timeout: Some(Duration::from_millis(1500)),
            ..Default::default()
        },
        ..Setup::default()
    })
    .await;
    let audio = call.browser.start_sending_pcmu_sine(200, 440.0);
    let event = call
        .wait_event(Duration::from_secs(6), |e| {
            matches!(e, MediaEvent::InactivityTimeout { .. })
        })
        .await
        .expect("inactivity reported");
    assert!(
        matches!(event, MediaEvent::InactivityTimeout { leg: Leg::Sip, silent_for } if silent_for >= Duration::from_millis(1500)),
        "{event:?}"
    );
    // The browser keeps sending: it is not reported (checked in the events below).
    audio.abort();
    let (_, events) = call.stop().await;
    let timeouts = events
        .iter()
        .filter(|e| matches!(e, MediaEvent::InactivityTimeout { .. }))
        .count();
    assert_eq!(timeouts, 1, "{events:?}");
}

/// While we hold the call the far end is not expected to send, so its silence is not
/// reported however long the hold lasts; once we resume and it stays silent, it is.
/// (The supervisor sleeps until a silence could be due, so this also checks that a
/// change of direction wakes it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_far_end_is_silent_only_after_the_call_resumes() {
    let mut call = LoopbackCall::start(Setup {
        peer: PeerOptions {
            silent_after: Some(10),
            ..Default::default()
        },
        config: BridgeConfig {
            inactivity_timeout: Some(Duration::from_millis(1000)),
            ..Default::default()
        },
        ..Setup::default()
    })
    .await;
    call.bridge().set_local_direction(Direction::SendOnly);
    let audio = call.browser.start_sending_pcmu_sine(400, 440.0);
    let is_timeout = |e: &MediaEvent| matches!(e, MediaEvent::InactivityTimeout { .. });
    assert!(
        call.wait_event(Duration::from_millis(2500), is_timeout)
            .await
            .is_none(),
        "nothing reported while held: {:?}",
        call.seen_events
    );
    call.bridge().set_local_direction(Direction::SendRecv);
    let event = call
        .wait_event(Duration::from_secs(5), is_timeout)
        .await
        .expect("reported once the call resumed");
    assert!(
        matches!(event, MediaEvent::InactivityTimeout { leg: Leg::Sip, .. }),
        "{event:?}"
    );
    audio.abort();
    call.stop().await;
}

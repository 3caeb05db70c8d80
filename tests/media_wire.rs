//! What the gateway puts on the wire toward the SIP side, through a running gateway:
//! SIPp does the signalling and its SDP points the media at the test's raw RTP peer
//! (an echo that records every packet), so each header the gateway sends is visible.
//!
//! - the marker bit is set once per talk spurt (first packet, first after a silence),
//!   never copied from a browser that sets it on every packet, relaying and transcoding;
//! - RFC 4733 events we generate while transcoding leave in timeline order with the
//!   audio (sequence numbers in sending order, event timestamps between the audio's);
//! - while the call is on hold (the browser's `hold`, or the far end's re-INVITE with
//!   `sendonly` or `inactive`), no audio of the browser reaches the far end, and after
//!   unhold it does again (continuing the sequence, marker set).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::browser::{
    Browser, BrowserOptions, PT_OPUS, PT_PCMU, PeerOptions, RtpEchoPeer, SeenPacket, frame_number,
    tone_frame,
};
use common::call::TestCall;
use common::gateway::{TestGateway, WsClient, test_config};
use common::sipp::{Sipp, eventually};
use serde_json::json;

/// The far end: SIPp running `scenario` with its SDP at a raw RTP peer.
struct FarEnd {
    sipp: Sipp,
    peer: RtpEchoPeer,
}

impl FarEnd {
    async fn start(scenario: &str, ptime: u32, extra: &[&str]) -> FarEnd {
        let peer = RtpEchoPeer::start(PeerOptions::default()).await;
        let port = peer.addr.port().to_string();
        let ptime = ptime.to_string();
        let mut args = vec!["-key", "rtp_port", &port, "-key", "ptime", &ptime];
        args.extend_from_slice(extra);
        let sipp = Sipp::uas(Some(&Sipp::scenario(scenario)), &args);
        FarEnd { sipp, peer }
    }

    /// Audio (PCMU) packets the peer got, in arrival order.
    fn audio(&self) -> Vec<SeenPacket> {
        self.peer
            .seen()
            .into_iter()
            .filter(|p| p.payload_type == PT_PCMU)
            .collect()
    }
}

/// A gateway routing to `far`, a browser with `options`, and their answered call.
async fn answered_call(
    far: &FarEnd,
    options: BrowserOptions,
) -> (TestGateway, WsClient, Arc<Browser>, TestCall) {
    answered_call_with(far, options, |_| {}).await
}

/// [`answered_call`] with the gateway's config changed by `tweak` first.
async fn answered_call_with(
    far: &FarEnd,
    options: BrowserOptions,
    tweak: impl FnOnce(&mut callbridge::config::Config),
) -> (TestGateway, WsClient, Arc<Browser>, TestCall) {
    let mut config = test_config(Some(far.sipp.addr));
    tweak(&mut config);
    let gw = TestGateway::start(config).await;
    let (mut ws, _) = gw.connect_as("wendy", "calls:outbound").await;
    let browser = Browser::new(options).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "w1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(
        browser.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS up"
    );
    (gw, ws, browser, call)
}

/// Hangs up and checks SIPp's scenario succeeded.
async fn finish(
    gw: TestGateway,
    mut ws: WsClient,
    browser: Arc<Browser>,
    mut call: TestCall,
    mut far: FarEnd,
) {
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    far.sipp
        .wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

/// A 20 ms Opus frame of a 440 Hz tone (48 kHz mono, as a browser encodes).
fn opus_frames(n: usize) -> Vec<Bytes> {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).expect("enc");
    (0..n)
        .map(|k| {
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    let t = (k * 960 + i) as f64 / 48_000.0;
                    (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
                })
                .collect();
            Bytes::from(enc.encode_vec(&pcm, 1500).expect("encode"))
        })
        .collect()
}

/// Sends two talk spurts of 25 packets 600 ms apart, each packet with the marker set
/// (a sender that marks everything), the timestamp running on through the silence.
async fn send_two_spurts(browser: &Browser, opus: bool) {
    let (pt, step) = if opus { (PT_OPUS, 960) } else { (PT_PCMU, 160) };
    let payloads: Vec<Bytes> = if opus {
        opus_frames(50)
    } else {
        (0..50).map(|n| Bytes::from(tone_frame(n))).collect()
    };
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (n, payload) in payloads.into_iter().enumerate() {
        tick.tick().await;
        // The last packet before the silence moves the clock over it (30 frames).
        let ts_step = if n == 24 { step * 31 } else { step };
        assert!(browser.send_rtp(pt, true, ts_step, payload).await);
        if n == 24 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            tick.reset();
        }
    }
}

/// Asserts the marker is set exactly on the first packet and on each packet after a
/// timestamp gap, the deliberate 600 ms silence among them, with a continuous sequence.
fn assert_marker_per_spurt(audio: &[SeenPacket]) {
    assert!(audio.len() >= 40, "only {} packets arrived", audio.len());
    let mut gaps = 0;
    for (i, p) in audio.iter().enumerate() {
        let after_gap = i > 0 && p.timestamp.wrapping_sub(audio[i - 1].timestamp) > 160;
        if i > 0 {
            assert_eq!(
                p.sequence_number,
                audio[i - 1].sequence_number.wrapping_add(1),
                "sequence at {i}"
            );
            if p.timestamp.wrapping_sub(audio[i - 1].timestamp) >= 4000 {
                gaps += 1;
            }
        }
        assert_eq!(
            p.marker,
            i == 0 || after_gap,
            "marker of packet {i} (after a gap: {after_gap})"
        );
    }
    assert_eq!(gaps, 1, "the deliberate silence is on the wire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marker_is_set_once_per_talk_spurt_when_relaying() {
    let far = FarEnd::start("uas_media_at.xml", 20, &[]).await;
    let (gw, ws, browser, call) = answered_call(&far, BrowserOptions::default()).await;
    send_two_spurts(&browser, false).await;
    assert!(eventually(Duration::from_secs(5), || far.audio().len() >= 50).await);
    assert_marker_per_spurt(&far.audio());
    finish(gw, ws, browser, call, far).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marker_is_set_once_per_talk_spurt_when_transcoding() {
    let far = FarEnd::start("uas_media_at.xml", 20, &[]).await;
    let (gw, ws, browser, call) = answered_call(&far, BrowserOptions::opus_only()).await;
    send_two_spurts(&browser, true).await;
    assert!(eventually(Duration::from_secs(5), || far.audio().len() >= 48).await);
    assert_marker_per_spurt(&far.audio());
    finish(gw, ws, browser, call, far).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_dtmf_leaves_in_timeline_order_when_transcoding() {
    // Opus from the browser, 30 ms PCMU to the far end: audio waits in the
    // repacketiser while our digits are due.
    let far = FarEnd::start("uas_media_at.xml", 30, &[]).await;
    let (gw, mut ws, browser, call) = answered_call(&far, BrowserOptions::opus_only()).await;
    let tone = browser.start_sending_opus_tone(200, 440.0);
    assert!(eventually(Duration::from_secs(5), || far.audio().len() >= 10).await);
    ws.send(json!({"type": "dtmf", "call_id": call.call_id, "digits": "1#9"}))
        .await;
    let events = |seen: &[SeenPacket]| {
        let mut starts: Vec<u32> = seen
            .iter()
            .filter(|p| p.payload_type == 101)
            .map(|p| p.timestamp)
            .collect();
        starts.dedup();
        starts.len()
    };
    assert!(
        eventually(Duration::from_secs(5), || {
            events(&far.peer.seen()) == 3
                && far
                    .peer
                    .seen()
                    .iter()
                    .filter(|p| {
                        p.payload_type == 101 && p.payload.get(1).is_some_and(|b| b & 0x80 != 0)
                    })
                    .count()
                    >= 9
        })
        .await,
        "three digits with their end packets reached the far end"
    );
    tone.abort();
    let seen = far.peer.seen();
    for w in seen.windows(2) {
        assert_eq!(
            w[1].sequence_number,
            w[0].sequence_number.wrapping_add(1),
            "sequence numbers in sending order"
        );
    }
    let rel = |p: &SeenPacket| i64::from(p.timestamp.wrapping_sub(seen[0].timestamp) as i32);
    let mut starts = 0;
    for (i, e) in seen.iter().enumerate() {
        let first = e.payload_type == 101
            && !seen[..i]
                .iter()
                .any(|p| p.payload_type == 101 && p.timestamp == e.timestamp);
        if !first {
            continue;
        }
        starts += 1;
        assert!(e.marker, "an event's first packet carries the marker");
        for (j, a) in seen
            .iter()
            .enumerate()
            .filter(|(_, a)| a.payload_type == PT_PCMU)
        {
            assert!(
                if j < i {
                    rel(a) <= rel(e)
                } else {
                    rel(a) >= rel(e)
                },
                "audio {j} at {} vs event {i} at {}",
                rel(a),
                rel(e)
            );
        }
    }
    assert_eq!(starts, 3);
    finish(gw, ws, browser, call, far).await;
}

/// The browser talking: numbered tone frames at 50 packets/s; `next` is the number of
/// the next frame to send.
struct Talker {
    next: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Talker {
    fn start(browser: &Arc<Browser>, frames: u32) -> Talker {
        let next = Arc::new(AtomicU32::new(0));
        let (b, n) = (browser.clone(), next.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for k in 0..frames {
                tick.tick().await;
                b.send_rtp(PT_PCMU, k == 0, 160, Bytes::from(tone_frame(k)))
                    .await;
                n.store(k + 1, Ordering::SeqCst);
            }
        });
        Talker { next, task }
    }

    fn next(&self) -> u32 {
        self.next.load(Ordering::SeqCst)
    }

    /// Waits until frame `k` was sent.
    async fn until(&self, k: u32) {
        assert!(eventually(Duration::from_secs(20), || self.next() >= k).await);
    }
}

/// Frame numbers of the browser's tone the far end received.
fn frames_at(far: &FarEnd) -> Vec<u32> {
    far.audio()
        .iter()
        .filter_map(|p| frame_number(&p.payload))
        .collect()
}

/// Asserts no frame numbered in `held` reached the far end, some frame of `before` and
/// most of `after` did, and the stream resumed as a new segment (next sequence number,
/// marker set).
async fn assert_held(far: &FarEnd, before: u32, held: std::ops::Range<u32>, after: u32) {
    assert!(held.len() >= 25, "the hold lasted {} frames", held.len());
    let resumed = eventually(Duration::from_secs(5), || {
        frames_at(far).iter().filter(|&&n| n >= after).count() >= 40
    })
    .await;
    let frames = frames_at(far);
    let leaked: Vec<u32> = frames
        .iter()
        .copied()
        .filter(|n| held.contains(n))
        .collect();
    assert!(
        leaked.is_empty(),
        "audio sent during hold reached the far end: frames {leaked:?}"
    );
    assert!(
        frames.iter().any(|&n| n < before),
        "audio flowed before hold"
    );
    assert!(resumed, "audio flows again after unhold: {frames:?}");
    let audio = far.audio();
    let first_after = audio
        .iter()
        .position(|p| frame_number(&p.payload).is_some_and(|n| n >= held.start))
        .expect("a frame after the hold");
    let p = &audio[first_after];
    assert!(p.marker, "the first packet after the hold is marked");
    assert_eq!(
        p.sequence_number,
        audio[first_after - 1].sequence_number.wrapping_add(1),
        "the sequence goes on after the hold"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_hold_stops_its_audio_to_the_far_end_until_unhold() {
    let far = FarEnd::start("uas_media_at_held.xml", 20, &[]).await;
    let (gw, mut ws, browser, mut call) = answered_call(&far, BrowserOptions::default()).await;
    let talker = Talker::start(&browser, 300);
    talker.until(40).await;
    ws.send(json!({"type": "hold", "call_id": call.call_id}))
        .await;
    let hold = call.until(&mut ws, &["hold"]).await;
    assert_eq!(hold["by"], "local", "{hold}");
    // Frames sent from here on are after the hold took effect (it does at once).
    let held_from = talker.next() + 1;
    talker.until(held_from + 50).await;
    let held_to = talker.next();
    ws.send(json!({"type": "unhold", "call_id": call.call_id}))
        .await;
    let unhold = call.until(&mut ws, &["unhold"]).await;
    assert_eq!(unhold["by"], "local", "{unhold}");
    let after = talker.next() + 1;
    talker.until(after + 50).await;
    assert_held(&far, 30, held_from..held_to, after).await;
    talker.task.abort();
    finish(gw, ws, browser, call, far).await;
}

/// The far end holds with `direction` (`sendonly` or `inactive`) and takes it back.
/// SIPp holds and unholds on a cue: a DTMF digit sent as SIP INFO (an INFO trunk).
async fn far_end_hold(direction: &str) {
    let far = FarEnd::start(
        "uas_media_at_holds.xml",
        20,
        &["-key", "hold_direction", direction],
    )
    .await;
    let (gw, mut ws, browser, mut call) =
        answered_call_with(&far, BrowserOptions::default(), |c| {
            c.sip.trunks[0].dtmf_mode = "info".into();
        })
        .await;
    let talker = Talker::start(&browser, 500);
    assert!(
        eventually(Duration::from_secs(10), || frames_at(&far).len() >= 20).await,
        "audio flows before the hold"
    );
    let before = talker.next();
    let call_id = call.call_id.clone();
    let cue = |digit: &str| json!({"type": "dtmf", "call_id": call_id, "digits": digit});
    ws.send(cue("1")).await;
    let hold = call.until(&mut ws, &["hold"]).await;
    assert_eq!(hold["by"], "remote", "{hold}");
    // A frame in flight when the hold message left may still go out.
    let held_from = talker.next() + 2;
    talker.until(held_from + 50).await;
    ws.send(cue("2")).await;
    let unhold = call.until(&mut ws, &["unhold"]).await;
    assert_eq!(unhold["by"], "remote", "{unhold}");
    // The gateway applied the unhold before it said so; frames just before may pass.
    let held_to = talker.next().saturating_sub(2);
    let after = talker.next() + 2;
    talker.until(after + 50).await;
    assert_held(&far, before, held_from..held_to, after).await;
    talker.task.abort();
    finish(gw, ws, browser, call, far).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_end_sendonly_hold_stops_our_audio_until_unhold() {
    far_end_hold("sendonly").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_end_inactive_hold_stops_our_audio_until_unhold() {
    far_end_hold("inactive").await;
}

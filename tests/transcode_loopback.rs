//! Transcoding and relay decisions end to end on loopback, without SIP signalling:
//! test browser <-> WebRtcLeg <-> Bridge <-> RtpLeg <-> an RTP echo peer answering as a
//! SIP trunk would. Tone checks decode what the browser received and compare the energy
//! at the tone's frequency with other frequencies (Goertzel), not packet counts.

mod common;
#[path = "common/media.rs"]
mod media;

use std::time::Duration;

use callbridge::media::codec::AudioCodec;
use callbridge::media::g711;
use callbridge::media::negotiate::{LegMedia, MediaMode, browser_preference};
use common::browser::{BrowserOptions, PT_OPUS, SeenPacket, tone_to_noise};
use media::{LoopbackCall, Setup};

/// At least this much stronger at the tone frequency than anywhere else in the band.
const MIN_TONE_TO_NOISE: f64 = 100.0; // 20 dB

/// The SIP side's audio packets (telephone-event excluded).
fn sip_audio(seen: &[SeenPacket]) -> Vec<&SeenPacket> {
    seen.iter().filter(|p| p.payload_type != 101).collect()
}

/// Timestamp steps between consecutive packets of `ts` (wrapping).
fn steps(ts: &[u32]) -> Vec<u32> {
    ts.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_only_client_is_transcoded_to_pcmu_and_the_tone_comes_back() {
    let call = LoopbackCall::start(Setup {
        browser: BrowserOptions::opus_only(),
        ..Setup::default()
    })
    .await;
    assert!(call.answer.contains("opus/48000/2"), "{}", call.answer);
    let mode = call.bridge().mode();
    assert_eq!(
        mode,
        MediaMode::Transcode {
            browser: LegMedia {
                codec: AudioCodec::Opus,
                ptime_ms: 20
            },
            sip: LegMedia {
                codec: AudioCodec::Pcmu,
                ptime_ms: 20
            },
        }
    );
    let sent = call.browser.start_sending_opus_tone(150, 1000.0);
    let sent = tokio::time::timeout(Duration::from_secs(10), sent)
        .await
        .expect("sender in time")
        .expect("sender task");
    assert_eq!(sent, 150);
    assert!(
        call.browser
            .wait_received(120, Duration::from_secs(5))
            .await,
        "echo came back"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (report, _) = call_stop(call).await;

    // The trunk got 20 ms PCMU carrying the tone.
    let seen = report.1;
    let audio = sip_audio(&seen);
    assert!(audio.len() >= 140, "SIP side got {} packets", audio.len());
    assert!(
        audio
            .iter()
            .all(|p| p.payload_type == 0 && p.payload.len() == 160)
    );
    let ts: Vec<u32> = audio.iter().map(|p| p.timestamp).collect();
    assert!(steps(&ts).iter().all(|&d| d == 160), "8 kHz timestamps");
    let pcm: Vec<f64> = audio[10..]
        .iter()
        .flat_map(|p| {
            p.payload
                .iter()
                .map(|&c| f64::from(g711::ulaw_to_linear(c)))
        })
        .collect();
    let sip_ratio = tone_to_noise(&pcm, 8000.0, 1000.0);
    eprintln!("1 kHz tone/noise: SIP side {sip_ratio:.0}");
    assert!(
        sip_ratio > MIN_TONE_TO_NOISE,
        "SIP side tone/noise {sip_ratio}"
    );

    // The browser got Opus back, 48 kHz timestamps, and the tone in it.
    let (rate, pcm) = report.2;
    assert_eq!(rate, 48_000);
    assert!(pcm.len() > 48_000 * 2, "{} samples back", pcm.len());
    let ratio = tone_to_noise(&pcm[9600..], 48_000.0, 1000.0);
    eprintln!("1 kHz tone/noise: back at the browser {ratio:.0}");
    assert!(ratio > MIN_TONE_TO_NOISE, "browser tone/noise {ratio}");
    let ts = report.3;
    assert!(steps(&ts).iter().all(|&d| d == 960), "48 kHz timestamps");

    let stats = report.0.stats;
    assert!(stats.work_to_sip.decoded >= 140, "{stats:?}");
    assert!(stats.work_to_sip.encoded >= 140);
    assert!(stats.work_to_browser.decoded >= 120);
    assert!(stats.work_to_browser.encoded >= 120);
    assert_eq!(report.0.mode, mode);
}

/// What the tests look at after a call: the report, what the SIP side saw, the
/// browser's decoded audio, and the timestamps of the audio the browser received.
type Outcome = (
    callbridge::media::bridge::BridgeReport,
    Vec<SeenPacket>,
    (u32, Vec<f64>),
    Vec<u32>,
);

/// Stops `call` and collects its [`Outcome`].
async fn call_stop(call: LoopbackCall) -> (Outcome, Vec<callbridge::media::bridge::MediaEvent>) {
    let seen = call.peer.seen();
    let pcm = call.browser.received_pcm();
    let mut received = call.browser.received();
    if let Some(first) = received.first().map(|p| p.sequence_number) {
        received.sort_by_key(|p| p.sequence_number.wrapping_sub(first));
    }
    let ts = received
        .iter()
        .filter(|p| p.payload_type == PT_OPUS || p.payload_type == 0)
        .map(|p| p.timestamp)
        .collect();
    let (report, events) = call.stop().await;
    ((report, seen, pcm, ts), events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_on_both_legs_is_relayed_without_codec_work() {
    let call = LoopbackCall::start(Setup::default()).await;
    assert!(call.answer.contains("PCMU/8000"));
    assert!(!call.bridge().mode().is_transcoding());
    let sent = call.browser.start_sending_pcmu_sine(100, 700.0);
    assert_eq!(sent.await.expect("sender"), 100);
    assert!(call.browser.wait_received(90, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ((report, seen, (rate, pcm), _), _) = call_stop(call).await;
    assert_eq!(
        report.stats.codec_frames(),
        0,
        "a relayed call decodes and encodes nothing: {:?}",
        report.stats
    );
    assert_eq!(report.stats.work_to_sip, Default::default());
    assert_eq!(report.stats.work_to_browser, Default::default());
    assert!(report.stats.to_sip >= 100 && report.stats.to_browser >= 90);
    assert_eq!(report.mode.as_str(), "relay");
    assert!(sip_audio(&seen).iter().all(|p| p.payload.len() == 160));
    assert_eq!(rate, 8000);
    assert!(tone_to_noise(&pcm, 8000.0, 700.0) > MIN_TONE_TO_NOISE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_ms_trunk_is_repacketised_both_ways() {
    let call = LoopbackCall::start(Setup {
        sip_ptime: Some(30),
        ..Setup::default()
    })
    .await;
    let mode = call.bridge().mode();
    assert!(mode.is_transcoding(), "{mode}");
    assert_eq!(mode.sip().ptime_ms, 30);
    let sent = call.browser.start_sending_pcmu_sine(150, 500.0);
    assert_eq!(sent.await.expect("sender"), 150);
    assert!(
        call.browser
            .wait_received(120, Duration::from_secs(5))
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ((report, seen, (rate, pcm), ts), _) = call_stop(call).await;
    let audio = sip_audio(&seen);
    assert!(audio.len() >= 90, "{} packets", audio.len());
    assert!(
        audio.iter().all(|p| p.payload.len() == 240),
        "30 ms toward the trunk"
    );
    let sip_ts: Vec<u32> = audio.iter().map(|p| p.timestamp).collect();
    assert!(steps(&sip_ts).iter().all(|&d| d == 240));
    // Back toward the browser in 20 ms packets, continuous timestamps, tone intact.
    assert!(steps(&ts).iter().all(|&d| d == 160), "{:?}", steps(&ts));
    assert_eq!(rate, 8000);
    let ratio = tone_to_noise(&pcm[1600..], 8000.0, 500.0);
    assert!(ratio > MIN_TONE_TO_NOISE, "tone/noise {ratio}");
    assert!(report.stats.codec_frames() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_trunk_relays_opus_untouched() {
    let opus_trunk = [AudioCodec::Opus, AudioCodec::Pcmu];
    let call = LoopbackCall::start(Setup {
        browser_codecs: browser_preference(&opus_trunk),
        sip_offer: opus_trunk.to_vec(),
        sip_codec: AudioCodec::Opus,
        ..Setup::default()
    })
    .await;
    assert!(call.answer.contains("opus/48000/2"), "{}", call.answer);
    assert!(call.sip_offer.contains("a=rtpmap:96 opus/48000/2"));
    let mode = call.bridge().mode();
    assert_eq!(mode.as_str(), "relay", "{mode}");
    let sent = call.browser.start_sending_opus_tone(100, 600.0);
    assert_eq!(sent.await.expect("sender"), 100);
    assert!(call.browser.wait_received(90, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ((report, seen, (rate, pcm), _), _) = call_stop(call).await;
    assert_eq!(report.stats.codec_frames(), 0, "{:?}", report.stats);
    assert!(sip_audio(&seen).iter().all(|p| p.payload_type == 96));
    assert_eq!(rate, 48_000);
    let ratio = tone_to_noise(&pcm[9600..], 48_000.0, 600.0);
    assert!(ratio > MIN_TONE_TO_NOISE, "tone/noise {ratio}");
}

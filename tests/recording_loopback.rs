//! Call recording end to end on loopback (no SIP signalling): the browser talks, the
//! SIP side echoes; the bridge writes a stereo WAV whose length matches the call and
//! whose two channels carry the two directions.

mod common;
#[path = "common/media.rs"]
mod media;

use std::time::{Duration, Instant};

use callbridge::media::bridge::{BridgeConfig, MediaEvent};
use callbridge::media::recording::RecordingTarget;
use common::browser::{BrowserOptions, tone_to_noise};
use media::{LoopbackCall, Setup};

/// A parsed 16-bit stereo WAV.
struct Wav {
    channels: u16,
    rate: u32,
    left: Vec<f64>,
    right: Vec<f64>,
}

fn read_wav(bytes: &[u8]) -> Wav {
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    assert_eq!(&bytes[36..40], b"data");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    assert_eq!(u32_at(4) as usize, bytes.len() - 8, "RIFF size");
    let data = u32_at(40) as usize;
    assert_eq!(data, bytes.len() - 44, "data size");
    assert_eq!(u16_at(34), 16, "bits per sample");
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for f in bytes[44..].chunks_exact(4) {
        left.push(f64::from(i16::from_le_bytes([f[0], f[1]])));
        right.push(f64::from(i16::from_le_bytes([f[2], f[3]])));
    }
    Wav {
        channels: u16_at(22),
        rate: u32_at(24),
        left,
        right,
    }
}

fn rms(x: &[f64]) -> f64 {
    (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

async fn record(browser: BrowserOptions) {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = RecordingTarget::in_dir(&dir.path().join("recordings"), "call/1", 10 << 20);
    let call = LoopbackCall::start(Setup {
        browser: browser.clone(),
        config: BridgeConfig {
            recording: Some(target.clone()),
            ..Default::default()
        },
        ..Setup::default()
    })
    .await;
    let started = call.started;
    // About 2.5 s of talk, then 0.5 s of silence before hanging up.
    let talk = if browser.offer_pcmu {
        call.browser.start_sending_pcmu_sine(125, 600.0)
    } else {
        call.browser.start_sending_opus_tone(125, 600.0)
    };
    assert_eq!(talk.await.expect("talk"), 125);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (report, events) = call.stop().await;
    let call_duration = Instant::now().duration_since(started);

    let info = report
        .recording
        .expect("recording requested")
        .expect("recording written");
    assert_eq!(info.path, target.path);
    assert!(!info.truncated);
    assert!(
        events.contains(&MediaEvent::RecordingFinished(Box::new(info.clone()))),
        "{events:?}"
    );
    let bytes = std::fs::read(&info.path).expect("WAV exists");
    assert_eq!(bytes.len() as u64, info.bytes);
    let wav = read_wav(&bytes);
    assert_eq!((wav.channels, wav.rate), (2, 8000));
    let wav_duration = Duration::from_secs_f64(wav.left.len() as f64 / 8000.0);
    assert_eq!(wav_duration.as_millis(), info.duration.as_millis());
    let diff = call_duration.abs_diff(wav_duration);
    assert!(
        diff <= Duration::from_millis(200),
        "WAV {wav_duration:?} vs call {call_duration:?}"
    );
    // Both channels carry the tone (browser left, far-end echo right), not silence.
    for (name, ch) in [("left", &wav.left), ("right", &wav.right)] {
        let talk = &ch[4000..20_000];
        assert!(rms(talk) > 1000.0, "{name} channel rms {}", rms(talk));
        let ratio = tone_to_noise(talk, 8000.0, 600.0);
        assert!(ratio > 100.0, "{name} tone/noise {ratio}");
    }
    // The echo comes back later than the original: the right channel's tone starts
    // after the left one's, by less than a second (a pure tone makes correlation
    // ambiguous, so compare onsets; the bound is loose for loaded machines).
    let onset = |ch: &[f64]| {
        ch.iter()
            .position(|x| x.abs() > 2000.0)
            .expect("tone present")
    };
    let (left_on, right_on) = (onset(&wav.left), onset(&wav.right));
    assert!(
        right_on >= left_on && right_on - left_on < 8000,
        "onsets: left {left_on}, right {right_on} samples"
    );
    // Both end in silence (the last 0.3 s).
    let tail = wav.left.len() - 2400;
    assert!(rms(&wav.left[tail..]) < 50.0 && rms(&wav.right[tail..]) < 50.0);
}

/// The shift (in samples, 0..=2000) that best aligns `b` with `a` (cross-correlation on
/// signs to be robust to codec gain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_call_is_recorded_as_stereo_wav() {
    record(BrowserOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoded_call_is_recorded_as_stereo_wav() {
    record(BrowserOptions::opus_only()).await;
}

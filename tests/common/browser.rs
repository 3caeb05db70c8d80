//! A test "browser": a `webrtc` peer connection that offers audio the way a browser
//! does (PCMU, PCMA, telephone-event, optionally Opus first, or Opus only), gathers only
//! on 127.0.0.1 (or another `bind_ip`) with no STUN server, trickles its candidates through a channel, sends
//! recognisable 20 ms PCMU tone frames or an Opus-encoded sine, sends RFC 4733 events,
//! and records every RTP packet it receives (and decodes them for tone checks).
//!
//! Also here, for media-level tests without SIP: [`RtpEchoPeer`], a stand-in for the SIP
//! peer's media (SIPp `-rtp_echo`-like) that can answer RTCP, send from another port
//! (NAT), restart its stream or fall silent; and [`tone_to_noise`], a Goertzel check
//! that a signal is dominated by one frequency.
//!
//! ```ignore
//! let browser = Browser::new(BrowserOptions::default()).await;
//! let offer = browser.offer_sdp();            // to the gateway
//! browser.set_answer(&answer).await;          // from the gateway
//! let mut cands = browser.take_candidates();  // trickle to the gateway
//! browser.add_remote_candidate(c).await;      // trickled from the gateway
//! let sent = browser.start_sending_tone(100).await.unwrap();
//! let got = browser.received();
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use callbridge::media::g711;
use callbridge::media::webrtc_leg::IceCandidate;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU, MIME_TYPE_TELEPHONE_EVENT,
};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::shared::marshal::Unmarshal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer,
    RTCIceTransportPolicy, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder, configure_rtcp_reports,
};

/// PCMU payload type (static).
pub const PT_PCMU: u8 = 0;
/// Opus payload type of the test browser.
pub const PT_OPUS: u8 = 111;
/// Samples in one 20 ms G.711 frame.
pub const FRAME_SAMPLES: usize = 160;
/// Bytes at the start of a tone frame that carry the frame number.
const COUNTER_BYTES: usize = 4;

/// How the test browser builds its offer.
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    /// Offer Opus (pt 111) before the G.711 codecs, as Chrome does.
    pub offer_opus: bool,
    /// Offer PCMU (pt 0).
    pub offer_pcmu: bool,
    /// Offer PCMA (pt 8) after PCMU.
    pub offer_pcma: bool,
    /// Payload type of `telephone-event/8000` (Chrome uses 126).
    pub dtmf_payload_type: u8,
    /// ICE servers as handed out in `ready.ice_servers` (never a public one).
    pub ice_servers: Vec<RTCIceServer>,
    /// Gather relay candidates only (ICE transport policy `relay`).
    pub relay_only: bool,
    /// The address host candidates are gathered on (127.0.0.1; the load tool uses a
    /// non-loopback one for peers that skip loopback, such as Janus).
    pub bind_ip: std::net::IpAddr,
    /// Send RTCP reports every 5 s and ICE keepalives after 5 s without media, as
    /// Chrome does for audio, instead of the `webrtc` crate's 1 s and 2 s (the load
    /// tool's `--chrome-timers`: an idle call's wake-ups depend on them).
    pub chrome_timers: bool,
}

/// RTCP report interval and ICE keepalive interval of [`BrowserOptions::chrome_timers`].
const CHROME_TIMER: Duration = Duration::from_secs(5);

impl Default for BrowserOptions {
    fn default() -> Self {
        BrowserOptions {
            offer_opus: true,
            offer_pcmu: true,
            offer_pcma: true,
            dtmf_payload_type: 126,
            ice_servers: Vec::new(),
            relay_only: false,
            bind_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            chrome_timers: false,
        }
    }
}

impl BrowserOptions {
    /// A client that offers only Opus (and telephone-event).
    pub fn opus_only() -> Self {
        BrowserOptions {
            offer_opus: true,
            offer_pcmu: false,
            offer_pcma: false,
            ..BrowserOptions::default()
        }
    }
}

/// One RTP packet as the browser received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPacket {
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence_number: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// SSRC.
    pub ssrc: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload bytes.
    pub payload: Bytes,
    /// When it arrived (read from the track).
    pub arrived: std::time::Instant,
}

/// Callbacks of the browser's peer connection.
struct Handler {
    candidates: mpsc::UnboundedSender<Option<IceCandidate>>,
    connected: watch::Sender<bool>,
    received: Arc<Mutex<Vec<ReceivedPacket>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.candidates.send(Some(IceCandidate {
                candidate: init.candidate,
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            }));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.candidates.send(None);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            self.connected.send_replace(true);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        let h = &p.header;
                        let packet = ReceivedPacket {
                            payload_type: h.payload_type,
                            sequence_number: h.sequence_number,
                            timestamp: h.timestamp,
                            ssrc: h.ssrc,
                            marker: h.marker,
                            payload: p.payload.clone(),
                            arrived: std::time::Instant::now(),
                        };
                        if let Ok(mut r) = received.lock() {
                            r.push(packet);
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// A WebRTC peer standing in for a browser in tests.
pub struct Browser {
    pc: Arc<dyn PeerConnection>,
    offer_sdp: String,
    candidates: Mutex<Option<mpsc::UnboundedReceiver<Option<IceCandidate>>>>,
    connected: watch::Receiver<bool>,
    received: Arc<Mutex<Vec<ReceivedPacket>>>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    next_seq: AtomicU16,
    next_ts: AtomicU32,
    options: BrowserOptions,
}

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate,
        channels,
        sdp_fmtp_line: fmtp.to_owned(),
        rtcp_feedback: vec![],
    }
}

impl Browser {
    /// Builds the peer connection on 127.0.0.1 and creates the offer (gathering starts).
    pub async fn new(options: BrowserOptions) -> Arc<Browser> {
        Self::build(options, None).await
    }

    /// A browser answering the gateway's offer for an incoming call; its answer is
    /// [`Browser::offer_sdp`] (the local description, whichever side made it).
    pub async fn answering(offer: &str) -> Arc<Browser> {
        Self::build(BrowserOptions::default(), Some(offer)).await
    }

    async fn build(options: BrowserOptions, remote_offer: Option<&str>) -> Arc<Browser> {
        let mut engine = MediaEngine::default();
        let mut reg = |c: RTCRtpCodec, pt: u8| {
            engine
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: c,
                        payload_type: pt,
                    },
                    RtpCodecKind::Audio,
                )
                .expect("register codec");
        };
        if options.offer_opus {
            reg(
                codec(MIME_TYPE_OPUS, 48000, 2, "minptime=10;useinbandfec=1"),
                PT_OPUS,
            );
        }
        if options.offer_pcmu {
            reg(codec(MIME_TYPE_PCMU, 8000, 0, ""), PT_PCMU);
        }
        if options.offer_pcma {
            reg(codec(MIME_TYPE_PCMA, 8000, 0, ""), 8);
        }
        reg(
            codec(MIME_TYPE_TELEPHONE_EVENT, 8000, 0, "0-16"),
            options.dtmf_payload_type,
        );

        let (cand_tx, cand_rx) = mpsc::unbounded_channel();
        let (conn_tx, conn_rx) = watch::channel(false);
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(Handler {
            candidates: cand_tx,
            connected: conn_tx,
            received: received.clone(),
        });
        let policy = if options.relay_only {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        };
        let (registry, settings) = if options.chrome_timers {
            // RTCP sender and receiver reports only (what Chrome sends for audio).
            let registry = callbridge::media::webrtc_setup::audio_interceptors(CHROME_TIMER);
            let settings = SettingEngineBuilder::new()
                .with_ice_timeouts(None, None, Some(CHROME_TIMER))
                .build();
            (registry, settings)
        } else {
            (
                configure_rtcp_reports(Registry::new()),
                SettingEngineBuilder::new().build(),
            )
        };
        let pc = PeerConnectionBuilder::new()
            .with_setting_engine(settings)
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(options.ice_servers.clone())
                    .with_ice_transport_policy(policy)
                    .build(),
            )
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(vec![SocketAddr::new(options.bind_ip, 0).to_string()])
            .build()
            .await
            .expect("browser peer connection");
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "browser-stream".to_owned(),
            "browser-audio".to_owned(),
            "browser-audio".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                // No codec: naming one would make it the only codec in the offer.
                ..Default::default()
            }],
        )));
        let local: Arc<dyn TrackLocal> = track.clone();
        pc.add_track(local).await.expect("add browser track");
        let description = match remote_offer {
            None => pc.create_offer(None).await.expect("create offer"),
            Some(offer) => {
                let offer = RTCSessionDescription::offer(offer.to_owned()).expect("offer");
                pc.set_remote_description(offer)
                    .await
                    .expect("apply gateway offer");
                pc.create_answer(None).await.expect("create answer")
            }
        };
        let offer_sdp = description.sdp.clone();
        pc.set_local_description(description)
            .await
            .expect("set local description");

        Arc::new(Browser {
            pc,
            offer_sdp,
            candidates: Mutex::new(Some(cand_rx)),
            connected: conn_rx,
            received,
            track,
            ssrc,
            next_seq: AtomicU16::new(rand::random()),
            next_ts: AtomicU32::new(rand::random()),
            options,
        })
    }

    /// The SDP offer to give the gateway.
    pub fn offer_sdp(&self) -> &str {
        &self.offer_sdp
    }

    /// The SSRC the browser sends with.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The options the browser was built with.
    pub fn options(&self) -> &BrowserOptions {
        &self.options
    }

    /// The channel of trickled local candidates (`None` = end of candidates); once.
    pub fn take_candidates(&self) -> mpsc::UnboundedReceiver<Option<IceCandidate>> {
        self.candidates
            .lock()
            .unwrap()
            .take()
            .expect("candidates already taken")
    }

    /// Applies the gateway's SDP answer.
    pub async fn set_answer(&self, sdp: &str) {
        let answer = RTCSessionDescription::answer(sdp.to_owned()).expect("parse answer");
        self.pc
            .set_remote_description(answer)
            .await
            .expect("set remote answer");
    }

    /// Adds a candidate trickled by the gateway.
    pub async fn add_remote_candidate(&self, c: IceCandidate) {
        let init = RTCIceCandidateInit {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            ..Default::default()
        };
        self.pc
            .add_ice_candidate(init)
            .await
            .expect("browser add_ice_candidate");
    }

    /// Waits until ICE+DTLS are up; false on timeout.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let mut rx = self.connected.clone();
        matches!(
            tokio::time::timeout(within, rx.wait_for(|c| *c)).await,
            Ok(Ok(_))
        )
    }

    /// Sends one RTP packet with the next sequence number and the given timestamp step.
    pub async fn send_rtp(
        &self,
        payload_type: u8,
        marker: bool,
        ts_step: u32,
        payload: Bytes,
    ) -> bool {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let ts = self.next_ts.fetch_add(ts_step, Ordering::SeqCst);
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker,
                payload_type,
                sequence_number: seq,
                timestamp: ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        };
        self.track.write_rtp(packet).await.is_ok()
    }

    /// Sends `frames` tone frames at 50 packets/s; the task returns the payloads sent.
    pub fn start_sending_tone(self: &Arc<Self>, frames: u32) -> JoinHandle<Vec<Bytes>> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut sent = Vec::with_capacity(frames as usize);
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for n in 0..frames {
                tick.tick().await;
                let payload = Bytes::from(tone_frame(n));
                if me
                    .send_rtp(PT_PCMU, n == 0, FRAME_SAMPLES as u32, payload.clone())
                    .await
                {
                    sent.push(payload);
                }
            }
            sent
        })
    }

    /// Sends `frames` 20 ms Opus frames of a `freq` Hz sine (48 kHz mono encoder, as a
    /// browser does) at 50 packets/s; the task returns how many were sent.
    pub fn start_sending_opus_tone(self: &Arc<Self>, frames: u32, freq: f64) -> JoinHandle<u32> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
                .expect("opus encoder");
            enc.set_inband_fec(true).expect("fec");
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut sent = 0;
            for n in 0..frames {
                tick.tick().await;
                let pcm: Vec<i16> = (0..960)
                    .map(|i| {
                        let t = f64::from(n * 960 + i) / 48_000.0;
                        (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
                    })
                    .collect();
                let payload = enc.encode_vec(&pcm, 1500).expect("encode");
                if me
                    .send_rtp(PT_OPUS, n == 0, 960, Bytes::from(payload))
                    .await
                {
                    sent += 1;
                }
            }
            sent
        })
    }

    /// Sends `frames` 20 ms PCMU frames of a `freq` Hz sine (no frame counter) at 50
    /// packets/s; the task returns how many were sent.
    pub fn start_sending_pcmu_sine(self: &Arc<Self>, frames: u32, freq: f64) -> JoinHandle<u32> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut sent = 0;
            for n in 0..frames {
                tick.tick().await;
                let payload: Vec<u8> = (0..FRAME_SAMPLES as u32)
                    .map(|i| {
                        let t = f64::from(n * FRAME_SAMPLES as u32 + i) / 8000.0;
                        g711::linear_to_ulaw(
                            (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16,
                        )
                    })
                    .collect();
                if me
                    .send_rtp(PT_PCMU, n == 0, FRAME_SAMPLES as u32, Bytes::from(payload))
                    .await
                {
                    sent += 1;
                }
            }
            sent
        })
    }

    /// Sends one RFC 4733 event (`event` 0-15) as three packets, 20 ms apart, the last
    /// with the end bit, all with the same timestamp (the stream's clock does not move).
    pub async fn send_dtmf_event(&self, event: u8) {
        let pt = self.options.dtmf_payload_type;
        for (i, end) in [(0u16, false), (1, false), (2, true)] {
            let dur = (i + 1) * 160;
            let payload = [
                event,
                if end { 0x80 } else { 0 } | 10,
                (dur >> 8) as u8,
                dur as u8,
            ];
            assert!(
                self.send_rtp(pt, i == 0, 0, Bytes::copy_from_slice(&payload))
                    .await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The audio received so far, decoded in sequence order: (sample rate, samples).
    /// Opus (pt 111) decodes at 48 kHz, PCMU at 8 kHz; other payload types are skipped.
    pub fn received_pcm(&self) -> (u32, Vec<f64>) {
        let mut packets: Vec<ReceivedPacket> = self
            .received()
            .into_iter()
            .filter(|p| p.payload_type == PT_OPUS || p.payload_type == PT_PCMU)
            .collect();
        // Sequence order, wrap-aware relative to the first packet.
        if let Some(first) = packets.first().map(|p| p.sequence_number) {
            packets.sort_by_key(|p| p.sequence_number.wrapping_sub(first));
        }
        let opus = packets.first().is_some_and(|p| p.payload_type == PT_OPUS);
        if opus {
            let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).expect("decoder");
            let mut buf = vec![0i16; 5760];
            let mut out = Vec::new();
            for p in packets.iter().filter(|p| p.payload_type == PT_OPUS) {
                if let Ok(n) = dec.decode(&p.payload, &mut buf, false) {
                    out.extend(buf[..n].iter().map(|&s| f64::from(s)));
                }
            }
            (48_000, out)
        } else {
            let out = packets
                .iter()
                .flat_map(|p| {
                    p.payload
                        .iter()
                        .map(|&c| f64::from(g711::ulaw_to_linear(c)))
                })
                .collect();
            (8000, out)
        }
    }

    /// Every RTP packet received so far, in arrival order.
    pub fn received(&self) -> Vec<ReceivedPacket> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `count` packets were received; false on timeout.
    pub async fn wait_received(&self, count: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.received.lock().unwrap().len() >= count {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The type of the local candidate of the selected ICE pair (`host`, `relay`, …).
    pub async fn selected_local_candidate_type(&self) -> Option<String> {
        use webrtc::peer_connection::{RTCStatsReportEntry, StatsSelector};
        let report = self
            .pc
            .get_stats(std::time::Instant::now(), StatsSelector::None)
            .await;
        // The selected pair per the transport stats, else the pair that carried media.
        let selected = report
            .transport()
            .map(|t| t.selected_candidate_pair_id.clone())
            .filter(|id| !id.is_empty());
        let pair = match selected {
            Some(id) => report.candidate_pairs().find(|p| p.stats.id == id),
            None => report.candidate_pairs().max_by_key(|p| p.bytes_sent),
        };
        let local_id = pair?.local_candidate_id.clone();
        report.iter().find_map(|e| match e {
            // webrtc 0.21 prefixes the candidate's own stats id ("RTCLocalIceCandidate_")
            // but not the pair's reference to it.
            RTCStatsReportEntry::LocalCandidate(c) if c.stats.id.ends_with(&local_id) => {
                Some(c.candidate_type.to_string().to_lowercase())
            }
            _ => None,
        })
    }

    /// Closes the peer connection.
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// Frame `n` of a 400 Hz µ-law tone (phase-continuous) whose first 4 bytes encode `n`,
/// one nibble per byte as a loud µ-law code (0x80..=0x8F) that survives µ->A->µ.
pub fn tone_frame(n: u32) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_SAMPLES);
    for i in 0..FRAME_SAMPLES {
        if i < COUNTER_BYTES {
            let nibble = (n >> (4 * (COUNTER_BYTES - 1 - i))) & 0xF;
            frame.push(0x80 | nibble as u8);
        } else {
            let t = (n as usize * FRAME_SAMPLES + i) as f64 / 8000.0;
            let sample = (8000.0 * (2.0 * std::f64::consts::PI * 400.0 * t).sin()) as i16;
            frame.push(g711::linear_to_ulaw(sample));
        }
    }
    frame
}

/// The frame number encoded by [`tone_frame`], if the payload looks like one.
pub fn frame_number(payload: &[u8]) -> Option<u32> {
    if payload.len() != FRAME_SAMPLES {
        return None;
    }
    payload[..COUNTER_BYTES].iter().try_fold(0u32, |acc, &b| {
        (b & 0xF0 == 0x80).then_some((acc << 4) | u32::from(b & 0x0F))
    })
}

/// Goertzel power of `freq` in `x` sampled at `rate`.
pub fn goertzel(x: &[f64], rate: f64, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

/// How much stronger `freq` is than the strongest of a set of other frequencies across
/// the telephone band (300-3400 Hz, none within 150 Hz of `freq` or its harmonics).
pub fn tone_to_noise(x: &[f64], rate: f64, freq: f64) -> f64 {
    let target = goertzel(x, rate, freq);
    let others = (0..32)
        .map(|k| 300.0 + 100.0 * f64::from(k))
        .filter(|f| {
            let k = (f / freq).round().max(1.0);
            (f - k * freq).abs() > 150.0
        })
        .map(|f| goertzel(x, rate, f))
        .fold(0.0f64, f64::max);
    target / others.max(1e-9)
}

/// One RTP packet as the [`RtpEchoPeer`] saw it.
#[derive(Debug, Clone)]
pub struct SeenPacket {
    /// Which of the peer's sockets got it (0: the SDP address, 1: the alternate).
    pub socket: usize,
    /// Payload type.
    pub payload_type: u8,
    /// SSRC.
    pub ssrc: u32,
    /// Sequence number.
    pub sequence_number: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload.
    pub payload: Bytes,
}

/// How the [`RtpEchoPeer`] behaves.
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// Echo from a second socket (its media really comes from elsewhere than its SDP).
    pub send_from_other_port: bool,
    /// Stop echoing (and answering RTCP) after this many packets.
    pub silent_after: Option<usize>,
    /// Answer our RTCP SRs with an RR on the RTCP port (SDP port + 1).
    pub rtcp: bool,
}

/// A stand-in for the SIP peer's media: echoes every RTP packet to its source.
pub struct RtpEchoPeer {
    /// The SDP address (RTP).
    pub addr: SocketAddr,
    /// The alternate socket's address, when sending from another port.
    pub alt_addr: Option<SocketAddr>,
    seen: Arc<Mutex<Vec<SeenPacket>>>,
    rtcp_seen: Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl RtpEchoPeer {
    /// Binds on 127.0.0.1 (an even port with its RTCP port free when `rtcp`).
    pub async fn start(options: PeerOptions) -> RtpEchoPeer {
        use tokio::net::UdpSocket;
        let (main, rtcp) = loop {
            let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind peer");
            let port = s.local_addr().expect("addr").port();
            if !options.rtcp {
                break (s, None);
            }
            if port % 2 == 0
                && let Ok(r) = UdpSocket::bind(("127.0.0.1", port + 1)).await
            {
                break (s, Some(r));
            }
        };
        let main = Arc::new(main);
        let addr = main.local_addr().expect("addr");
        let alt = if options.send_from_other_port {
            Some(Arc::new(
                UdpSocket::bind("127.0.0.1:0").await.expect("bind alt"),
            ))
        } else {
            None
        };
        let alt_addr = alt.as_ref().map(|a| a.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let sockets: Vec<(usize, Arc<UdpSocket>)> = std::iter::once((0, main.clone()))
            .chain(alt.iter().map(|a| (1, a.clone())))
            .collect();
        let reply_from = alt.clone().unwrap_or_else(|| main.clone());
        for (index, socket) in sockets {
            let seen = seen.clone();
            let count = count.clone();
            let reply_from = reply_from.clone();
            let silent_after = options.silent_after;
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                    let Ok(p) = rtp::Packet::unmarshal(&mut &buf[..n]) else {
                        continue;
                    };
                    let h = &p.header;
                    seen.lock().unwrap().push(SeenPacket {
                        socket: index,
                        payload_type: h.payload_type,
                        ssrc: h.ssrc,
                        sequence_number: h.sequence_number,
                        timestamp: h.timestamp,
                        marker: h.marker,
                        payload: p.payload.clone(),
                    });
                    let k = count.fetch_add(1, Ordering::SeqCst) + 1;
                    if silent_after.is_some_and(|s| k > s) {
                        continue;
                    }
                    let _ = reply_from.send_to(&buf[..n], from).await;
                }
            }));
        }
        let rtcp_seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        if let Some(rtcp) = rtcp {
            let rtcp_seen = rtcp_seen.clone();
            let count = count.clone();
            let silent_after = options.silent_after;
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while let Ok((n, from)) = rtcp.recv_from(&mut buf).await {
                    rtcp_seen.fetch_add(1, Ordering::SeqCst);
                    if silent_after.is_some_and(|s| count.load(Ordering::SeqCst) > s) {
                        continue;
                    }
                    if let Some(rr) = receiver_report_for(&buf[..n]) {
                        let _ = rtcp.send_to(&rr, from).await;
                    }
                }
            }));
        }
        RtpEchoPeer {
            addr,
            alt_addr,
            seen,
            rtcp_seen,
            tasks,
        }
    }

    /// The SDP answer a SIP peer at this address would send: `codec` plus
    /// telephone-event 101, optionally with `a=ptime`.
    pub fn answer_sdp(
        &self,
        codec: callbridge::media::codec::AudioCodec,
        ptime: Option<u32>,
    ) -> String {
        let (pt, map) = match codec.static_payload_type() {
            Some(pt) => (pt, format!("{}/8000", codec.encoding_name())),
            None => (96, "opus/48000/2".to_owned()),
        };
        let ptime = ptime
            .map(|p| format!("a=ptime:{p}\r\n"))
            .unwrap_or_default();
        format!(
            "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {pt} 101\r\na=rtpmap:{pt} {map}\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n{ptime}a=sendrecv\r\n",
            ip = self.addr.ip(),
            port = self.addr.port(),
        )
    }

    /// Every RTP packet seen so far.
    pub fn seen(&self) -> Vec<SeenPacket> {
        self.seen.lock().unwrap().clone()
    }

    /// RTCP datagrams received on the RTCP port.
    pub fn rtcp_received(&self) -> usize {
        self.rtcp_seen.load(Ordering::SeqCst)
    }
}

impl Drop for RtpEchoPeer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// An RR answering the SR in `datagram` right away (LSR from it, DLSR 0).
fn receiver_report_for(datagram: &[u8]) -> Option<Vec<u8>> {
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::reception_report::ReceptionReport;
    use rtc::rtcp::sender_report::SenderReport;
    let mut buf = datagram;
    let packets = rtc::rtcp::packet::unmarshal(&mut buf).ok()?;
    let sr = packets
        .iter()
        .find_map(|p| p.as_any().downcast_ref::<SenderReport>())?;
    let rr = ReceiverReport {
        ssrc: 0x5151_5151,
        reports: vec![ReceptionReport {
            ssrc: sr.ssrc,
            fraction_lost: 0,
            total_lost: 0,
            last_sequence_number: 0,
            jitter: 0,
            last_sender_report: (sr.ntp_time >> 16) as u32,
            delay: 0,
        }],
        ..Default::default()
    };
    let packets: Vec<Box<dyn rtc::rtcp::packet::Packet>> = vec![Box::new(rr)];
    rtc::rtcp::packet::marshal(&packets)
        .ok()
        .map(|b| b.to_vec())
}

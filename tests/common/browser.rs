//! A test "browser": a `webrtc` peer connection that offers audio the way a browser
//! does (PCMU, PCMA, telephone-event, optionally Opus first), gathers only on
//! 127.0.0.1 with no STUN server, trickles its candidates through a channel, sends
//! recognisable 20 ms PCMU tone frames and records every RTP packet it receives.
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
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, configure_rtcp_reports,
};

/// PCMU payload type (static).
pub const PT_PCMU: u8 = 0;
/// Samples in one 20 ms G.711 frame.
pub const FRAME_SAMPLES: usize = 160;
/// Bytes at the start of a tone frame that carry the frame number.
const COUNTER_BYTES: usize = 4;

/// How the test browser builds its offer.
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    /// Offer Opus (pt 111) before the G.711 codecs, as Chrome does.
    pub offer_opus: bool,
    /// Offer PCMA (pt 8) after PCMU.
    pub offer_pcma: bool,
    /// Payload type of `telephone-event/8000` (Chrome uses 126).
    pub dtmf_payload_type: u8,
}

impl Default for BrowserOptions {
    fn default() -> Self {
        BrowserOptions {
            offer_opus: true,
            offer_pcma: true,
            dtmf_payload_type: 126,
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
                111,
            );
        }
        reg(codec(MIME_TYPE_PCMU, 8000, 0, ""), PT_PCMU);
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
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(vec![])
                    .build(),
            )
            .with_media_engine(engine)
            .with_interceptor_registry(configure_rtcp_reports(Registry::new()))
            .with_handler(handler)
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
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
        let offer = pc.create_offer(None).await.expect("create offer");
        let offer_sdp = offer.sdp.clone();
        pc.set_local_description(offer)
            .await
            .expect("set local offer");

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

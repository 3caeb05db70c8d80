//! The `worker` engine of the WebRTC leg (`media.engine = "worker"`): the call's task
//! negotiates an `rtc` peer connection (SDP is pure computation on the sans-IO core),
//! then hands it to a media worker ([`super::worker`]) whose shared port is the leg's
//! one host candidate. The leg's own ICE credentials (unique per gateway) let the
//! worker tell the browsers on that port apart.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use tokio::sync::{mpsc, oneshot};

use super::MediaError;
use super::browser_media::{BrowserMedia, BrowserSink, BrowserSource, BrowserStats};
use super::codec::PayloadFormat;
use super::webrtc_leg::{IceCandidate, WebRtcEvent, WebRtcLegConfig, local_track, media_engine};
use super::webrtc_setup;
use super::worker::{Control, MEDIA_QUEUE, MediaWorkers, NewLeg, WorkerLink, WorkerShared};
use crate::netguard::ice_ports::IceLease;

/// How long a leg may send nothing before ICE sends a keepalive (RFC 8445 §11's Tr).
const ICE_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// A leg living in a media worker.
pub(super) struct WorkerLegHandle {
    /// Where the leg lives.
    link: WorkerLink,
    /// The browser's RTP, taken by the bridge.
    media_rx: Mutex<Option<mpsc::Receiver<rtc::rtp::Packet>>>,
}

fn rtc_err(what: &'static str) -> impl Fn(rtc::shared::error::Error) -> MediaError {
    move |e| MediaError::WebRtc(format!("{what}: {e}"))
}

/// Our ICE credentials for leg `id`: the ufrag embeds the id, so no two legs of this
/// process share one; both are ice-chars (RFC 8839) and long enough (4 / 22).
fn credentials(id: u64) -> (String, String) {
    (
        format!("{id:x}g{:08x}", rand::random::<u32>()),
        format!("{:032x}", rand::random::<u128>()),
    )
}

/// The host candidates of `worker` (the `candidate:` lines, for the SDP and trickle).
fn host_candidates(worker: &WorkerShared) -> Result<Vec<RTCIceCandidateInit>, MediaError> {
    worker.hosts().iter().map(|a| host_candidate(*a)).collect()
}

/// The host candidate for our address `addr`.
fn host_candidate(addr: std::net::SocketAddr) -> Result<RTCIceCandidateInit, MediaError> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(rtc_err("host candidate"))?;
    RTCIceCandidate::from(&candidate)
        .to_json()
        .map_err(rtc_err("host candidate"))
}

/// A peer connection for `format` with leg `id`'s credentials (its ufrag returned),
/// our certificate and audio track.
fn build(
    config: &WebRtcLegConfig,
    format: &PayloadFormat,
    ssrc: u32,
    id: u64,
    now: Instant,
) -> Result<(String, RTCPeerConnection, RTCRtpSenderId), MediaError> {
    let (ufrag, pwd) = credentials(id);
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        // Keepalives only when we sent nothing for Tr = 15 s (RFC 8445 §11), not the
        // stack's 2 s: the browser's consent checks (RFC 7675, every ~5 s) keep NAT
        // bindings open, and the leg's timer then fires every 5 s (the disconnected
        // timeout) instead of every 2 s.
        .with_ice_timeouts(None, None, Some(ICE_KEEPALIVE_INTERVAL))
        .with_lite(config.ice_lite)
        .with_ice_credentials(ufrag.clone(), pwd)
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(vec![])
                .with_certificates(vec![config.identity.certificate()?])
                .build(),
        )
        .with_media_engine(media_engine(format)?)
        .with_interceptor_registry(webrtc_setup::audio_interceptors(config.rtcp_interval))
        .with_setting_engine(settings)
        .build(now)
        .map_err(rtc_err("create peer connection"))?;
    let sender = pc
        .add_track(local_track(ssrc))
        .map_err(rtc_err("add audio track"))?;
    Ok((ufrag, pc, sender))
}

/// Trickles our host candidates, then end-of-candidates.
fn trickle(
    events: &mpsc::UnboundedSender<WebRtcEvent>,
    hosts: &[RTCIceCandidateInit],
    mid: Option<String>,
    mline_index: u16,
) {
    for init in hosts {
        let _ = events.send(WebRtcEvent::LocalCandidate(Some(IceCandidate {
            candidate: init.candidate.clone(),
            sdp_mid: mid.clone(),
            sdp_mline_index: Some(mline_index),
        })));
    }
    let _ = events.send(WebRtcEvent::LocalCandidate(None));
}

/// Adds our host candidates to `pc`.
fn add_hosts(pc: &mut RTCPeerConnection, hosts: &[RTCIceCandidateInit]) -> Result<(), MediaError> {
    for host in hosts {
        pc.add_local_candidate(host.clone())
            .map_err(rtc_err("host candidate"))?;
    }
    Ok(())
}

impl WorkerLegHandle {
    /// Answers the browser's (filtered, narrowed) offer in a worker; returns the leg
    /// and the answer SDP.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer(
        workers: &MediaWorkers,
        config: &WebRtcLegConfig,
        format: &PayloadFormat,
        ssrc: u32,
        offer_sdp: String,
        (mid, mline_index): (Option<String>, u16),
        lease: &IceLease,
        events: mpsc::UnboundedSender<WebRtcEvent>,
    ) -> Result<(WorkerLegHandle, String), MediaError> {
        let now = Instant::now();
        let (id, worker) = workers.place();
        let (ufrag, mut pc, sender) = build(config, format, ssrc, id, now)?;
        let offer = RTCSessionDescription::offer(offer_sdp)
            .map_err(|e| MediaError::BadOffer(e.to_string()))?;
        pc.set_remote_description(now, offer)
            .map_err(|e| MediaError::BadOffer(e.to_string()))?;
        let hosts = host_candidates(&worker)?;
        add_hosts(&mut pc, &hosts)?;
        let answer = pc.create_answer(None).map_err(rtc_err("create answer"))?;
        let sdp = answer.sdp.clone();
        pc.set_local_description(now, answer)
            .map_err(rtc_err("set local description"))?;
        let leg = Self::hand_over(worker, id, ufrag, pc, sender, lease, &events);
        trickle(&events, &hosts, mid, mline_index);
        Ok((leg, sdp))
    }

    /// Makes our offer for an incoming call in a worker; returns the leg and the offer.
    pub(super) fn offer(
        workers: &MediaWorkers,
        config: &WebRtcLegConfig,
        format: &PayloadFormat,
        ssrc: u32,
        lease: &IceLease,
        events: mpsc::UnboundedSender<WebRtcEvent>,
    ) -> Result<(WorkerLegHandle, String), MediaError> {
        let now = Instant::now();
        let (id, worker) = workers.place();
        let (ufrag, mut pc, sender) = build(config, format, ssrc, id, now)?;
        let hosts = host_candidates(&worker)?;
        let offer = pc.create_offer(None).map_err(rtc_err("create offer"))?;
        pc.set_local_description(now, offer)
            .map_err(rtc_err("set local description"))?;
        add_hosts(&mut pc, &hosts)?;
        let sdp = pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| MediaError::WebRtc("no local description".into()))?;
        let leg = Self::hand_over(worker, id, ufrag, pc, sender, lease, &events);
        trickle(&events, &hosts, Some("0".into()), 0);
        Ok((leg, sdp))
    }

    /// Moves the peer connection into its worker and registers the worker's port for
    /// the call's user.
    fn hand_over(
        worker: Arc<WorkerShared>,
        id: u64,
        ufrag: String,
        pc: RTCPeerConnection,
        sender: RTCRtpSenderId,
        lease: &IceLease,
        events: &mpsc::UnboundedSender<WebRtcEvent>,
    ) -> WorkerLegHandle {
        lease.add(worker.port());
        // Counted now, not when the worker takes it: calls placed in a burst spread.
        worker.count_leg();
        let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
        worker.send(Control::Add(Box::new(NewLeg {
            id,
            ufrag,
            pc,
            sender,
            events: events.clone(),
            media: media_tx,
            span: tracing::Span::current(),
        })));
        WorkerLegHandle {
            link: WorkerLink { worker, id },
            media_rx: Mutex::new(Some(media_rx)),
        }
    }

    /// Applies the browser's answer to our offer (already filtered).
    pub(super) async fn accept_answer(&self, answer_sdp: String) -> Result<(), MediaError> {
        let answer = RTCSessionDescription::answer(answer_sdp)
            .map_err(|e| MediaError::BadOffer(format!("browser answer: {e}")))?;
        let (tx, rx) = oneshot::channel();
        self.link
            .send(Control::Answer(self.link.id, Box::new(answer), tx));
        match rx.await {
            Ok(result) => result.map_err(|e| MediaError::BadOffer(format!("browser answer: {e}"))),
            Err(_) => Err(MediaError::WebRtc("media worker stopped".into())),
        }
    }

    /// Adds a browser candidate the policy accepted.
    pub(super) fn add_remote_candidate(&self, c: IceCandidate) {
        let init = RTCIceCandidateInit {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            ..Default::default()
        };
        self.link.send(Control::Candidate(self.link.id, init));
    }

    /// The stack's statistics of the leg.
    pub(super) async fn stats(&self) -> rtc::statistics::report::RTCStatsReport {
        self.link.report().await
    }

    /// Closes the leg in its worker.
    pub(super) fn close(&self) {
        self.link.send(Control::Close(self.link.id));
    }

    /// The bridge's handles on this leg (the RTP receiver can be taken once).
    pub(super) fn media(&self, ssrc: u32) -> Result<BrowserMedia, MediaError> {
        let rx = self
            .media_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| MediaError::WebRtc("the browser leg already has a bridge".into()))?;
        Ok(BrowserMedia {
            source: BrowserSource(rx),
            sink: (BrowserSink(self.link.clone()), ssrc),
            stats: BrowserStats(self.link.clone()),
            runtime: self.link.runtime().clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    //! Two of our peer connections wired back to back in memory and driven with fake
    //! time: what a connected leg asks of its worker's timer.

    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::BytesMut;
    use rtc::peer_connection::event::RTCPeerConnectionEvent;
    use rtc::peer_connection::state::RTCPeerConnectionState;
    use rtc::sansio::Protocol;
    use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

    use super::*;
    use crate::media::codec::AudioCodec;

    /// One side: its peer connection, its address, whether it reported `Connected`.
    struct Side {
        pc: RTCPeerConnection,
        addr: SocketAddr,
        connected: bool,
    }

    fn candidate(addr: SocketAddr) -> RTCIceCandidateInit {
        RTCIceCandidateInit {
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            ..host_candidate(addr).expect("candidate")
        }
    }

    /// A datagram from `from` arriving at `to` at `now`.
    fn datagram(
        now: Instant,
        to: SocketAddr,
        from: SocketAddr,
        message: BytesMut,
    ) -> TaggedBytesMut {
        TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: to,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message,
        }
    }

    /// The earliest of two deadlines (a second on when neither has one), not before
    /// `now`: where fake time goes next.
    fn next_time(now: Instant, a: Option<Instant>, b: Option<Instant>) -> Instant {
        [a, b]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(1))
            .max(now)
    }

    /// Delivers everything `from` has for `to`; true when something moved.
    fn deliver(now: Instant, from: &mut Side, to: &mut Side) -> bool {
        let mut moved = false;
        while let Some(out) = from.pc.poll_write() {
            moved = true;
            let _ = to
                .pc
                .handle_read(datagram(now, to.addr, from.addr, out.message));
        }
        while let Some(event) = from.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                RTCPeerConnectionState::Connected,
            ) = event
            {
                from.connected = true;
            }
        }
        while from.pc.poll_read().is_some() {}
        moved
    }

    /// Exchanges datagrams until both are quiet, then moves fake time to the earliest
    /// deadline and fires it; returns the new time.
    fn step(now: Instant, a: &mut Side, b: &mut Side) -> Instant {
        while deliver(now, a, b) | deliver(now, b, a) {}
        let next = next_time(now, a.pc.poll_timeout(), b.pc.poll_timeout());
        let _ = a.pc.handle_timeout(next);
        let _ = b.pc.handle_timeout(next);
        next
    }

    /// Where the browser (the offerer) and our leg (the answerer) are.
    const BROWSER: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
        4000,
    );
    const OURS: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)),
        5000,
    );

    /// A browser's peer connection (the offerer) and ours (the answerer, with its ufrag
    /// and sender), negotiated, each with the other's host candidate.
    fn negotiated(
        start: Instant,
    ) -> (
        RTCPeerConnection,
        (String, RTCPeerConnection, RTCRtpSenderId),
    ) {
        let config = WebRtcLegConfig::loopback(vec![AudioCodec::Pcmu]).expect("config");
        let format = PayloadFormat {
            codec: AudioCodec::Pcmu,
            payload_type: 0,
            dtmf_payload_type: Some(101),
        };
        let (_, mut b, _) = build(&config, &format, 1, 1, start).expect("offerer");
        let (ufrag, mut a, sender) = build(&config, &format, 2, 2, start).expect("answerer");
        let offer = b.create_offer(None).expect("offer");
        b.set_local_description(start, offer.clone())
            .expect("local offer");
        b.add_local_candidate(candidate(BROWSER)).expect("b host");
        a.set_remote_description(start, offer)
            .expect("remote offer");
        a.add_local_candidate(candidate(OURS)).expect("a host");
        let answer = a.create_answer(None).expect("answer");
        a.set_local_description(start, answer.clone())
            .expect("local answer");
        b.set_remote_description(start, answer)
            .expect("remote answer");
        a.add_remote_candidate(candidate(BROWSER))
            .expect("a remote");
        b.add_remote_candidate(candidate(OURS)).expect("b remote");
        (b, (ufrag, a, sender))
    }

    /// A connected leg (ICE up, DTLS done, nothing to send) asks to be woken seldom:
    /// at its RTCP interval and ICE's disconnected timeout, not at the 200 ms
    /// connectivity-check tick `rtc-ice` 0.21.1 kept after connecting
    /// (`patches/rtc-ice`).
    #[test]
    fn a_connected_leg_asks_for_few_wake_ups() {
        let start = Instant::now();
        let (offerer, (_, answerer, _)) = negotiated(start);
        let mut b = Side {
            pc: offerer,
            addr: BROWSER,
            connected: false,
        };
        let mut a = Side {
            pc: answerer,
            addr: OURS,
            connected: false,
        };
        let mut now = start;
        while !(a.connected && b.connected) {
            now = step(now, &mut a, &mut b);
            assert!(
                now - start < Duration::from_secs(10),
                "connects in fake time"
            );
        }
        // Twenty seconds of a quiet, connected call: count the answerer's deadlines.
        let quiet_from = now;
        let mut wake_ups = 0;
        while now - quiet_from < Duration::from_secs(20) {
            let due = a.pc.poll_timeout();
            now = step(now, &mut a, &mut b);
            if due.is_some_and(|d| d <= now) {
                wake_ups += 1;
            }
        }
        assert!(a.connected && b.connected);
        assert!(
            wake_ups <= 20,
            "{wake_ups} wake-ups in 20 s (a 200 ms tick would be 100)"
        );
    }

    /// When ICE connects, our leg (the answerer, so the DTLS client) sends its
    /// ClientHello at once: no fake time passes between the browser's ICE connecting
    /// and our leg reporting `Connected` (DTLS done). The `rtc` core hands the
    /// ClientHello out only on a timeout, and the next one used to be the ICE agent's
    /// 200 ms tick (every call's audio started 200 ms late).
    #[test]
    fn dtls_starts_as_soon_as_ice_connects() {
        use crate::media::worker::WorkerLeg;
        use rtc::peer_connection::state::RTCIceConnectionState;

        let start = Instant::now();
        let (mut browser, (ufrag, answerer, sender)) = negotiated(start);
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (media_tx, _media_rx) = mpsc::channel(8);
        let mut ours = WorkerLeg::new(NewLeg {
            id: 2,
            ufrag,
            pc: answerer,
            sender,
            events: events_tx,
            media: media_tx,
            span: tracing::Span::none(),
        });
        let (mut now, mut ice_connected, mut connected) = (start, None, None);
        while connected.is_none() {
            loop {
                let mut out = Vec::new();
                ours.drain(now, |_, _, _, data| out.push(data));
                let mut moved = !out.is_empty();
                for data in out {
                    let _ = browser.handle_read(datagram(now, BROWSER, OURS, data));
                }
                while let Some(datagram) = browser.poll_write() {
                    moved = true;
                    ours.handle_read(now, OURS, BROWSER, &datagram.message);
                }
                while let Some(event) = browser.poll_event() {
                    if let RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                        RTCIceConnectionState::Connected,
                    ) = event
                    {
                        ice_connected.get_or_insert(now);
                    }
                }
                while browser.poll_read().is_some() {}
                while let Ok(event) = events.try_recv() {
                    if matches!(event, WebRtcEvent::Connected) {
                        connected.get_or_insert(now);
                    }
                }
                if !moved {
                    break;
                }
            }
            now = next_time(now, ours.poll_timeout(), browser.poll_timeout());
            ours.handle_timeout(now);
            let _ = browser.handle_timeout(now);
            assert!(
                now - start < Duration::from_secs(10),
                "connects in fake time"
            );
        }
        let ice = ice_connected.expect("the browser's ICE connected first");
        let dtls = connected.expect("connected") - ice;
        assert!(
            dtls < Duration::from_millis(20),
            "{dtls:?} of fake time between ICE connected and DTLS done"
        );
    }
}

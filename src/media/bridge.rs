//! The bridge: relays audio between a WebRTC leg and an RTP leg.
//!
//! I/O contract: two tokio tasks, one per direction, each driving a sans-IO
//! [`Relay`]. Browser → SIP reads the browser's track and sends datagrams from the RTP
//! leg's socket to the SIP peer's SDP address; SIP → browser reads that socket and
//! writes into our WebRTC track. [`Bridge::update_remote`] retargets both directions
//! without breaking the outgoing streams; [`Bridge::stop`] ends both tasks and drops
//! the socket.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::rtp;
use rtc::shared::marshal::{Marshal, Unmarshal};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::MediaError;
use super::codec::PayloadFormat;
use super::relay::{Dropped, Relay, Towards};
use super::rewrite::RtpRewriter;
use super::rtp_leg::RtpLeg;
use super::sdp::RemoteMedia;
use super::webrtc_leg::WebRtcLeg;

/// Largest datagram we read from the SIP side.
const MAX_DATAGRAM: usize = 1500;

/// Packet counters of a running bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// RTP packets received from the browser and sent to the SIP peer.
    pub to_sip: u64,
    /// RTP packets received from the SIP peer and sent to the browser.
    pub to_browser: u64,
    /// Packets dropped because their payload type was not negotiated (either direction).
    pub dropped_unknown_payload_type: u64,
    /// Datagrams from the SIP side that were not RTP.
    pub dropped_malformed: u64,
    /// Packets that could not be sent (socket error, browser track not ready yet).
    pub send_errors: u64,
    /// Times a source changed SSRC or restarted, hidden by the rewriter (both directions).
    pub source_resyncs: u64,
}

/// Shared atomic counters behind [`BridgeStats`].
#[derive(Debug, Default)]
struct Counters {
    /// See [`BridgeStats::to_sip`].
    to_sip: AtomicU64,
    /// See [`BridgeStats::to_browser`].
    to_browser: AtomicU64,
    /// See [`BridgeStats::dropped_unknown_payload_type`].
    dropped_unknown_payload_type: AtomicU64,
    /// See [`BridgeStats::dropped_malformed`].
    dropped_malformed: AtomicU64,
    /// See [`BridgeStats::send_errors`].
    send_errors: AtomicU64,
    /// Resyncs of the browser → SIP rewriter.
    resyncs_to_sip: AtomicU64,
    /// Resyncs of the SIP → browser rewriter.
    resyncs_to_browser: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a drop, logging the first one at debug level.
    fn dropped(&self, why: Dropped) {
        let previous = self
            .dropped_unknown_payload_type
            .fetch_add(1, Ordering::Relaxed);
        if previous == 0 {
            tracing::debug!(?why, "dropping RTP packet");
        }
    }

    /// Counts a send failure, logging the first one.
    fn send_failed(&self, what: &str, error: &dyn std::fmt::Display) {
        if self.send_errors.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::debug!(%error, "RTP send to {what} failed");
        }
    }
}

/// A running relay between the two legs of one call.
#[derive(Debug)]
pub struct Bridge {
    /// Latest SIP peer media description; both tasks watch it.
    remote: watch::Sender<RemoteMedia>,
    /// Packet counters shared with the tasks.
    counters: Arc<Counters>,
    /// The browser → SIP and SIP → browser tasks.
    tasks: Vec<JoinHandle<()>>,
}

impl Bridge {
    /// Starts relaying between `webrtc` and `rtp`, sending to `remote`.
    ///
    /// Must be called inside a tokio runtime. Fails with [`MediaError::CodecMismatch`]
    /// if the legs' codecs cannot be bridged without transcoding (only µ-law <-> A-law
    /// is converted). Packets flow as soon as the browser's track opens and the SIP
    /// peer sends; nothing needs to wait for `Connected`. Keep `webrtc` open until
    /// [`Bridge::stop`] has returned (the bridge holds its tracks, not the connection).
    pub fn start(
        webrtc: &WebRtcLeg,
        rtp: RtpLeg,
        remote: RemoteMedia,
    ) -> Result<Bridge, MediaError> {
        let browser = webrtc.format();
        let (track, track_ssrc) = webrtc.local_track();
        let clock = browser.codec.clock_rate();
        let sip_ssrc = rand::random::<u32>();
        let rand_start = || (rand::random::<u16>(), rand::random::<u32>());
        let (seq, ts) = rand_start();
        let to_sip = Relay::new(
            Towards::Sip,
            browser,
            remote.format,
            RtpRewriter::new(
                sip_ssrc,
                seq,
                ts,
                remote.format.codec.clock_rate(),
                remote.format.codec.clock_rate() / 50,
            ),
        )?;
        let (seq, ts) = rand_start();
        let to_browser = Relay::new(
            Towards::Browser,
            remote.format,
            browser,
            RtpRewriter::new(track_ssrc, seq, ts, clock, clock / 50),
        )?;
        tracing::debug!(?browser, sip = ?remote.format, addr = %remote.addr, "bridge starting");

        let socket = Arc::new(rtp.into_socket());
        let (remote_tx, remote_rx) = watch::channel(remote);
        let counters = Arc::new(Counters::default());
        let tasks = vec![
            tokio::spawn(browser_to_sip(
                webrtc.remote_track(),
                socket.clone(),
                to_sip,
                browser,
                remote_rx.clone(),
                counters.clone(),
            )),
            tokio::spawn(sip_to_browser(
                socket,
                track,
                to_browser,
                browser,
                remote_rx,
                counters.clone(),
            )),
        ];
        Ok(Bridge {
            remote: remote_tx,
            counters,
            tasks,
        })
    }

    /// Points the SIP side at a new remote (e.g. 200 OK SDP after 183 early media).
    ///
    /// Sequence numbers and timestamps toward both legs stay continuous. If the new
    /// codec cannot be bridged, packets in the affected direction are dropped (and the
    /// new description is logged); check with `sdp::parse_answer` first.
    pub fn update_remote(&self, remote: RemoteMedia) {
        self.remote.send_if_modified(|current| {
            if *current == remote {
                return false;
            }
            tracing::debug!(from = ?current, to = ?remote, "bridge remote updated");
            *current = remote;
            true
        });
    }

    /// Current packet counters.
    pub fn stats(&self) -> BridgeStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BridgeStats {
            to_sip: get(&c.to_sip),
            to_browser: get(&c.to_browser),
            dropped_unknown_payload_type: get(&c.dropped_unknown_payload_type),
            dropped_malformed: get(&c.dropped_malformed),
            send_errors: get(&c.send_errors),
            source_resyncs: get(&c.resyncs_to_sip) + get(&c.resyncs_to_browser),
        }
    }

    /// Stops both directions and releases the RTP socket.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            // A cancelled task returns Err(cancelled); a panicked one is logged.
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!(error = %e, "bridge task panicked");
            }
        }
    }
}

/// Applies a changed remote description to `relay` (input/output given by `towards`).
fn apply_remote(relay: &mut Relay, browser: PayloadFormat, remote: &RemoteMedia, towards: Towards) {
    let result = match towards {
        Towards::Sip => relay.set_formats(browser, remote.format),
        Towards::Browser => relay.set_formats(remote.format, browser),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "keeping previous SIP format");
    }
}

/// Browser track → SIP peer.
async fn browser_to_sip(
    mut track_rx: watch::Receiver<Option<Arc<dyn TrackRemote>>>,
    socket: Arc<UdpSocket>,
    mut relay: Relay,
    browser: PayloadFormat,
    mut remote_rx: watch::Receiver<RemoteMedia>,
    counters: Arc<Counters>,
) {
    let Ok(track) = track_rx.wait_for(Option::is_some).await.map(|t| t.clone()) else {
        return;
    };
    let Some(track) = track else { return };
    let mut remote = remote_rx.borrow_and_update().clone();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(p) => p,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        if remote_rx.has_changed().unwrap_or(false) {
            remote = remote_rx.borrow_and_update().clone();
            apply_remote(&mut relay, browser, &remote, Towards::Sip);
        }
        let out = match relay.relay(Instant::now(), packet) {
            Ok(out) => out,
            Err(why) => {
                counters.dropped(why);
                continue;
            }
        };
        counters
            .resyncs_to_sip
            .store(relay.resyncs(), Ordering::Relaxed);
        if !remote.direction.peer_receives() {
            continue;
        }
        match send_datagram(&socket, &out, &mut buf, remote.addr).await {
            Ok(()) => Counters::bump(&counters.to_sip),
            Err(e) => counters.send_failed("SIP peer", &e),
        }
    }
    tracing::debug!("browser track ended");
}

/// Marshals `packet` into `buf` and sends it to `to`.
async fn send_datagram(
    socket: &UdpSocket,
    packet: &rtp::Packet,
    buf: &mut [u8],
    to: SocketAddr,
) -> Result<(), MediaError> {
    let n = packet
        .marshal_to(buf)
        .map_err(|e| MediaError::WebRtc(format!("marshal RTP: {e}")))?;
    socket.send_to(&buf[..n], to).await?;
    Ok(())
}

/// SIP peer → browser track.
async fn sip_to_browser(
    socket: Arc<UdpSocket>,
    track: Arc<TrackLocalStaticRTP>,
    mut relay: Relay,
    browser: PayloadFormat,
    mut remote_rx: watch::Receiver<RemoteMedia>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = match socket.recv_from(&mut buf).await {
            Ok((n, _from)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
                ) =>
            {
                // ICMP port unreachable from an earlier send shows up here on some OSes.
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "RTP socket receive error");
                // Do not spin on a persistent error.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let packet = match rtp::Packet::unmarshal(&mut &buf[..n]) {
            Ok(p) if p.header.version == 2 => p,
            _ => {
                Counters::bump(&counters.dropped_malformed);
                continue;
            }
        };
        if remote_rx.has_changed().unwrap_or(false) {
            let remote = remote_rx.borrow_and_update().clone();
            apply_remote(&mut relay, browser, &remote, Towards::Browser);
        }
        let out = match relay.relay(Instant::now(), packet) {
            Ok(out) => out,
            Err(why) => {
                counters.dropped(why);
                continue;
            }
        };
        counters
            .resyncs_to_browser
            .store(relay.resyncs(), Ordering::Relaxed);
        match track.write_rtp(out).await {
            Ok(()) => Counters::bump(&counters.to_browser),
            Err(e) => counters.send_failed("browser", &e),
        }
    }
}

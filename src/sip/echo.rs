//! A built-in echo UAS for the first call of the demo: a second [`SipEndpoint`]
//! whose inbound calls are answered at once with an SDP pointing at a fresh RTP
//! socket that sends every packet (audio and telephone-event alike) back to where
//! it came from, unchanged. BYE and CANCEL are handled by the endpoint as for any
//! inbound call.
//!
//! ```text
//!  gateway ──INVITE──> EchoUas endpoint ──IncomingCall──> serve(): answer 200 (PCMU
//!                                                          or PCMA + telephone-event)
//!  RTP ──> echo socket ──same bytes──> back to the source, until the call ends
//! ```
//!
//! It admits INVITEs from any address: bind it to loopback.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::{
    InboundSipEvent, IncomingCall, SdpAnswerer, SessionTimerSettings, SipEndpoint,
    SipEndpointConfig, SipError, TrunkSettings,
};
use crate::media::codec::AudioCodec;
use crate::media::sdp::{self, Direction};

/// A call with no RTP for this long is hung up.
const IDLE: Duration = Duration::from_secs(60);
/// No echo call lasts longer.
const MAX_CALL: Duration = Duration::from_secs(3600);
/// Codecs we answer with, in order of preference.
const CODECS: [AudioCodec; 2] = [AudioCodec::Pcmu, AudioCodec::Pcma];

/// A running echo UAS.
#[derive(Debug)]
pub struct EchoUas {
    /// Its SIP address (UDP and TCP).
    addr: SocketAddr,
    /// Its endpoint.
    endpoint: Arc<SipEndpoint>,
    /// Tells the accept loop and the calls to stop.
    stop: watch::Sender<bool>,
    /// The accept loop, taken by `shutdown`.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl EchoUas {
    /// Binds a SIP endpoint on `bind` (port 0: ephemeral) answering every INVITE,
    /// with RTP sockets on `media_ip`.
    pub async fn start(bind: SocketAddr, media_ip: IpAddr) -> Result<EchoUas, SipError> {
        let endpoint = SipEndpoint::bind(SipEndpointConfig {
            listen: bind,
            user_agent: concat!("callbridge-echo/", env!("CARGO_PKG_VERSION")).into(),
            ..SipEndpointConfig::default()
        })
        .await?;
        let callers = TrunkSettings {
            name: "echo-callers".into(),
            inbound_from: vec![
                "0.0.0.0/0".parse().map_err(invalid)?,
                "::/0".parse().map_err(invalid)?,
            ],
            session_timer: SessionTimerSettings {
                session_expires: 0,
                min_se: 90,
            },
            ..TrunkSettings::default()
        };
        endpoint.start_trunks(vec![callers]).await?;
        let mut incoming = endpoint
            .take_incoming()
            .ok_or_else(|| SipError::InvalidRequest("inbound calls already taken".into()))?;
        let (stop, mut stopped) = watch::channel(false);
        let calls_stop = stop.subscribe();
        let task = tokio::spawn(async move {
            let mut calls = JoinSet::new();
            loop {
                tokio::select! {
                    call = incoming.recv() => match call {
                        Some(call) => {
                            calls.spawn(serve(call, media_ip, calls_stop.clone()));
                        }
                        None => break,
                    },
                    _ = stopped.changed() => break,
                }
                while calls.try_join_next().is_some() {}
            }
            while calls.join_next().await.is_some() {}
        });
        let addr = endpoint.local_addr();
        tracing::info!(%addr, "echo UAS listening");
        Ok(EchoUas {
            addr,
            endpoint,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Its SIP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Hangs up every call (waiting up to a second for the BYEs), then stops.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = match self.task.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task {
            let _ = task.await;
        }
        self.endpoint.shutdown().await;
    }
}

fn invalid(e: ipnet::AddrParseError) -> SipError {
    SipError::InvalidRequest(e.to_string())
}

/// Our SDP answer to `offer` for an echo socket at `ip:port`.
fn answer_sdp(offer: &str, ip: IpAddr, port: u16) -> Result<String, String> {
    let remote = sdp::parse_answer(offer, &CODECS).map_err(|e| e.to_string())?;
    let format = remote.format;
    let direction = match remote.direction {
        Direction::SendOnly => "recvonly",
        Direction::RecvOnly => "sendonly",
        Direction::Inactive => "inactive",
        Direction::SendRecv => "sendrecv",
    };
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let session: u32 = rand::random();
    let mut fmts = format.payload_type.to_string();
    if let Some(dtmf) = format.dtmf_payload_type {
        let _ = write!(fmts, " {dtmf}");
    }
    let mut out = format!(
        "v=0\r\no=callbridge-echo {session} {session} IN {family} {ip}\r\ns=echo\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {fmts}\r\na=rtpmap:{} {}/{}\r\n",
        format.payload_type,
        format.codec.encoding_name(),
        format.codec.clock_rate()
    );
    if let Some(dtmf) = format.dtmf_payload_type {
        let _ = write!(
            out,
            "a=rtpmap:{dtmf} telephone-event/8000\r\na=fmtp:{dtmf} 0-16\r\n"
        );
    }
    let _ = write!(out, "a=ptime:20\r\na={direction}\r\n");
    Ok(out)
}

/// Answers one call and echoes its RTP until it ends.
async fn serve(call: IncomingCall, media_ip: IpAddr, mut stop: watch::Receiver<bool>) {
    let IncomingCall {
        handle,
        mut events,
        sdp: offer,
        sip_call_id,
        correlation_id,
        ..
    } = call;
    let socket = match UdpSocket::bind((media_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%sip_call_id, %correlation_id, "echo: no RTP socket: {e}");
            let _ = handle.reject(503, "");
            return;
        }
    };
    let port = socket.local_addr().map(|a| a.port()).unwrap_or_default();
    let ours = match offer.as_deref() {
        Some(offer) => match answer_sdp(offer, media_ip, port) {
            Ok(answer) => answer,
            Err(why) => {
                tracing::info!(%sip_call_id, %correlation_id, %why, "echo: offer refused: 488");
                let _ = handle.reject(488, "");
                return;
            }
        },
        None => sdp::build_offer(media_ip, port, u64::from(rand::random::<u32>()), &CODECS),
    };
    let answerer: SdpAnswerer = Arc::new(move |offer: &str| answer_sdp(offer, media_ip, port));
    handle.answer(ours, answerer);
    tracing::info!(%sip_call_id, %correlation_id, %port, "echo call answered");
    let mut buf = vec![0u8; 2048];
    let ends = tokio::time::Instant::now() + MAX_CALL;
    let mut idle_at = tokio::time::Instant::now() + IDLE;
    let mut hung_up = false;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                None => return,
                Some(e) if e.is_final() => return,
                Some(InboundSipEvent::Acked) => idle_at = tokio::time::Instant::now() + IDLE,
                Some(_) => {}
            },
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = received {
                    let _ = socket.send_to(&buf[..n], from).await;
                    idle_at = tokio::time::Instant::now() + IDLE;
                }
            }
            () = tokio::time::sleep_until(idle_at.min(ends)), if !hung_up => {
                tracing::info!(%sip_call_id, %correlation_id, "echo: idle or too long: hanging up");
                handle.hangup();
                hung_up = true;
            }
            _ = stop.changed(), if !hung_up => {
                handle.hangup();
                // Give the BYE a moment, then stop regardless.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(e) = events.recv().await {
                        if e.is_final() {
                            return;
                        }
                    }
                })
                .await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_our_first_codec_the_offer_has_and_its_dtmf() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=sendrecv\r\n";
        let answer = answer_sdp(offer, "127.0.0.1".parse().unwrap(), 5000).unwrap();
        assert!(answer.contains("m=audio 5000 RTP/AVP 0 96\r\n"), "{answer}");
        assert!(answer.contains("a=rtpmap:0 PCMU/8000\r\n"));
        assert!(answer.contains("a=rtpmap:96 telephone-event/8000\r\n"));
        assert!(answer.contains("c=IN IP4 127.0.0.1\r\n"));
        let hold = offer
            .replace("a=sendrecv", "a=sendonly")
            .replace(" 0 96", " 96");
        let answer = answer_sdp(&hold, "127.0.0.1".parse().unwrap(), 5000).unwrap();
        assert!(
            answer.contains("RTP/AVP 8 96\r\n") && answer.contains("a=recvonly\r\n"),
            "{answer}"
        );
        assert!(
            answer_sdp(
                "v=0\r\nm=audio 4000 RTP/AVP 18\r\nc=IN IP4 1.2.3.4\r\n",
                "127.0.0.1".parse().unwrap(),
                1
            )
            .is_err()
        );
    }
}

//! RTCP of the SIP leg (RFC 3550 §6), sans-IO: builds our compound report (SR when
//! we send, else RR, with one reception report block and an SDES CNAME) and reads the
//! peer's SR/RR to learn the round-trip time and how the peer receives us.
//!
//! RTT = arrival of the peer's report − when we sent the SR it echoes (LSR) − the
//! peer's hold time (DLSR). The send times of our last SRs are kept as monotonic
//! instants, so only the NTP timestamp written into the SR needs the wall clock, which
//! the caller passes in.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtc::rtcp;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};

use super::MediaError;
use super::rtp_stats::ReportBlock;

/// Seconds from 1900 (NTP era 0) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Our SRs remembered for RTT matching.
const SENT_SRS: usize = 4;

/// Whether a datagram on a multiplexed port is RTCP (RFC 5761 §4: packet types 192-223).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 8 && datagram[0] >> 6 == 2 && (192..=223).contains(&datagram[1])
}

/// The 64-bit NTP timestamp of `wall`.
pub fn ntp_time(wall: SystemTime) -> u64 {
    let d = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u128::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac as u64
}

/// What we sent so far, for the SR's sender info.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderInfo {
    /// RTP packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
    /// The RTP timestamp that corresponds to the SR's NTP time.
    pub rtp_ts: u32,
}

/// What the peer's latest report block says about our stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerReport {
    /// Loss in the peer's last interval, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative loss.
    pub total_lost: u32,
    /// Interarrival jitter, timestamp units.
    pub jitter: u32,
}

/// RTCP state of one RTP session.
#[derive(Debug, Clone)]
pub struct RtcpSession {
    /// Our SSRC.
    ssrc: u32,
    /// Our CNAME.
    cname: Bytes,
    /// Middle 32 bits of the NTP time of our last SRs, and when they left.
    sent: [Option<(u32, Instant)>; SENT_SRS],
    /// Next slot of `sent`.
    next_slot: usize,
    /// The peer's last SR: middle NTP bits and arrival time (for our LSR/DLSR).
    peer_sr: Option<(u32, Instant)>,
    /// Latest round-trip time.
    rtt: Option<Duration>,
    /// Latest report about our stream.
    peer_report: Option<PeerReport>,
    /// RTCP datagrams received.
    received: u64,
}

impl RtcpSession {
    /// A session sending as `ssrc` with `cname`.
    pub fn new(ssrc: u32, cname: &str) -> Self {
        RtcpSession {
            ssrc,
            cname: Bytes::copy_from_slice(cname.as_bytes()),
            sent: [None; SENT_SRS],
            next_slot: 0,
            peer_sr: None,
            rtt: None,
            peer_report: None,
            received: 0,
        }
    }

    /// Latest round-trip time measured from the peer's reports.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The peer's latest report about our stream.
    pub fn peer_report(&self) -> Option<PeerReport> {
        self.peer_report
    }

    /// RTCP datagrams received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Builds our compound report at `now` (`wall`: the same moment on the wall clock):
    /// an SR when `sender` is given, else an RR; `block` reports on the peer's stream.
    pub fn build_report(
        &mut self,
        now: Instant,
        wall: SystemTime,
        sender: Option<SenderInfo>,
        block: Option<ReportBlock>,
    ) -> Result<Bytes, MediaError> {
        let reports: Vec<ReceptionReport> = block
            .map(|b| {
                let (lsr, dlsr) = match self.peer_sr {
                    Some((mid, at)) => {
                        let held = now.saturating_duration_since(at);
                        let dlsr =
                            (held.as_micros() * 65_536 / 1_000_000).min(u128::from(u32::MAX));
                        (mid, dlsr as u32)
                    }
                    None => (0, 0),
                };
                ReceptionReport {
                    ssrc: b.ssrc,
                    fraction_lost: b.fraction_lost,
                    total_lost: b.total_lost,
                    last_sequence_number: b.ext_max_seq,
                    jitter: b.jitter,
                    last_sender_report: lsr,
                    delay: dlsr,
                }
            })
            .into_iter()
            .collect();
        let sdes = SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: self.ssrc,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: self.cname.clone(),
                }],
            }],
        };
        let first: Box<dyn rtcp::packet::Packet> = match sender {
            Some(s) => {
                let ntp = ntp_time(wall);
                self.sent[self.next_slot] = Some(((ntp >> 16) as u32, now));
                self.next_slot = (self.next_slot + 1) % SENT_SRS;
                Box::new(SenderReport {
                    ssrc: self.ssrc,
                    ntp_time: ntp,
                    rtp_time: s.rtp_ts,
                    packet_count: s.packets,
                    octet_count: s.octets,
                    reports,
                    ..Default::default()
                })
            }
            None => Box::new(ReceiverReport {
                ssrc: self.ssrc,
                reports,
                ..Default::default()
            }),
        };
        let packets: Vec<Box<dyn rtcp::packet::Packet>> = vec![first, Box::new(sdes)];
        rtcp::packet::marshal(&packets)
            .map(|b| b.freeze())
            .map_err(|e| MediaError::WebRtc(format!("marshal RTCP: {e}")))
    }

    /// Reads one RTCP datagram that arrived at `now`; false when it did not parse.
    pub fn handle(&mut self, now: Instant, datagram: &[u8]) -> bool {
        let mut buf = datagram;
        let Ok(packets) = rtcp::packet::unmarshal(&mut buf) else {
            return false;
        };
        self.received += 1;
        for p in &packets {
            let any = p.as_any();
            if let Some(sr) = any.downcast_ref::<SenderReport>() {
                self.peer_sr = Some(((sr.ntp_time >> 16) as u32, now));
                for r in &sr.reports {
                    self.on_block(now, r);
                }
            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                for r in &rr.reports {
                    self.on_block(now, r);
                }
            }
        }
        true
    }

    /// Takes a report block that may be about our stream.
    fn on_block(&mut self, now: Instant, r: &ReceptionReport) {
        if r.ssrc != self.ssrc {
            return;
        }
        self.peer_report = Some(PeerReport {
            fraction_lost: r.fraction_lost,
            total_lost: r.total_lost,
            jitter: r.jitter,
        });
        if r.last_sender_report == 0 {
            return;
        }
        let sent = self
            .sent
            .iter()
            .flatten()
            .find(|(mid, _)| *mid == r.last_sender_report);
        if let Some((_, at)) = sent {
            let dlsr = Duration::from_micros(u64::from(r.delay) * 1_000_000 / 65_536);
            let rtt = now.saturating_duration_since(*at).saturating_sub(dlsr);
            self.rtt = Some(rtt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ntp_time_of_the_unix_epoch_and_half_a_second() {
        assert_eq!(ntp_time(UNIX_EPOCH), NTP_UNIX_OFFSET << 32);
        let t = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(ntp_time(t), ((NTP_UNIX_OFFSET + 1) << 32) | 0x8000_0000);
    }

    #[test]
    fn demultiplexes_rtcp_from_rtp() {
        assert!(is_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 1]));
        assert!(is_rtcp(&[0x81, 201, 0, 7, 0, 0, 0, 1]));
        assert!(!is_rtcp(&[0x80, 0, 0, 6, 0, 0, 0, 1]), "PCMU");
        assert!(
            !is_rtcp(&[0x80, 0x80 | 101, 0, 6, 0, 0, 0, 1]),
            "marked event"
        );
        assert!(!is_rtcp(&[0x80, 200, 0]));
    }

    #[test]
    fn rtt_from_the_peers_echo_of_our_sr() {
        let t0 = Instant::now();
        let wall0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut us = RtcpSession::new(0x1111, "us@callbridge");
        let mut peer = RtcpSession::new(0x2222, "peer");
        let block = |ssrc| ReportBlock {
            ssrc,
            fraction_lost: 12,
            total_lost: 30,
            ext_max_seq: 1000,
            jitter: 40,
        };
        let sender = SenderInfo {
            packets: 50,
            octets: 8000,
            rtp_ts: 1234,
        };
        let sr = us
            .build_report(t0, wall0, Some(sender), Some(block(0x2222)))
            .unwrap();
        // 30 ms one way.
        assert!(peer.handle(t0 + 30 * MS, &sr));
        assert!(is_rtcp(&sr));
        // The peer holds it 200 ms, then reports on us (RR only: it does not send).
        let rr = peer
            .build_report(t0 + 230 * MS, wall0, None, Some(block(0x1111)))
            .unwrap();
        assert!(us.handle(t0 + 260 * MS, &rr));
        let rtt = us.rtt().unwrap();
        assert!(rtt >= 59 * MS && rtt <= 61 * MS, "{rtt:?}");
        assert_eq!(
            us.peer_report(),
            Some(PeerReport {
                fraction_lost: 12,
                total_lost: 30,
                jitter: 40
            })
        );
        assert_eq!(peer.rtt(), None, "the peer sent no SR");
        assert!(!us.handle(t0, &[0x80, 200, 0]));
        assert_eq!(us.received(), 1);
    }

    #[test]
    fn report_about_another_ssrc_is_ignored() {
        let mut us = RtcpSession::new(1, "us");
        let mut other = RtcpSession::new(3, "x");
        let rr = other
            .build_report(
                Instant::now(),
                SystemTime::now(),
                None,
                Some(ReportBlock {
                    ssrc: 99,
                    fraction_lost: 1,
                    total_lost: 1,
                    ext_max_seq: 1,
                    jitter: 1,
                }),
            )
            .unwrap();
        assert!(us.handle(Instant::now(), &rr));
        assert_eq!(us.peer_report(), None);
    }
}

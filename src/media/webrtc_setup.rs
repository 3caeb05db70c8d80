//! What every browser-facing peer connection of a gateway is built with, shared
//! across calls: the DTLS certificate ([`DtlsIdentity`]) and the audio interceptor
//! chain ([`audio_interceptors`]).
//!
//! I/O contract: none beyond key generation. The certificate is made once per
//! [`DtlsIdentity`] (the call manager holds one for the process) and never rotated
//! while the process runs; each leg gets a clone (the DER bytes and an `Arc` of the
//! signing key). The interceptor chain holds only RTCP sender and receiver reports,
//! at `media.rtcp_interval`: no NACK, TWCC, simulcast or other video machinery, so an
//! audio call arms no timers for it.
//!
//! Sharing the certificate changes nothing for privacy: its fingerprint is in every
//! SDP answer we send (`a=fingerprint`), so whoever can read one answer can read all
//! of them; a shared one only says the calls went through the same gateway process,
//! which the candidate addresses say already. DTLS key exchange stays ephemeral
//! (ECDHE), so the long-lived key only signs the handshake.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rtc::crypto::{self, SignatureScheme};
use rtc::interceptor::Registry;
use rtc::interceptor::{ReceiverReportBuilder, SenderReportBuilder, Slot};
use rtc::peer_connection::certificate::RTCCertificate;

use super::MediaError;

/// Interval of RTCP sender and receiver reports when none is configured
/// (`media.rtcp_interval`): RFC 3550's recommended minimum, and libwebrtc's own for audio.
pub const DEFAULT_RTCP_INTERVAL: Duration = Duration::from_secs(5);

/// The DTLS certificate shared by the WebRTC legs that hold clones of this value.
///
/// Made on first use (or by [`DtlsIdentity::certificate`] at start) and kept for the
/// life of the value. Cloning shares it.
#[derive(Clone, Default)]
pub struct DtlsIdentity {
    /// The certificate, once made.
    cell: Arc<OnceLock<RTCCertificate>>,
}

impl std::fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the certificate's bytes: a config's Debug would dump them.
        f.debug_struct("DtlsIdentity")
            .field("made", &self.cell.get().is_some())
            .finish()
    }
}

impl DtlsIdentity {
    /// An identity whose certificate is made on first use.
    pub fn new() -> DtlsIdentity {
        DtlsIdentity::default()
    }

    /// The certificate, made now if this is the first call (ECDSA P-256, self-signed,
    /// a random subject name like the `webrtc` crate's own).
    pub fn certificate(&self) -> Result<RTCCertificate, MediaError> {
        if let Some(certificate) = self.cell.get() {
            return Ok(certificate.clone());
        }
        let made = generate()?;
        // Two legs may race here; the first certificate stored wins for both.
        Ok(self.cell.get_or_init(|| made).clone())
    }

    /// The SHA-256 fingerprint of the certificate as it appears in `a=fingerprint`
    /// (`sha-256 AB:CD:…`), making the certificate if needed.
    pub fn fingerprint(&self) -> Result<String, MediaError> {
        let certificate = self.certificate()?;
        let provider = crypto::default_provider().map_err(|e| MediaError::WebRtc(e.to_string()))?;
        let fingerprints = certificate
            .get_fingerprints(provider.crypto())
            .map_err(|e| MediaError::WebRtc(format!("DTLS fingerprint: {e}")))?;
        fingerprints
            .first()
            .map(|f| format!("{} {}", f.algorithm, f.value.to_uppercase()))
            .ok_or_else(|| MediaError::WebRtc("DTLS certificate has no fingerprint".into()))
    }
}

/// A fresh self-signed ECDSA P-256 certificate, as the `webrtc` crate makes per
/// connection when it is given none.
fn generate() -> Result<RTCCertificate, MediaError> {
    let fail = |e: String| MediaError::WebRtc(format!("DTLS certificate: {e}"));
    let provider = crypto::default_provider().map_err(|e| fail(e.to_string()))?;
    let name: String = rand::random::<[u8; 8]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let params = rtc::peer_connection::certificate::CertificateParams::new(vec![name])
        .map_err(|e| fail(e.to_string()))?;
    RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
        .map_err(|e| fail(e.to_string()))
}

/// The interceptor chain of an audio leg: RTCP receiver reports (about the
/// browser's stream) and sender reports (about ours) every `rtcp_interval`.
///
/// The quality figures of the browser leg (`docs/quality.md`) need both: the
/// browser's RTT and loss for our stream come from its reports, which refer to our
/// SRs. Nothing else: NACK and TWCC serve video and would add timers and copies.
pub fn audio_interceptors(rtcp_interval: Duration) -> Registry {
    Registry::new()
        .with(
            Slot::ReceiverReport,
            ReceiverReportBuilder::new()
                .with_interval(rtcp_interval)
                .build(),
        )
        .with(
            Slot::SenderReport,
            SenderReportBuilder::new()
                .with_interval(rtcp_interval)
                .build(),
        )
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::sender_report::SenderReport;
    use rtc::sansio::Protocol;
    use rtc::shared::TransportContext;

    use super::*;

    #[test]
    fn one_certificate_per_identity_shared_by_its_clones() {
        let identity = DtlsIdentity::new();
        let first = identity.certificate().expect("generated");
        let clone = identity.clone();
        assert_eq!(
            clone.certificate().expect("shared"),
            first,
            "clones share it"
        );
        assert_eq!(identity.fingerprint().ok(), clone.fingerprint().ok());
        let other = DtlsIdentity::new();
        assert_ne!(
            other.certificate().expect("generated"),
            first,
            "another identity makes its own certificate"
        );
        let fingerprint = identity.fingerprint().expect("fingerprint");
        assert!(fingerprint.starts_with("sha-256 "), "{fingerprint}");
        assert_eq!(fingerprint.len(), "sha-256 ".len() + 32 * 3 - 1);
    }

    fn rtp(ssrc: u32, now: Instant) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    version: 2,
                    payload_type: 0,
                    sequence_number: 1,
                    timestamp: 160,
                    ssrc,
                    ..Default::default()
                },
                payload: vec![0xff; 160].into(),
            })),
        }
    }

    /// The RTCP packets the chain sends now, as (sender reports, receiver reports).
    fn reports(chain: &mut impl Interceptor) -> (usize, usize) {
        let (mut srs, mut rrs) = (0, 0);
        while let Some(out) = chain.poll_write() {
            if let Packet::Rtcp(packets) = out.message.packet {
                for p in packets {
                    srs += usize::from(p.as_any().downcast_ref::<SenderReport>().is_some());
                    rrs += usize::from(p.as_any().downcast_ref::<ReceiverReport>().is_some());
                }
            }
        }
        (srs, rrs)
    }

    #[test]
    fn audio_chain_is_reports_only_at_the_configured_interval() {
        let interval = Duration::from_secs(3);
        let registry = audio_interceptors(interval);
        let names: Vec<String> = registry.slots().into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            names,
            ["ReceiverReportInterceptor", "SenderReportInterceptor"],
            "no NACK, TWCC or other video interceptors"
        );

        let mut chain = registry.build();
        let (ours, theirs) = (1, 2);
        for (ssrc, local) in [(ours, true), (theirs, false)] {
            let info = StreamInfo {
                ssrc,
                clock_rate: 8000,
                mime_type: "audio/PCMU".into(),
                ..Default::default()
            };
            match local {
                true => chain.bind_local_stream(&info),
                false => chain.bind_remote_stream(&info),
            }
        }
        // Fake time: the chain is sans-IO, every instant is ours.
        let t0 = Instant::now();
        chain.handle_write(rtp(ours, t0)).expect("write");
        chain.handle_read(rtp(theirs, t0)).expect("read");
        while chain.poll_read().is_some() {}
        assert_eq!(reports(&mut chain), (0, 0), "only the RTP itself so far");
        assert_eq!(chain.poll_timeout(), Some(t0 + interval));

        chain
            .handle_timeout(t0 + interval - Duration::from_millis(1))
            .expect("early tick");
        assert_eq!(reports(&mut chain), (0, 0), "nothing before the interval");
        chain.handle_timeout(t0 + interval).expect("tick");
        assert_eq!(reports(&mut chain), (1, 1), "one SR and one RR");
        assert_eq!(chain.poll_timeout(), Some(t0 + interval * 2));
    }
}

//! What every browser-facing peer connection of a gateway is built with, shared
//! across calls: the DTLS certificate ([`DtlsIdentity`]).
//!
//! I/O contract: none beyond key generation. The certificate is made once per
//! [`DtlsIdentity`] (the call manager holds one for the process) and never rotated
//! while the process runs; each leg gets a clone (the DER bytes and an `Arc` of the
//! signing key).
//!
//! Sharing the certificate changes nothing for privacy: its fingerprint is in every
//! SDP answer we send (`a=fingerprint`), so whoever can read one answer can read all
//! of them; a shared one only says the calls went through the same gateway process,
//! which the candidate addresses say already. DTLS key exchange stays ephemeral
//! (ECDHE), so the long-lived key only signs the handshake.

use std::sync::{Arc, OnceLock};
use webrtc::peer_connection::RTCCertificate;
use webrtc::peer_connection::crypto::{self, SignatureScheme};

use super::MediaError;

/// The DTLS certificate shared by the WebRTC legs that hold clones of this value.
///
/// Made on first use (or by [`DtlsIdentity::certificate`] at start) and kept for the
/// life of the value. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct DtlsIdentity {
    /// The certificate, once made.
    cell: Arc<OnceLock<RTCCertificate>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_certificate_per_identity_shared_by_its_clones() {
        let identity = DtlsIdentity::new();
        let first = identity.certificate().expect("generated");
        let clone = identity.clone();
        assert!(clone.certificate().expect("shared") == first, "clones share it");
        assert_eq!(identity.fingerprint().ok(), clone.fingerprint().ok());
        let other = DtlsIdentity::new();
        assert!(
            other.certificate().expect("generated") != first,
            "another identity makes its own certificate"
        );
        let fingerprint = identity.fingerprint().expect("fingerprint");
        assert!(fingerprint.starts_with("sha-256 "), "{fingerprint}");
        assert_eq!(fingerprint.len(), "sha-256 ".len() + 32 * 3 - 1);
    }
}

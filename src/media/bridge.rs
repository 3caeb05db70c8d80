//! The bridge: relays audio between a WebRTC leg and an RTP leg.
//!
//! STUB: interface only, to be implemented.

use super::rtp_leg::RtpLeg;
use super::sdp::RemoteMedia;
use super::webrtc_leg::WebRtcLeg;

/// Packet counters of a running bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// RTP packets received from the browser and sent to the SIP peer.
    pub to_sip: u64,
    /// RTP packets received from the SIP peer and sent to the browser.
    pub to_browser: u64,
}

/// A running relay between the two legs of one call.
pub struct Bridge {}

impl Bridge {
    /// Starts relaying between `webrtc` and `rtp`, sending to `remote`.
    pub fn start(
        _webrtc: &WebRtcLeg,
        _rtp: RtpLeg,
        _remote: RemoteMedia,
    ) -> Result<Bridge, super::MediaError> {
        todo!()
    }

    /// Points the SIP side at a new remote (e.g. 200 OK SDP after 183 early media).
    pub fn update_remote(&self, _remote: RemoteMedia) {
        todo!()
    }

    /// Current packet counters.
    pub fn stats(&self) -> BridgeStats {
        todo!()
    }

    /// Stops both directions and releases the RTP socket.
    pub async fn stop(self) {
        todo!()
    }
}

//! Symmetric RTP: send to where the far end's media really comes from (a NATed PBX
//! or an SBC that anchors media elsewhere), not only where its SDP said.
//!
//! Sans-IO. The target starts at the SDP address. A new source takes over after a few
//! consecutive valid packets from it: [`LATCH_AFTER`] before anything was confirmed,
//! [`RELATCH_AFTER`] (about half a second of audio) once a source is confirmed, so a
//! stray packet cannot steal the stream. Callers only feed packets that parsed as RTP
//! with a negotiated payload type.

use std::net::SocketAddr;

/// Consecutive packets from a new source that latch while nothing is confirmed.
pub const LATCH_AFTER: u32 = 2;
/// Consecutive packets from a new source that move a confirmed latch.
pub const RELATCH_AFTER: u32 = 25;

/// Where to send one stream.
#[derive(Debug, Clone)]
pub struct Latch {
    /// Whether latching is on at all (config `media.symmetric_rtp`).
    enabled: bool,
    /// The current destination.
    target: SocketAddr,
    /// Whether packets from `target` were seen.
    confirmed: bool,
    /// A source that is not the target, and how many packets in a row came from it.
    candidate: Option<(SocketAddr, u32)>,
}

impl Latch {
    /// Starts at `sdp`; `enabled: false` always sends there.
    pub fn new(sdp: SocketAddr, enabled: bool) -> Self {
        Latch {
            enabled,
            target: sdp,
            confirmed: false,
            candidate: None,
        }
    }

    /// Where to send now.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Whether the target has been confirmed by packets from it.
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// Notes a valid packet from `from`; returns the new target when it moved.
    pub fn on_packet(&mut self, from: SocketAddr) -> Option<SocketAddr> {
        if !self.enabled {
            return None;
        }
        if from == self.target {
            self.confirmed = true;
            self.candidate = None;
            return None;
        }
        let count = match self.candidate {
            Some((addr, n)) if addr == from => n + 1,
            _ => 1,
        };
        let needed = if self.confirmed {
            RELATCH_AFTER
        } else {
            LATCH_AFTER
        };
        if count >= needed {
            self.target = from;
            self.confirmed = true;
            self.candidate = None;
            return Some(from);
        }
        self.candidate = Some((from, count));
        None
    }

    /// Starts over at a new SDP address (re-INVITE, 183 → 200 OK).
    pub fn reset(&mut self, sdp: SocketAddr) {
        if sdp != self.target || !self.enabled {
            self.target = sdp;
            self.confirmed = false;
        }
        self.candidate = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn latches_on_the_real_source_after_two_packets() {
        let mut l = Latch::new(sa("10.0.0.1:4000"), true);
        assert_eq!(l.on_packet(sa("203.0.113.5:31000")), None);
        assert_eq!(l.target(), sa("10.0.0.1:4000"));
        assert_eq!(
            l.on_packet(sa("203.0.113.5:31000")),
            Some(sa("203.0.113.5:31000"))
        );
        assert_eq!(l.target(), sa("203.0.113.5:31000"));
        assert!(l.is_confirmed());
    }

    #[test]
    fn confirmed_source_resists_stray_packets() {
        let mut l = Latch::new(sa("10.0.0.1:4000"), true);
        l.on_packet(sa("10.0.0.1:4000"));
        for _ in 0..RELATCH_AFTER - 1 {
            assert_eq!(l.on_packet(sa("198.51.100.9:1")), None);
        }
        // Interleaved genuine packet resets the count.
        l.on_packet(sa("10.0.0.1:4000"));
        assert_eq!(l.on_packet(sa("198.51.100.9:1")), None);
        for _ in 0..RELATCH_AFTER - 2 {
            l.on_packet(sa("198.51.100.9:1"));
        }
        assert_eq!(
            l.on_packet(sa("198.51.100.9:1")),
            Some(sa("198.51.100.9:1"))
        );
    }

    #[test]
    fn disabled_latch_keeps_the_sdp_address() {
        let mut l = Latch::new(sa("10.0.0.1:4000"), false);
        for _ in 0..100 {
            assert_eq!(l.on_packet(sa("203.0.113.5:31000")), None);
        }
        assert_eq!(l.target(), sa("10.0.0.1:4000"));
    }

    #[test]
    fn reset_starts_over() {
        let mut l = Latch::new(sa("10.0.0.1:4000"), true);
        l.on_packet(sa("10.0.0.2:5000"));
        l.on_packet(sa("10.0.0.2:5000"));
        l.reset(sa("10.0.0.3:6000"));
        assert_eq!(l.target(), sa("10.0.0.3:6000"));
        assert!(!l.is_confirmed());
    }
}

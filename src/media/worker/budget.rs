//! How many DTLS handshake datagrams a media worker handles per loop turn (sans-IO).
//!
//! A handshake flight costs the worker a signature and key agreement, hundreds of
//! times a media packet's work. When many calls start at once, handling every flight
//! in one turn would hold up the audio of the worker's calls already up. So a turn
//! takes at most `per_turn` handshake datagrams; the rest wait in arrival order for
//! the next turns (media never waits), and beyond `backlog` waiting datagrams new ones
//! are dropped: the browser's DTLS retransmits them.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::demux::LegId;

/// Most handshake datagrams waiting for a later turn.
pub const DEFAULT_BACKLOG: usize = 1024;

/// What to do with a datagram routed to a leg.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Handle it now.
    Now,
    /// It waits for a later turn (kept by the budget).
    Deferred,
    /// The backlog is full: drop it.
    Dropped,
}

/// A datagram kept for a later turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The leg it belongs to.
    pub leg: LegId,
    /// Where it came from.
    pub source: SocketAddr,
    /// Our address it was sent to.
    pub local: SocketAddr,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// The per-turn handshake budget of one worker.
#[derive(Debug)]
pub struct HandshakeBudget {
    /// Handshake datagrams handled per turn.
    per_turn: usize,
    /// Most datagrams waiting.
    backlog: usize,
    /// Handled this turn.
    used: usize,
    /// Waiting, oldest first.
    waiting: VecDeque<Waiting>,
}

/// Whether `datagram` is a DTLS handshake record (RFC 7983: first byte 20-63 is DTLS;
/// content type 22 is handshake).
pub fn is_dtls_handshake(datagram: &[u8]) -> bool {
    datagram.first() == Some(&22)
}

impl HandshakeBudget {
    /// A budget of `per_turn` (at least 1) handshake datagrams per turn.
    pub fn new(per_turn: usize, backlog: usize) -> HandshakeBudget {
        HandshakeBudget {
            per_turn: per_turn.max(1),
            backlog,
            used: 0,
            waiting: VecDeque::new(),
        }
    }

    /// A new turn: returns the waiting datagrams to handle now, oldest first, within
    /// this turn's budget.
    pub fn start_turn(&mut self) -> Vec<Waiting> {
        let n = self.waiting.len().min(self.per_turn);
        self.used = n;
        self.waiting.drain(..n).collect()
    }

    /// Judges a datagram for leg `leg` (`path`: its source and our address it was sent
    /// to); `handshaking`: the leg's DTLS is not up yet.
    pub fn admit(
        &mut self,
        leg: LegId,
        (source, local): (SocketAddr, SocketAddr),
        data: &[u8],
        handshaking: bool,
    ) -> Admit {
        if !handshaking || !is_dtls_handshake(data) {
            return Admit::Now;
        }
        // Arrival order: nothing overtakes a datagram already waiting.
        if self.used < self.per_turn && self.waiting.is_empty() {
            self.used += 1;
            return Admit::Now;
        }
        if self.waiting.len() >= self.backlog {
            return Admit::Dropped;
        }
        self.waiting.push_back(Waiting {
            leg,
            source,
            local,
            data: data.to_vec(),
        });
        Admit::Deferred
    }

    /// Whether datagrams wait (the worker must not sleep).
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Forgets what waits for a leg that is gone.
    pub fn forget(&mut self, leg: LegId) {
        self.waiting.retain(|w| w.leg != leg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &[u8] = &[22, 0xfe, 0xfd, 0, 0];
    const SRTP: &[u8] = &[0x80, 0, 0, 1];

    fn src(port: u16) -> (SocketAddr, SocketAddr) {
        (
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from(([127, 0, 0, 2], 3478)),
        )
    }

    #[test]
    fn a_turn_takes_per_turn_handshakes_and_the_rest_wait_in_order() {
        let mut b = HandshakeBudget::new(2, 10);
        assert!(b.start_turn().is_empty());
        for leg in 1..=5 {
            let expected = if leg <= 2 {
                Admit::Now
            } else {
                Admit::Deferred
            };
            assert_eq!(
                b.admit(leg, src(1000 + leg as u16), HELLO, true),
                expected,
                "leg {leg}"
            );
        }
        // Media and the flights of legs already up never wait.
        assert_eq!(b.admit(9, src(9), SRTP, true), Admit::Now);
        assert_eq!(b.admit(9, src(9), HELLO, false), Admit::Now);
        assert!(b.has_waiting());
        let next: Vec<LegId> = b.start_turn().iter().map(|w| w.leg).collect();
        assert_eq!(next, vec![3, 4]);
        // The budget of this turn went to the waiting ones: a new flight waits too.
        assert_eq!(b.admit(6, src(6), HELLO, true), Admit::Deferred);
        let next: Vec<LegId> = b.start_turn().iter().map(|w| w.leg).collect();
        assert_eq!(next, vec![5, 6]);
        assert!(!b.has_waiting());
        assert!(b.start_turn().is_empty());
        assert_eq!(b.admit(7, src(7), HELLO, true), Admit::Now);
    }

    #[test]
    fn a_full_backlog_drops_and_a_closed_leg_is_forgotten() {
        let mut b = HandshakeBudget::new(1, 2);
        b.start_turn();
        assert_eq!(b.admit(1, src(1), HELLO, true), Admit::Now);
        assert_eq!(b.admit(2, src(2), HELLO, true), Admit::Deferred);
        assert_eq!(b.admit(3, src(3), HELLO, true), Admit::Deferred);
        assert_eq!(b.admit(4, src(4), HELLO, true), Admit::Dropped);
        b.forget(2);
        let next: Vec<Waiting> = b.start_turn();
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].leg, next[0].data.as_slice()), (3, HELLO));
        assert!(!b.has_waiting());
    }
}

//! Which source the SIP side's media is accepted from, and where ours goes.
//!
//! Sans-IO (time is an argument). A UDP port of ours is reachable by anyone, so a
//! packet is only played (and only ever moves where we send) when it comes from the
//! far end as its SDP describes it:
//!
//! - Strict (the default, `media.symmetric_rtp = false`): packets are accepted only from
//!   the SDP's address (`c=` and `m=` port, or the RTCP address for RTCP); our media
//!   always goes there.
//! - Symmetric RTP (`media.symmetric_rtp = true`, for a far end behind NAT whose SDP
//!   names an address its media does not come from): during a short window after the
//!   answer (`symmetric_rtp_window`, at most `symmetric_rtp_packets` packets) the first
//!   source that sends [`LATCH_AFTER`] consecutive plausible packets of one SSRC (or the
//!   SDP address itself, at once) is latched; after that, or once the window closed,
//!   only that one source is accepted. The latch never moves again until the far end's
//!   SDP names another address (re-INVITE, UPDATE, 183 → 200 OK from elsewhere).
//!
//! Everything else is [`Verdict::Foreign`]: dropped, never played, counted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Consecutive packets of one source and SSRC that latch during the window.
pub const LATCH_AFTER: u32 = 2;

/// How a latch may move (config `media.symmetric_rtp*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatchPolicy {
    /// Whether a source other than the SDP's may be latched at all.
    pub symmetric: bool,
    /// How long after the answer a latch may happen.
    pub window: Duration,
    /// Within how many received packets after the answer a latch may happen.
    pub window_packets: u32,
}

impl LatchPolicy {
    /// Only the SDP address, ever.
    pub const STRICT: LatchPolicy = LatchPolicy {
        symmetric: false,
        window: Duration::ZERO,
        window_packets: 0,
    };
}

impl Default for LatchPolicy {
    fn default() -> Self {
        LatchPolicy::STRICT
    }
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It comes from the far end: play it.
    Accept,
    /// It comes from the far end, which we just latched onto: play it, and send to
    /// this address from now on.
    Latched(SocketAddr),
    /// A candidate source during the symmetric window, not latched yet: drop it
    /// quietly (it may still turn out to be the far end).
    Pending,
    /// Not from the far end: drop it, never play it, count it.
    Foreign,
}

impl Verdict {
    /// Whether the packet is the far end's (to be played).
    pub fn is_accepted(self) -> bool {
        matches!(self, Verdict::Accept | Verdict::Latched(_))
    }
}

/// A source that may become the latch during the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    /// Its address.
    from: SocketAddr,
    /// Its SSRC (`None` for RTCP).
    ssrc: Option<u32>,
    /// Consecutive plausible packets from it.
    count: u32,
}

/// Where the latch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Symmetric window: a source may still be latched until `deadline` or until
    /// `left` more packets arrived.
    Open {
        /// When the window closes.
        deadline: Instant,
        /// Packets still allowed before the window closes.
        left: u32,
        /// The source being counted.
        candidate: Option<Candidate>,
    },
    /// Media is accepted from this source only.
    Locked(SocketAddr),
}

/// The accepted source and our destination for one stream (RTP, or RTCP).
#[derive(Debug, Clone)]
pub struct Latch {
    /// How it may move.
    policy: LatchPolicy,
    /// The address the far end's SDP names.
    sdp: SocketAddr,
    /// Where we send.
    target: SocketAddr,
    /// Window or lock.
    state: State,
    /// SSRC of the far end's latest plausible packet (RTP only).
    ssrc: Option<u32>,
}

impl Latch {
    /// A latch for a far end whose SDP names `sdp`, answered at `now`.
    pub fn new(now: Instant, sdp: SocketAddr, policy: LatchPolicy) -> Latch {
        Latch {
            policy,
            sdp,
            target: sdp,
            state: Self::initial(now, sdp, policy),
            ssrc: None,
        }
    }

    /// The state right after an answer naming `sdp`.
    fn initial(now: Instant, sdp: SocketAddr, policy: LatchPolicy) -> State {
        if policy.symmetric && policy.window_packets > 0 && !policy.window.is_zero() {
            State::Open {
                deadline: now + policy.window,
                left: policy.window_packets,
                candidate: None,
            }
        } else {
            State::Locked(sdp)
        }
    }

    /// Where to send now.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The address the far end's SDP names.
    pub fn sdp(&self) -> SocketAddr {
        self.sdp
    }

    /// Whether the source is decided (strict mode, or the window is over).
    pub fn is_locked(&self) -> bool {
        matches!(self.state, State::Locked(_))
    }

    /// The SSRC of the far end's stream (its latest accepted plausible packet).
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// The decided source, if decided.
    pub fn locked_source(&self) -> Option<SocketAddr> {
        match self.state {
            State::Locked(source) => Some(source),
            State::Open { .. } => None,
        }
    }

    /// Whether `from` is the far end as far as known now (the locked source, or the
    /// SDP address while the window is open). Does not change the latch.
    pub fn accepts(&self, from: SocketAddr) -> bool {
        match self.state {
            State::Locked(source) => from == source,
            State::Open { .. } => from == self.sdp,
        }
    }

    /// Judges one packet from `from` that arrived at `now`. `ssrc` is the RTP SSRC
    /// (`None` for RTCP); `plausible` says whether it parsed with a negotiated payload
    /// type (only plausible packets can latch).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ssrc: Option<u32>,
        plausible: bool,
    ) -> Verdict {
        let verdict = self.judge(now, from, ssrc, plausible);
        if verdict.is_accepted() && plausible && ssrc.is_some() {
            self.ssrc = ssrc;
        }
        verdict
    }

    /// [`Latch::handle_packet`] without noting the SSRC.
    fn judge(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ssrc: Option<u32>,
        plausible: bool,
    ) -> Verdict {
        let State::Open {
            deadline,
            left,
            candidate,
        } = self.state
        else {
            return self.judge_locked(from);
        };
        if now >= deadline || left == 0 {
            // The window is over without a latch: the SDP address it is.
            self.state = State::Locked(self.sdp);
            return self.judge_locked(from);
        }
        let left = left - 1;
        if from == self.sdp {
            if plausible {
                self.state = State::Locked(from);
            } else {
                self.state = State::Open {
                    deadline,
                    left,
                    candidate,
                };
            }
            return Verdict::Accept;
        }
        if !plausible {
            self.state = State::Open {
                deadline,
                left,
                candidate,
            };
            return Verdict::Foreign;
        }
        let count = match candidate {
            Some(c) if c.from == from && c.ssrc == ssrc => c.count + 1,
            _ => 1,
        };
        if count >= LATCH_AFTER {
            self.state = State::Locked(from);
            self.target = from;
            return Verdict::Latched(from);
        }
        self.state = State::Open {
            deadline,
            left,
            candidate: Some(Candidate { from, ssrc, count }),
        };
        Verdict::Pending
    }

    /// The verdict once locked.
    fn judge_locked(&self, from: SocketAddr) -> Verdict {
        if self.accepts(from) {
            Verdict::Accept
        } else {
            Verdict::Foreign
        }
    }

    /// The far end's SDP changed at `now` (re-INVITE, UPDATE, 183 → 200 OK). A new
    /// address starts over there (with a new window when symmetric); the same address
    /// keeps what was learnt, and so does an unspecified one (`c=0.0.0.0`, the old way
    /// to hold: nothing is sent meanwhile, and the far end comes back from where it
    /// was). Returns whether the target moved.
    pub fn update_sdp(&mut self, now: Instant, sdp: SocketAddr) -> bool {
        if sdp == self.sdp || sdp.ip().is_unspecified() || sdp.port() == 0 {
            return false;
        }
        let before = self.target;
        self.sdp = sdp;
        self.target = sdp;
        self.state = Self::initial(now, sdp, self.policy);
        self.ssrc = None;
        before != sdp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const SDP: &str = "10.0.0.1:4000";
    const NAT: &str = "203.0.113.5:31000";
    const ATTACKER: &str = "198.51.100.9:1234";

    fn symmetric() -> LatchPolicy {
        LatchPolicy {
            symmetric: true,
            window: Duration::from_secs(2),
            window_packets: 50,
        }
    }

    #[test]
    fn strict_accepts_only_the_sdp_address() {
        let t0 = Instant::now();
        let mut l = Latch::new(t0, sa(SDP), LatchPolicy::STRICT);
        assert!(l.is_locked());
        // Before any genuine packet: the stranger is foreign however often it sends.
        for i in 0..100 {
            let now = t0 + Duration::from_millis(i);
            assert_eq!(
                l.handle_packet(now, sa(ATTACKER), Some(7), true),
                Verdict::Foreign
            );
        }
        assert_eq!(l.handle_packet(t0, sa(SDP), Some(1), true), Verdict::Accept);
        // After confirmation too, and the target never moves.
        for _ in 0..100 {
            assert_eq!(
                l.handle_packet(t0, sa(ATTACKER), Some(1), true),
                Verdict::Foreign
            );
        }
        assert_eq!(l.target(), sa(SDP));
    }

    #[test]
    fn symmetric_latches_the_first_source_in_the_window() {
        let t0 = Instant::now();
        let mut l = Latch::new(t0, sa(SDP), symmetric());
        assert!(!l.is_locked());
        assert_eq!(
            l.handle_packet(t0, sa(NAT), Some(5), true),
            Verdict::Pending
        );
        assert_eq!(l.target(), sa(SDP));
        assert_eq!(
            l.handle_packet(t0 + Duration::from_millis(20), sa(NAT), Some(5), true),
            Verdict::Latched(sa(NAT))
        );
        assert_eq!(l.target(), sa(NAT));
        assert!(l.is_locked());
        assert_eq!(l.handle_packet(t0, sa(NAT), Some(5), true), Verdict::Accept);
    }

    #[test]
    fn a_latched_source_never_moves_again() {
        let t0 = Instant::now();
        let mut l = Latch::new(t0, sa(SDP), symmetric());
        l.handle_packet(t0, sa(NAT), Some(5), true);
        l.handle_packet(t0, sa(NAT), Some(5), true);
        // Still within the window's time: an attacker sending plenty does not move it,
        // neither does the SDP address itself.
        for i in 0..200u64 {
            let now = t0 + Duration::from_millis(i);
            assert_eq!(
                l.handle_packet(now, sa(ATTACKER), Some(5), true),
                Verdict::Foreign
            );
        }
        assert_eq!(
            l.handle_packet(t0, sa(SDP), Some(5), true),
            Verdict::Foreign
        );
        assert_eq!(l.target(), sa(NAT));
    }

    #[test]
    fn the_sdp_address_locks_at_once() {
        let t0 = Instant::now();
        let mut l = Latch::new(t0, sa(SDP), symmetric());
        assert_eq!(l.handle_packet(t0, sa(SDP), Some(1), true), Verdict::Accept);
        assert!(l.is_locked());
        assert_eq!(
            l.handle_packet(t0, sa(NAT), Some(1), true),
            Verdict::Foreign
        );
        assert_eq!(
            l.handle_packet(t0, sa(NAT), Some(1), true),
            Verdict::Foreign
        );
        assert_eq!(l.target(), sa(SDP));
    }

    #[test]
    fn only_one_ssrc_latches() {
        let t0 = Instant::now();
        let mut l = Latch::new(t0, sa(SDP), symmetric());
        // Alternating SSRCs from one source never make two in a row.
        for i in 0..10 {
            assert_eq!(
                l.handle_packet(t0, sa(NAT), Some(i % 2), true),
                Verdict::Pending
            );
        }
        assert_eq!(l.target(), sa(SDP));
    }

    #[test]
    fn implausible_packets_never_latch() {
        let t0 = Instant::now();
        let mut l = Latch::new(t0, sa(SDP), symmetric());
        for _ in 0..10 {
            assert_eq!(
                l.handle_packet(t0, sa(NAT), Some(1), false),
                Verdict::Foreign
            );
        }
        assert_eq!(l.target(), sa(SDP));
        assert!(!l.is_locked());
    }

    #[test]
    fn the_window_closes_after_its_time() {
        let t0 = Instant::now();
        let mut l = Latch::new(t0, sa(SDP), symmetric());
        assert_eq!(
            l.handle_packet(t0, sa(NAT), Some(1), true),
            Verdict::Pending
        );
        let late = t0 + Duration::from_secs(2);
        assert_eq!(
            l.handle_packet(late, sa(NAT), Some(1), true),
            Verdict::Foreign
        );
        assert!(l.is_locked());
        assert_eq!(l.target(), sa(SDP));
        assert_eq!(
            l.handle_packet(late, sa(SDP), Some(1), true),
            Verdict::Accept
        );
    }

    #[test]
    fn the_window_closes_after_its_packets() {
        let t0 = Instant::now();
        let policy = LatchPolicy {
            window_packets: 3,
            ..symmetric()
        };
        let mut l = Latch::new(t0, sa(SDP), policy);
        // Three stray packets of alternating sources use the window up.
        l.handle_packet(t0, sa(ATTACKER), Some(1), true);
        l.handle_packet(t0, sa(NAT), Some(1), true);
        l.handle_packet(t0, sa(ATTACKER), Some(1), true);
        assert_eq!(
            l.handle_packet(t0, sa(ATTACKER), Some(1), true),
            Verdict::Foreign
        );
        assert_eq!(l.target(), sa(SDP));
    }

    #[test]
    fn a_new_sdp_address_starts_over_the_same_keeps_the_latch() {
        let t0 = Instant::now();
        let mut l = Latch::new(t0, sa(SDP), symmetric());
        l.handle_packet(t0, sa(NAT), Some(1), true);
        l.handle_packet(t0, sa(NAT), Some(1), true);
        // A hold re-INVITE with the same address keeps the latched NAT source.
        let t1 = t0 + Duration::from_secs(10);
        assert!(!l.update_sdp(t1, sa(SDP)));
        assert_eq!(l.target(), sa(NAT));
        assert_eq!(l.handle_packet(t1, sa(NAT), Some(1), true), Verdict::Accept);
        // Another address: media is expected from there now, the old source is foreign.
        assert!(l.update_sdp(t1, sa("10.0.0.3:6000")));
        assert_eq!(l.target(), sa("10.0.0.3:6000"));
        assert_eq!(
            l.handle_packet(t1, sa("10.0.0.3:6000"), Some(9), true),
            Verdict::Accept
        );
        assert_eq!(
            l.handle_packet(t1, sa(NAT), Some(1), true),
            Verdict::Foreign
        );
    }

    #[test]
    fn an_unspecified_hold_address_keeps_the_source() {
        let t0 = Instant::now();
        let mut l = Latch::new(t0, sa(SDP), symmetric());
        l.handle_packet(t0, sa(NAT), Some(1), true);
        l.handle_packet(t0, sa(NAT), Some(1), true);
        assert!(!l.update_sdp(t0, sa("0.0.0.0:4000")));
        assert_eq!(l.sdp(), sa(SDP));
        assert_eq!(l.target(), sa(NAT));
        assert_eq!(l.handle_packet(t0, sa(NAT), Some(1), true), Verdict::Accept);
    }

    #[test]
    fn strict_follows_the_sdp_too() {
        let t0 = Instant::now();
        let mut l = Latch::new(t0, sa(SDP), LatchPolicy::STRICT);
        l.update_sdp(t0, sa("10.0.0.3:6000"));
        assert_eq!(
            l.handle_packet(t0, sa(SDP), Some(1), true),
            Verdict::Foreign
        );
        assert_eq!(
            l.handle_packet(t0, sa("10.0.0.3:6000"), Some(1), true),
            Verdict::Accept
        );
    }

    #[test]
    fn a_new_window_after_a_new_address() {
        let t0 = Instant::now();
        let mut l = Latch::new(t0, sa(SDP), symmetric());
        l.handle_packet(t0 + Duration::from_secs(5), sa(NAT), Some(1), true);
        assert!(l.is_locked());
        let t1 = t0 + Duration::from_secs(10);
        l.update_sdp(t1, sa("10.0.0.3:6000"));
        assert!(!l.is_locked());
        l.handle_packet(t1, sa(NAT), Some(1), true);
        assert_eq!(
            l.handle_packet(t1, sa(NAT), Some(1), true),
            Verdict::Latched(sa(NAT))
        );
    }
}

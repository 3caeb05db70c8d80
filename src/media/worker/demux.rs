//! Which call a datagram on a worker's shared WebRTC port belongs to (sans-IO).
//!
//! All browser legs of a worker share one UDP port, so the source address is the only
//! thing that tells them apart. A source is known to a leg once it sent a STUN binding
//! request whose USERNAME starts with an ICE ufrag we issued to that leg (the browser's
//! connectivity check, direct or through a TURN relay), or once the leg itself sent to
//! it (full ICE: our checks' answers carry no USERNAME). Everything else is dropped and
//! counted by the caller; nothing here allocates per datagram once a source is known.

use std::collections::HashMap;
use std::net::SocketAddr;

use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{BINDING_REQUEST, Message, is_stun_message};
use rtc::stun::textattrs::TextAttribute;

/// Identifies one browser leg across the worker pool.
pub type LegId = u64;

/// Most source addresses one leg may collect (host, reflexive and relayed paths of one
/// browser are a handful; the cap stops a party that learnt a ufrag from growing the map).
pub const MAX_SOURCES_PER_LEG: usize = 16;

/// Why a datagram was dropped before reaching any leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// An unknown source that sent something other than a STUN binding request.
    UnknownSource,
    /// A binding request whose USERNAME names no ufrag of ours.
    UnknownUfrag,
    /// The leg already has [`MAX_SOURCES_PER_LEG`] sources.
    TooManySources,
}

impl Refused {
    /// The metric label of this reason.
    pub fn label(self) -> &'static str {
        match self {
            Refused::UnknownSource => "unknown_source",
            Refused::UnknownUfrag => "unknown_ufrag",
            Refused::TooManySources => "too_many_sources",
        }
    }
}

/// The routing table of one worker's shared port.
#[derive(Debug, Default)]
pub struct Demux {
    /// Known source → its leg.
    by_source: HashMap<SocketAddr, LegId>,
    /// Our ICE ufrag of each leg → the leg.
    by_ufrag: HashMap<String, LegId>,
    /// Each leg's ufrag and sources, to forget them when it goes.
    legs: HashMap<LegId, (String, Vec<SocketAddr>)>,
}

impl Demux {
    /// Registers a leg under our `ufrag`; false (nothing changed) when another leg has it.
    pub fn add_leg(&mut self, id: LegId, ufrag: &str) -> bool {
        if self.by_ufrag.contains_key(ufrag) || self.legs.contains_key(&id) {
            return false;
        }
        self.by_ufrag.insert(ufrag.to_string(), id);
        self.legs.insert(id, (ufrag.to_string(), Vec::new()));
        true
    }

    /// Forgets a leg, its ufrag and every source it had.
    pub fn remove_leg(&mut self, id: LegId) {
        if let Some((ufrag, sources)) = self.legs.remove(&id) {
            self.by_ufrag.remove(&ufrag);
            for s in sources {
                self.by_source.remove(&s);
            }
        }
    }

    /// The leg `datagram` from `source` belongs to, admitting a new source on a binding
    /// request that carries one of our ufrags.
    pub fn route(&mut self, source: SocketAddr, datagram: &[u8]) -> Result<LegId, Refused> {
        if let Some(id) = self.by_source.get(&source) {
            return Ok(*id);
        }
        let ufrag = binding_request_ufrag(datagram).ok_or(Refused::UnknownSource)?;
        let id = *self.by_ufrag.get(&ufrag).ok_or(Refused::UnknownUfrag)?;
        self.admit(id, source)?;
        Ok(id)
    }

    /// Leg `id` sends to `dest`: its answers belong to that leg (unless another leg
    /// already owns the address, which then keeps it).
    pub fn note_destination(&mut self, id: LegId, dest: SocketAddr) {
        if !self.by_source.contains_key(&dest) {
            let _ = self.admit(id, dest);
        }
    }

    fn admit(&mut self, id: LegId, source: SocketAddr) -> Result<(), Refused> {
        let (_, sources) = self.legs.get_mut(&id).ok_or(Refused::UnknownUfrag)?;
        if sources.len() >= MAX_SOURCES_PER_LEG {
            return Err(Refused::TooManySources);
        }
        sources.push(source);
        self.by_source.insert(source, id);
        Ok(())
    }

    /// Number of legs registered.
    #[cfg(test)]
    pub fn legs(&self) -> usize {
        self.legs.len()
    }

    /// Number of known sources, all legs together.
    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.by_source.len()
    }
}

/// Our ufrag from a STUN binding request's USERNAME (`<our ufrag>:<their ufrag>`).
fn binding_request_ufrag(datagram: &[u8]) -> Option<String> {
    if !is_stun_message(datagram) {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(datagram).ok()?;
    if message.typ != BINDING_REQUEST {
        return None;
    }
    let username = TextAttribute::get_from_as(&message, ATTR_USERNAME).ok()?;
    let ours = username.text.split(':').next()?;
    (!ours.is_empty()).then(|| ours.to_string())
}

#[cfg(test)]
mod tests {
    use rtc::stun::message::{BINDING_SUCCESS, Setter};

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn binding(typ: rtc::stun::message::MessageType, username: Option<&str>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_type(typ);
        m.new_transaction_id().expect("id");
        if let Some(u) = username {
            TextAttribute::new(ATTR_USERNAME, u.to_string())
                .add_to(&mut m)
                .expect("username");
        }
        m.encode();
        m.raw.clone()
    }

    #[test]
    fn a_binding_request_with_our_ufrag_admits_its_source() {
        let mut d = Demux::default();
        assert!(d.add_leg(1, "aaaa1111"));
        assert!(d.add_leg(2, "bbbb2222"));
        let browser = addr("127.0.0.1:40000");
        assert_eq!(
            d.route(browser, b"\x80\x00 media before any check"),
            Err(Refused::UnknownSource)
        );
        let check = binding(BINDING_REQUEST, Some("bbbb2222:theirs"));
        assert_eq!(d.route(browser, &check), Ok(2));
        // From now on anything from that source (DTLS, SRTP) is leg 2's.
        assert_eq!(d.route(browser, b"\x80\x00 srtp"), Ok(2));
        assert_eq!(d.sources(), 1);
    }

    #[test]
    fn strangers_and_foreign_ufrags_are_refused() {
        let mut d = Demux::default();
        d.add_leg(1, "aaaa1111");
        let stranger = addr("127.0.0.9:5000");
        let cases: [(Vec<u8>, Refused); 4] = [
            (
                binding(BINDING_REQUEST, Some("zzzz9999:x")),
                Refused::UnknownUfrag,
            ),
            (binding(BINDING_REQUEST, None), Refused::UnknownSource),
            // A response names no ufrag: only a destination we sent to may answer.
            (
                binding(BINDING_SUCCESS, Some("aaaa1111:x")),
                Refused::UnknownSource,
            ),
            (vec![0x16, 0xfe, 0xfd, 0, 0], Refused::UnknownSource),
        ];
        for (datagram, why) in cases {
            assert_eq!(d.route(stranger, &datagram), Err(why));
        }
        assert_eq!(d.sources(), 0);
    }

    #[test]
    fn our_destinations_may_answer_and_a_removed_leg_forgets_everything() {
        let mut d = Demux::default();
        d.add_leg(7, "cccc3333");
        let candidate = addr("[::1]:6000");
        d.note_destination(7, candidate);
        assert_eq!(d.route(candidate, b"response"), Ok(7));
        d.remove_leg(7);
        assert_eq!(d.route(candidate, b"response"), Err(Refused::UnknownSource));
        let check = binding(BINDING_REQUEST, Some("cccc3333:theirs"));
        assert_eq!(d.route(candidate, &check), Err(Refused::UnknownUfrag));
        assert_eq!((d.legs(), d.sources()), (0, 0));
    }

    #[test]
    fn a_ufrag_is_issued_once_and_sources_per_leg_are_capped() {
        let mut d = Demux::default();
        assert!(d.add_leg(1, "dup0dup0"));
        assert!(
            !d.add_leg(2, "dup0dup0"),
            "a second leg cannot take the ufrag"
        );
        let check = binding(BINDING_REQUEST, Some("dup0dup0:theirs"));
        for port in 0..MAX_SOURCES_PER_LEG as u16 {
            let source = SocketAddr::from(([127, 0, 0, 1], 30000 + port));
            assert_eq!(d.route(source, &check), Ok(1));
        }
        let one_more = addr("127.0.0.1:31000");
        assert_eq!(d.route(one_more, &check), Err(Refused::TooManySources));
        // Another leg's known source is never taken over by a destination note.
        d.add_leg(3, "eeee4444");
        d.note_destination(3, addr("127.0.0.1:30000"));
        assert_eq!(d.route(addr("127.0.0.1:30000"), b"x"), Ok(1));
    }
}

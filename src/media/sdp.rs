//! SDP for the plain RTP leg: the offer we send to the SIP peer and the parsing of its
//! answer (connection address, port, chosen codec, telephone-event).
//!
//! Pure text in, values out. Only what a G.711 trunk needs is read: the first
//! `m=audio` section, `c=` at session or media level, `a=rtpmap`, and the direction
//! attributes. Errors say which line or field was wrong.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::MediaError;
use super::codec::{AudioCodec, PayloadFormat};

/// Payload type we offer for `telephone-event/8000`.
pub const OFFER_DTMF_PAYLOAD_TYPE: u8 = 101;
/// Payload type we offer for Opus (dynamic).
const OFFER_OPUS_PAYLOAD_TYPE: u8 = 96;

/// Media direction from an SDP `a=sendrecv|sendonly|recvonly|inactive` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// The SDP's author only sends.
    SendOnly,
    /// The SDP's author only receives.
    RecvOnly,
    /// No media either way.
    Inactive,
}

impl Direction {
    /// Parses a direction attribute name (`sendrecv`, ...).
    fn from_attribute(attr: &str) -> Option<Direction> {
        match attr {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute name (`sendrecv`, ...).
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether the SDP's author accepts media from us.
    pub fn peer_receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// Whether the SDP's author sends media to us.
    pub fn peer_sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// What the SIP peer's SDP says about where and how to send audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Where to send RTP.
    pub addr: SocketAddr,
    /// The codec and payload types the peer chose.
    pub format: PayloadFormat,
    /// The peer's declared direction.
    pub direction: Direction,
    /// The packet duration the peer asked for (`a=ptime`), ms.
    pub ptime_ms: Option<u32>,
    /// Where to send RTCP: the RTP address with `a=rtcp-mux`, the `a=rtcp` address, or
    /// the RTP port + 1 (RFC 3550 §11).
    pub rtcp_addr: SocketAddr,
    /// Whether RTCP shares the RTP port (`a=rtcp-mux` in the answer, RFC 5761).
    pub rtcp_mux: bool,
}

/// The payload type we offer for `codec`.
fn offer_payload_type(codec: AudioCodec) -> u8 {
    codec
        .static_payload_type()
        .unwrap_or(OFFER_OPUS_PAYLOAD_TYPE)
}

/// Everything our SIP-side SDP says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSdp {
    /// Address advertised in `o=` and `c=`.
    pub ip: IpAddr,
    /// RTP port.
    pub port: u16,
    /// `o=` session id (fixed for the call).
    pub session_id: u64,
    /// `o=` version: incremented for every new description (RFC 3264 §8).
    pub version: u64,
    /// Codecs with their payload types, in order of preference.
    pub codecs: Vec<(AudioCodec, u8)>,
    /// `telephone-event/8000` payload type, if offered/accepted.
    pub dtmf_payload_type: Option<u8>,
    /// Whether to include `a=rtcp-mux`.
    pub rtcp_mux: bool,
    /// Our direction.
    pub direction: Direction,
}

impl LocalSdp {
    /// Our usual offer: `codecs` with our payload types, telephone-event 101,
    /// rtcp-mux, sendrecv, version = session id.
    pub fn offer(ip: IpAddr, port: u16, session_id: u64, codecs: &[AudioCodec]) -> LocalSdp {
        LocalSdp {
            ip,
            port,
            session_id,
            version: session_id,
            codecs: codecs.iter().map(|&c| (c, offer_payload_type(c))).collect(),
            dtmf_payload_type: Some(OFFER_DTMF_PAYLOAD_TYPE),
            rtcp_mux: true,
            direction: Direction::SendRecv,
        }
    }

    /// Our answer to a peer's (re-)offer, already parsed with [`parse_answer`]: the
    /// codec and payload types the peer chose, the direction mirrored (their
    /// `sendonly` is our `recvonly`), and `version` bumped.
    pub fn answer_to(&self, offer: &RemoteMedia) -> LocalSdp {
        let direction = match offer.direction {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        };
        LocalSdp {
            version: self.version + 1,
            codecs: vec![(offer.format.codec, offer.format.payload_type)],
            dtmf_payload_type: offer.format.dtmf_payload_type,
            rtcp_mux: offer.rtcp_mux,
            direction,
            ..self.clone()
        }
    }

    /// The same description with another direction and the next version.
    pub fn with_direction(&self, direction: Direction) -> LocalSdp {
        LocalSdp {
            version: self.version + 1,
            direction,
            ..self.clone()
        }
    }

    /// The SDP text (CRLF lines).
    pub fn to_sdp(&self) -> String {
        let family = if self.ip.is_ipv4() { "IP4" } else { "IP6" };
        let mut fmts: Vec<String> = self.codecs.iter().map(|(_, pt)| pt.to_string()).collect();
        fmts.extend(self.dtmf_payload_type.map(|pt| pt.to_string()));
        let (ip, port, sid, version) = (self.ip, self.port, self.session_id, self.version);
        let mut sdp = String::with_capacity(400);
        // Writing to a String cannot fail.
        let _ = write!(
            sdp,
            "v=0\r\no=callbridge {sid} {version} IN {family} {ip}\r\ns=callbridge\r\n\
             c=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {}\r\n",
            fmts.join(" ")
        );
        for &(codec, pt) in &self.codecs {
            match codec {
                AudioCodec::Opus => {
                    let _ = write!(
                        sdp,
                        "a=rtpmap:{pt} opus/48000/2\r\na=fmtp:{pt} minptime=10;useinbandfec=1\r\n"
                    );
                }
                _ => {
                    let _ = write!(
                        sdp,
                        "a=rtpmap:{pt} {}/{}\r\n",
                        codec.encoding_name(),
                        codec.clock_rate()
                    );
                }
            }
        }
        if let Some(dtmf) = self.dtmf_payload_type {
            let _ = write!(
                sdp,
                "a=rtpmap:{dtmf} telephone-event/8000\r\na=fmtp:{dtmf} 0-16\r\n"
            );
        }
        sdp.push_str("a=ptime:20\r\n");
        if self.rtcp_mux {
            sdp.push_str("a=rtcp-mux\r\n");
        }
        let _ = write!(sdp, "a={}\r\n", self.direction.attribute());
        sdp
    }
}

/// Builds an SDP offer for the SIP leg.
///
/// One `m=audio` section with `codecs` in order (Opus as `opus/48000/2`, payload type
/// 96, with in-band FEC), plus `telephone-event/8000` as payload type 101 (`0-16`),
/// `a=ptime:20`, `a=rtcp-mux` (RTCP goes to port + 1 unless the peer echoes it) and
/// `a=sendrecv`. Lines end with CRLF.
pub fn build_offer(ip: IpAddr, port: u16, session_id: u64, codecs: &[AudioCodec]) -> String {
    LocalSdp::offer(ip, port, session_id, codecs).to_sdp()
}

/// Shorthand for a [`MediaError::BadRemoteSdp`].
fn bad(msg: impl Into<String>) -> MediaError {
    MediaError::BadRemoteSdp(msg.into())
}

/// Parses a `c=` value (`IN IP4 192.0.2.1[/ttl]`).
fn parse_connection(value: &str) -> Result<IpAddr, MediaError> {
    let mut parts = value.split_whitespace();
    let (net, family, addr) = (parts.next(), parts.next(), parts.next());
    if net != Some("IN") || !matches!(family, Some("IP4") | Some("IP6")) {
        return Err(bad(format!(
            "c= line 'c={value}': expected 'IN IP4 <address>' or 'IN IP6 <address>'"
        )));
    }
    let addr = addr.ok_or_else(|| bad(format!("c= line 'c={value}' has no address")))?;
    let addr = addr.split('/').next().unwrap_or(addr);
    addr.parse::<IpAddr>().map_err(|_| {
        bad(format!(
            "c= line 'c={value}': '{addr}' is not an IP address (host names are not supported)"
        ))
    })
}

/// The parts of the first audio section that the answer parser needs.
#[derive(Default)]
struct AudioSection<'a> {
    /// The `m=audio` line's value, for error messages.
    m_line: &'a str,
    /// Port from the m-line.
    port: u16,
    /// Payload types in m-line order.
    formats: Vec<u8>,
    /// `a=rtpmap` payload type -> (encoding name, clock rate).
    rtpmap: HashMap<u8, (&'a str, u32)>,
    /// Media-level connection address.
    connection: Option<IpAddr>,
    /// Media-level direction attribute.
    direction: Option<Direction>,
    /// Media-level `a=ptime`.
    ptime: Option<u32>,
    /// `a=rtcp-mux` present.
    rtcp_mux: bool,
    /// `a=rtcp:<port> [IN IP4 <addr>]`.
    rtcp: Option<(u16, Option<IpAddr>)>,
}

/// Parses an `a=rtcp` value (`<port> [IN IP4 <address>]`, RFC 3605).
fn parse_rtcp_attribute(value: &str) -> Result<(u16, Option<IpAddr>), MediaError> {
    let (port, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let port = port
        .parse()
        .map_err(|_| bad(format!("'a=rtcp:{value}': port '{port}' is not a number")))?;
    let addr = if rest.trim().is_empty() {
        None
    } else {
        Some(parse_connection(rest.trim())?)
    };
    Ok((port, addr))
}

/// Parses the `m=audio` value (`<port> <proto> <fmt>...`).
fn parse_m_line(value: &str) -> Result<AudioSection<'_>, MediaError> {
    let mut parts = value.split_whitespace().skip(1);
    let port = parts
        .next()
        .ok_or_else(|| bad(format!("m= line 'm={value}' has no port")))?;
    let port = port.split('/').next().unwrap_or(port);
    let port: u16 = port.parse().map_err(|_| {
        bad(format!(
            "m= line 'm={value}': port '{port}' is not a number"
        ))
    })?;
    let proto = parts
        .next()
        .ok_or_else(|| bad(format!("m= line 'm={value}' has no transport protocol")))?;
    if !proto.eq_ignore_ascii_case("RTP/AVP") && !proto.eq_ignore_ascii_case("RTP/AVPF") {
        return Err(bad(format!(
            "m= line 'm={value}': transport '{proto}' is not supported (only plain RTP/AVP)"
        )));
    }
    let formats = parts
        .map(|f| {
            f.parse::<u8>().map_err(|_| {
                bad(format!(
                    "m= line 'm={value}': format '{f}' is not a payload type"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AudioSection {
        m_line: value,
        port,
        formats,
        ..Default::default()
    })
}

/// Parses an `a=rtpmap` value (`<pt> <name>/<rate>[/<channels>]`).
fn parse_rtpmap(value: &str) -> Result<(u8, &str, u32), MediaError> {
    let err = || {
        bad(format!(
            "malformed 'a=rtpmap:{value}': expected '<pt> <name>/<rate>'"
        ))
    };
    let (pt, enc) = value.split_once(' ').ok_or_else(err)?;
    let pt: u8 = pt.trim().parse().map_err(|_| err())?;
    let mut enc = enc.trim().split('/');
    let name = enc.next().filter(|n| !n.is_empty()).ok_or_else(err)?;
    let rate: u32 = enc.next().ok_or_else(err)?.parse().map_err(|_| err())?;
    Ok((pt, name, rate))
}

/// The codec a payload type stands for in this section.
fn codec_of(section: &AudioSection<'_>, pt: u8) -> Option<AudioCodec> {
    match section.rtpmap.get(&pt) {
        Some(&(name, rate)) => {
            AudioCodec::from_encoding_name(name).filter(|c| c.clock_rate() == rate)
        }
        None => match pt {
            0 => Some(AudioCodec::Pcmu),
            8 => Some(AudioCodec::Pcma),
            _ => None,
        },
    }
}

/// Parses the SIP peer's SDP answer to our offer.
///
/// Uses the first `m=audio` section; the codec is the first of `offered` (our order of
/// preference) that the answer lists. Fails when the stream is rejected (port 0), when no
/// connection address is given, or when none of `offered` was answered.
pub fn parse_answer(sdp: &str, offered: &[AudioCodec]) -> Result<RemoteMedia, MediaError> {
    if sdp.trim().is_empty() {
        return Err(bad("empty SDP"));
    }
    let mut session_connection = None;
    let mut session_direction = None;
    let mut session_ptime = None;
    let mut audio: Option<AudioSection<'_>> = None;
    // Which section the current line belongs to.
    enum In {
        Session,
        Audio,
        OtherMedia,
    }
    let mut current = In::Session;
    let mut saw_version = false;

    for (index, raw) in sdp.lines().enumerate() {
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        let (kind, value) = line
            .split_once('=')
            .filter(|(k, _)| k.len() == 1)
            .ok_or_else(|| {
                bad(format!(
                    "line {}: '{line}' is not '<type>=<value>'",
                    index + 1
                ))
            })?;
        if !saw_version {
            if kind != "v" {
                return Err(bad(format!(
                    "line {}: SDP must start with 'v=0', found '{line}'",
                    index + 1
                )));
            }
            saw_version = true;
        }
        match (kind, &current) {
            ("m", _) => {
                if value.starts_with("audio ") && audio.is_none() {
                    audio = Some(parse_m_line(value)?);
                    current = In::Audio;
                } else {
                    current = In::OtherMedia;
                }
            }
            ("c", In::Session) => session_connection = Some(parse_connection(value)?),
            ("c", In::Audio) => {
                if let Some(a) = audio.as_mut() {
                    a.connection = Some(parse_connection(value)?);
                }
            }
            ("a", In::Session) => {
                session_direction = Direction::from_attribute(value).or(session_direction);
                if let Some(p) = value.strip_prefix("ptime:") {
                    session_ptime = p.trim().parse().ok();
                }
            }
            ("a", In::Audio) => {
                let Some(a) = audio.as_mut() else { continue };
                if let Some(d) = Direction::from_attribute(value) {
                    a.direction = Some(d);
                } else if let Some(map) = value.strip_prefix("rtpmap:") {
                    let (pt, name, rate) = parse_rtpmap(map)?;
                    a.rtpmap.insert(pt, (name, rate));
                } else if let Some(p) = value.strip_prefix("ptime:") {
                    a.ptime = p.trim().parse().ok();
                } else if value == "rtcp-mux" {
                    a.rtcp_mux = true;
                } else if let Some(r) = value.strip_prefix("rtcp:") {
                    a.rtcp = Some(parse_rtcp_attribute(r)?);
                }
            }
            _ => {}
        }
    }

    let audio = audio.ok_or_else(|| bad("no 'm=audio' line"))?;
    if audio.port == 0 {
        return Err(bad(format!(
            "audio stream rejected (port 0 in 'm={}')",
            audio.m_line
        )));
    }
    let ip = audio
        .connection
        .or(session_connection)
        .ok_or_else(|| bad("no connection address: 'c=' missing at session and media level"))?;

    let answered: Vec<AudioCodec> = audio
        .formats
        .iter()
        .filter_map(|&pt| codec_of(&audio, pt))
        .collect();
    let codec = offered
        .iter()
        .copied()
        .find(|c| answered.contains(c))
        .ok_or_else(|| {
            let names: Vec<String> = answered.iter().map(ToString::to_string).collect();
            let offered: Vec<String> = offered.iter().map(ToString::to_string).collect();
            bad(format!(
                "no common codec: answered [{}] (payload types {:?}), offered [{}]",
                names.join(", "),
                audio.formats,
                offered.join(", ")
            ))
        })?;
    let payload_type = audio
        .formats
        .iter()
        .copied()
        .find(|&pt| codec_of(&audio, pt) == Some(codec))
        .unwrap_or_else(|| offer_payload_type(codec));
    let dtmf_payload_type = audio.formats.iter().copied().find(|pt| {
        audio.rtpmap.get(pt).is_some_and(|&(name, rate)| {
            name.eq_ignore_ascii_case("telephone-event") && rate == 8000
        })
    });
    let direction = if ip.is_unspecified() {
        // RFC 2543-style hold: c=0.0.0.0.
        Direction::Inactive
    } else {
        audio
            .direction
            .or(session_direction)
            .unwrap_or(Direction::SendRecv)
    };

    let addr = SocketAddr::new(ip, audio.port);
    let rtcp_addr = match audio.rtcp {
        _ if audio.rtcp_mux => addr,
        Some((port, rtcp_ip)) => SocketAddr::new(rtcp_ip.unwrap_or(ip), port),
        None => SocketAddr::new(ip, audio.port.saturating_add(1)),
    };
    Ok(RemoteMedia {
        addr,
        rtcp_addr,
        rtcp_mux: audio.rtcp_mux,
        ptime_ms: audio
            .ptime
            .or(session_ptime)
            .filter(|p| (5..=200).contains(p)),
        format: PayloadFormat {
            codec,
            payload_type,
            dtmf_payload_type,
        },
        direction,
    })
}

#[cfg(test)]
#[path = "sdp_tests.rs"]
mod tests;

//! The browser's SDP offer: which audio codec we answer with, and the offer narrowed to
//! that codec (plus `telephone-event/8000`) before it is handed to the WebRTC stack.
//!
//! Pure text in, text out. Narrowing the offer is how we make the answer carry exactly
//! one audio codec: the `webrtc` crate answers with every offered codec it supports, in
//! the offer's order, and matches `telephone-event` regardless of clock rate.

use super::MediaError;
use super::codec::{AudioCodec, PayloadFormat};

/// What we answer for the browser's audio section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OfferChoice {
    /// The `a=mid` of the audio section (used on trickled candidates).
    pub mid: Option<String>,
    /// Index of the audio section among the offer's m-lines.
    pub mline_index: u16,
    /// The codec and payload types the browser will use.
    pub format: PayloadFormat,
}

/// Shorthand for a [`MediaError::BadOffer`].
fn bad(msg: impl Into<String>) -> MediaError {
    MediaError::BadOffer(msg.into())
}

/// Line ranges of each media section: `(start, end)` indices into `lines`.
fn media_sections(lines: &[&str]) -> Vec<(usize, usize)> {
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("m="))
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| (s, starts.get(k + 1).copied().unwrap_or(lines.len())))
        .collect()
}

/// The payload type an `a=rtpmap`/`a=fmtp`/`a=rtcp-fb` line refers to, if any.
fn attribute_payload_type(line: &str) -> Option<u8> {
    let rest = line
        .strip_prefix("a=rtpmap:")
        .or_else(|| line.strip_prefix("a=fmtp:"))
        .or_else(|| line.strip_prefix("a=rtcp-fb:"))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// `(name, clock rate)` of `pt` in the section, from `a=rtpmap` or the static table.
fn encoding_of<'a>(section: &[&'a str], pt: u8) -> Option<(&'a str, u32)> {
    let prefix = format!("a=rtpmap:{pt} ");
    for line in section {
        if let Some(enc) = line.strip_prefix(prefix.as_str()) {
            let mut parts = enc.trim().split('/');
            let name = parts.next()?;
            let rate = parts.next()?.parse().ok()?;
            return Some((name, rate));
        }
    }
    match pt {
        0 => Some(("PCMU", 8000)),
        8 => Some(("PCMA", 8000)),
        _ => None,
    }
}

/// Lines of the offer, without line terminators.
fn split_lines(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Picks the audio codec to answer with: the first of `preferred` that the offer's first
/// audio section contains, and its `telephone-event/8000` payload type if offered.
pub(crate) fn choose(offer: &str, preferred: &[AudioCodec]) -> Result<OfferChoice, MediaError> {
    let lines = split_lines(offer);
    if !lines.first().is_some_and(|l| l.starts_with("v=")) {
        return Err(bad("not an SDP offer (does not start with 'v=')"));
    }
    let sections = media_sections(&lines);
    let (index, &(start, end)) = sections
        .iter()
        .enumerate()
        .find(|(_, (s, _))| lines[*s].starts_with("m=audio "))
        .ok_or_else(|| bad("no audio m-line"))?;
    let section = &lines[start..end];
    let mut m = section[0].split_whitespace();
    let port = m.nth(1).unwrap_or("");
    if port == "0" {
        return Err(bad("the audio m-line is rejected (port 0)"));
    }
    let formats: Vec<u8> = m.skip(1).filter_map(|f| f.parse().ok()).collect();
    let offered: Vec<(u8, AudioCodec)> = formats
        .iter()
        .filter_map(|&pt| {
            let (name, rate) = encoding_of(section, pt)?;
            let codec = AudioCodec::from_encoding_name(name)?;
            (codec.clock_rate() == rate).then_some((pt, codec))
        })
        .collect();
    let (payload_type, codec) = preferred
        .iter()
        .find_map(|want| offered.iter().find(|(_, c)| c == want).copied())
        .ok_or_else(|| {
            let names: Vec<String> = formats
                .iter()
                .filter_map(|&pt| encoding_of(section, pt).map(|(n, r)| format!("{n}/{r}")))
                .collect();
            let wanted: Vec<String> = preferred.iter().map(ToString::to_string).collect();
            bad(format!(
                "no common audio codec: offered [{}], accepted [{}]",
                names.join(", "),
                wanted.join(", ")
            ))
        })?;
    let dtmf_payload_type = formats.iter().copied().find(|&pt| {
        encoding_of(section, pt)
            .is_some_and(|(n, r)| n.eq_ignore_ascii_case("telephone-event") && r == 8000)
    });
    let mid = section
        .iter()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| m.trim().to_owned());
    Ok(OfferChoice {
        mid,
        mline_index: u16::try_from(index).unwrap_or(0),
        format: PayloadFormat {
            codec,
            payload_type,
            dtmf_payload_type,
        },
    })
}

/// The offer with its audio section (the one `choice` was made from) reduced to the
/// chosen payload types; every other line is kept as it was. Lines end with CRLF.
pub(crate) fn restrict(offer: &str, choice: &OfferChoice) -> String {
    let keep: Vec<u8> = std::iter::once(choice.format.payload_type)
        .chain(choice.format.dtmf_payload_type)
        .collect();
    let lines = split_lines(offer);
    let sections = media_sections(&lines);
    let audio = sections.get(usize::from(choice.mline_index)).copied();
    let mut out = String::with_capacity(offer.len());
    for (i, line) in lines.iter().enumerate() {
        let in_audio = audio.is_some_and(|(s, e)| (s..e).contains(&i));
        if in_audio && line.starts_with("m=") {
            let head: Vec<&str> = line.split_whitespace().take(3).collect();
            let fmts: Vec<String> = keep.iter().map(u8::to_string).collect();
            out.push_str(&format!("{} {}", head.join(" "), fmts.join(" ")));
        } else if in_audio && attribute_payload_type(line).is_some_and(|pt| !keep.contains(&pt)) {
            continue;
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like a Chrome offer: Opus first, both telephone-event rates, a data channel.
    const CHROME_LIKE: &str = "v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\na=ssrc:1 cname:x\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n";

    const G711: [AudioCodec; 2] = [AudioCodec::Pcmu, AudioCodec::Pcma];

    #[test]
    fn chooses_pcmu_and_8k_telephone_event() {
        let c = choose(CHROME_LIKE, &G711).unwrap();
        assert_eq!(
            c.format,
            PayloadFormat {
                codec: AudioCodec::Pcmu,
                payload_type: 0,
                dtmf_payload_type: Some(126)
            }
        );
        assert_eq!(c.mid.as_deref(), Some("0"));
        assert_eq!(c.mline_index, 0);
    }

    #[test]
    fn preference_order_is_ours() {
        let c = choose(CHROME_LIKE, &[AudioCodec::Pcma, AudioCodec::Pcmu]).unwrap();
        assert_eq!(c.format.codec, AudioCodec::Pcma);
        assert_eq!(c.format.payload_type, 8);
    }

    #[test]
    fn restrict_keeps_only_chosen_payload_types() {
        let c = choose(CHROME_LIKE, &G711).unwrap();
        let r = restrict(CHROME_LIKE, &c);
        assert!(r.contains("m=audio 9 UDP/TLS/RTP/SAVPF 0 126\r\n"), "{r}");
        assert!(r.contains("a=rtpmap:0 PCMU/8000\r\n"));
        assert!(r.contains("a=rtpmap:126 telephone-event/8000\r\n"));
        for gone in [
            "a=rtpmap:111",
            "a=fmtp:111",
            "a=rtcp-fb:111",
            "a=fmtp:63",
            "a=rtpmap:110",
            "a=rtpmap:8 ",
        ] {
            assert!(!r.contains(gone), "{gone} should be gone:\n{r}");
        }
        // Everything else is untouched, including the data channel section.
        for kept in [
            "a=ice-ufrag:abcd",
            "a=mid:0",
            "a=ssrc:1 cname:x",
            "m=application 9 UDP/DTLS/SCTP",
            "a=mid:1",
        ] {
            assert!(r.contains(kept), "{kept} should stay:\n{r}");
        }
    }

    #[test]
    fn static_payload_types_without_rtpmap() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 8\r\na=mid:a\r\n";
        let c = choose(offer, &G711).unwrap();
        assert_eq!(
            c.format,
            PayloadFormat {
                codec: AudioCodec::Pcma,
                payload_type: 8,
                dtmf_payload_type: None
            }
        );
        assert_eq!(
            restrict(offer, &c),
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 8\r\na=mid:a\r\n"
        );
    }

    #[test]
    fn audio_after_video() {
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\na=rtpmap:96 VP8/90000\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:a\r\n";
        let c = choose(offer, &G711).unwrap();
        assert_eq!(c.mline_index, 1);
        assert_eq!(c.mid.as_deref(), Some("a"));
        assert!(restrict(offer, &c).contains("a=rtpmap:96 VP8/90000"));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = choose("hello", &G711).unwrap_err().to_string();
        assert!(e.contains("not an SDP offer"), "{e}");
        let e = choose("v=0\r\nm=video 9 X 96\r\n", &G711)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no audio m-line"), "{e}");
        let e = choose("v=0\r\nm=audio 0 X 0\r\n", &G711)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rejected"), "{e}");
        let e = choose(
            "v=0\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n",
            &G711,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no common audio codec")
                && e.contains("opus/48000")
                && e.contains("PCMU, PCMA"),
            "{e}"
        );
        assert!(e.starts_with("browser SDP rejected"), "{e}");
    }
}

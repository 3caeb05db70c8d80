//! One direction of the bridge, sans-IO: classify an incoming RTP packet by payload
//! type, convert G.711 law if the legs differ, map the payload type, and rewrite
//! SSRC/sequence/timestamp with an [`RtpRewriter`]. The marker bit of audio is ours:
//! set on the first packet of each talk spurt ([`TalkSpurts`]) and of each new
//! segment, clear otherwise, whatever the source sent; RFC 4733 events keep theirs.
//!
//! `relay(now, packet) -> Result<packet, Dropped>`; the caller does the socket or track
//! I/O and counts the drops.

use std::time::Instant;

use rtc::rtp;

use super::MediaError;
use super::audio::PayloadPool;
use super::codec::{AudioCodec, PayloadFormat};
use super::g711;
use super::rewrite::RtpRewriter;
use super::talkspurt::TalkSpurts;

/// Why a packet was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The payload type is not one negotiated on the receiving leg.
    UnknownPayloadType(u8),
    /// The payload (e.g. telephone-event) has no negotiated counterpart on the sending leg.
    NotNegotiatedOnOutput(u8),
}

/// How audio payloads are converted between the legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conversion {
    /// Same codec: the payload is passed through untouched.
    None,
    /// µ-law in, A-law out.
    UlawToAlaw,
    /// A-law in, µ-law out.
    AlawToUlaw,
}

/// The conversion from `from` to `to`, if the bridge can do it without transcoding.
fn conversion(from: AudioCodec, to: AudioCodec) -> Option<Conversion> {
    match (from, to) {
        _ if from == to => Some(Conversion::None),
        (AudioCodec::Pcmu, AudioCodec::Pcma) => Some(Conversion::UlawToAlaw),
        (AudioCodec::Pcma, AudioCodec::Pcmu) => Some(Conversion::AlawToUlaw),
        _ => None,
    }
}

/// Which leg a relay direction reads from (for error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Towards {
    /// Browser in, SIP peer out.
    Sip,
    /// SIP peer in, browser out.
    Browser,
}

/// One relayed direction: formats of both legs plus the header rewriter.
#[derive(Debug, Clone)]
pub struct Relay {
    /// Which way this relay points.
    towards: Towards,
    /// Payload format on the leg packets come from.
    input: PayloadFormat,
    /// Payload format on the leg packets go to.
    output: PayloadFormat,
    /// Keeps our SSRC, sequence and timestamp continuous.
    rewriter: RtpRewriter,
    /// Buffers for converted payloads (no allocation per packet).
    pool: PayloadPool,
    /// Talk spurt starts of the incoming audio (where our marker goes).
    spurts: TalkSpurts,
}

impl Relay {
    /// A relay from `input` to `output` using `rewriter`; fails if the codecs need transcoding.
    pub fn new(
        towards: Towards,
        input: PayloadFormat,
        output: PayloadFormat,
        rewriter: RtpRewriter,
    ) -> Result<Relay, MediaError> {
        Self::check(towards, input, output)?;
        Ok(Relay {
            towards,
            input,
            output,
            rewriter,
            pool: PayloadPool::default(),
            spurts: TalkSpurts::new(),
        })
    }

    /// Fails with [`MediaError::CodecMismatch`] if `input` cannot be relayed to `output`.
    fn check(
        towards: Towards,
        input: PayloadFormat,
        output: PayloadFormat,
    ) -> Result<(), MediaError> {
        if conversion(input.codec, output.codec).is_some() {
            return Ok(());
        }
        let (browser, sip) = match towards {
            Towards::Sip => (input.codec, output.codec),
            Towards::Browser => (output.codec, input.codec),
        };
        Err(MediaError::CodecMismatch { browser, sip })
    }

    /// Replaces the formats (e.g. the SIP peer's 200 OK chose differently than its 183),
    /// keeping the rewriter so the output stays continuous.
    pub fn set_formats(
        &mut self,
        input: PayloadFormat,
        output: PayloadFormat,
    ) -> Result<(), MediaError> {
        Self::check(self.towards, input, output)?;
        self.input = input;
        self.output = output;
        Ok(())
    }

    /// The SSRC this direction sends with.
    pub fn ssrc(&self) -> u32 {
        self.rewriter.ssrc()
    }

    /// How many times the source changed SSRC or restarted.
    pub fn resyncs(&self) -> u64 {
        self.rewriter.resyncs()
    }

    /// The next packet starts a new output segment (packets were held back on purpose).
    pub fn restart_next(&mut self) {
        self.rewriter.restart_next();
    }

    /// Hands the rewriter back (the pipeline is being rebuilt).
    pub fn into_rewriter(self) -> RtpRewriter {
        self.rewriter
    }

    /// Allocates an output packet of our own (RFC 4733 event) at `now`.
    pub fn insert(&mut self, now: Instant) -> super::rewrite::Rewritten {
        self.rewriter.insert(now)
    }

    /// The audio codec carried by payload type `pt` on the input leg, if any.
    fn input_codec(&self, pt: u8) -> Option<AudioCodec> {
        if pt == self.input.payload_type {
            return Some(self.input.codec);
        }
        // Static G.711 types keep their meaning (RFC 3551), so a peer that answered
        // several laws may send either.
        match pt {
            0 => Some(AudioCodec::Pcmu),
            8 => Some(AudioCodec::Pcma),
            _ => None,
        }
    }

    /// Relays one packet that arrived at `now`: the packet to send, or why it was dropped.
    pub fn relay(&mut self, now: Instant, packet: rtp::Packet) -> Result<rtp::Packet, Dropped> {
        let pt = packet.header.payload_type;
        let is_event = self.input.dtmf_payload_type == Some(pt);
        let (out_pt, payload) = if is_event {
            let out_pt = self
                .output
                .dtmf_payload_type
                .ok_or(Dropped::NotNegotiatedOnOutput(pt))?;
            (out_pt, packet.payload)
        } else {
            let codec = self
                .input_codec(pt)
                .ok_or(Dropped::UnknownPayloadType(pt))?;
            let conv =
                conversion(codec, self.output.codec).ok_or(Dropped::NotNegotiatedOnOutput(pt))?;
            let payload = match conv {
                Conversion::None => packet.payload,
                Conversion::UlawToAlaw => self.pool.map(&packet.payload, g711::ulaw_to_alaw),
                Conversion::AlawToUlaw => self.pool.map(&packet.payload, g711::alaw_to_ulaw),
            };
            (self.output.payload_type, payload)
        };
        let h = &packet.header;
        let rw = self
            .rewriter
            .rewrite(now, h.ssrc, h.sequence_number, h.timestamp);
        let marker = if is_event {
            // RFC 4733: set on the first packet of an event, as the source did.
            h.marker
        } else {
            let spurt = self.spurts.on_audio(h.ssrc, h.sequence_number, h.timestamp);
            rw.marker || spurt
        };
        Ok(rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker,
                payload_type: out_pt,
                sequence_number: rw.sequence_number,
                timestamp: rw.timestamp,
                ssrc: rw.ssrc,
                ..Default::default()
            },
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const BROWSER: PayloadFormat = PayloadFormat {
        codec: AudioCodec::Pcmu,
        payload_type: 0,
        dtmf_payload_type: Some(126),
    };
    const SIP_U: PayloadFormat = PayloadFormat {
        codec: AudioCodec::Pcmu,
        payload_type: 0,
        dtmf_payload_type: Some(101),
    };
    const SIP_A: PayloadFormat = PayloadFormat {
        codec: AudioCodec::Pcma,
        payload_type: 8,
        dtmf_payload_type: None,
    };

    fn pkt(pt: u8, seq: u16, payload: &'static [u8]) -> rtp::Packet {
        rtp::Packet {
            header: rtp::Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq,
                timestamp: u32::from(seq) * 160,
                ssrc: 0x1234,
                extension: true,
                csrc: vec![7],
                ..Default::default()
            },
            payload: Bytes::from_static(payload),
        }
    }

    fn relay(towards: Towards, input: PayloadFormat, output: PayloadFormat) -> Relay {
        Relay::new(
            towards,
            input,
            output,
            RtpRewriter::new(0xAAAA, 100, 1000, 8000, 160),
        )
        .unwrap()
    }

    #[test]
    fn passthrough_maps_payload_types_and_rewrites_header() {
        let mut r = relay(Towards::Sip, BROWSER, SIP_U);
        let now = Instant::now();
        let out = r.relay(now, pkt(0, 5, &[1, 2, 3])).unwrap();
        assert_eq!(&out.payload[..], &[1, 2, 3]);
        assert_eq!(out.header.payload_type, 0);
        assert_eq!(
            (
                out.header.ssrc,
                out.header.sequence_number,
                out.header.timestamp
            ),
            (0xAAAA, 100, 1000)
        );
        assert!(!out.header.extension && out.header.csrc.is_empty());
        let dtmf = r.relay(now, pkt(126, 6, &[5, 0x80, 0, 160])).unwrap();
        assert_eq!(dtmf.header.payload_type, 101);
        assert_eq!(dtmf.header.sequence_number, 101);
        assert_eq!(&dtmf.payload[..], &[5, 0x80, 0, 160]);
    }

    #[test]
    fn marker_is_set_once_per_talk_spurt_whatever_the_source_sends() {
        let mut r = relay(Towards::Sip, BROWSER, SIP_U);
        let t0 = Instant::now();
        let mut marks = Vec::new();
        let mut send = |r: &mut Relay, seq: u16, ts: u32, at_ms: u64| {
            let mut p = pkt(0, seq, &[0xFF; 160]);
            p.header.timestamp = ts;
            // This source sets the marker on every packet.
            p.header.marker = true;
            let out = r
                .relay(t0 + std::time::Duration::from_millis(at_ms), p)
                .unwrap();
            marks.push(out.header.marker);
        };
        for i in 0..10u16 {
            send(&mut r, i, u32::from(i) * 160, u64::from(i) * 20);
        }
        // One second of silence (nothing sent), then talk again.
        for i in 10..15u16 {
            send(
                &mut r,
                i,
                u32::from(i) * 160 + 8000,
                u64::from(i) * 20 + 1000,
            );
        }
        let expected: Vec<bool> = (0..15).map(|i| i == 0 || i == 10).collect();
        assert_eq!(marks, expected);
        // A new source (SSRC) is a new segment: marked.
        let mut p = pkt(0, 500, &[0xFF; 160]);
        p.header.ssrc = 0x9999;
        let out = r
            .relay(t0 + std::time::Duration::from_millis(1400), p)
            .unwrap();
        assert!(out.header.marker);
        // Events keep their own marker.
        let mut e = pkt(126, 501, &[5, 0, 0, 160]);
        e.header.ssrc = 0x9999;
        e.header.marker = true;
        assert!(r.relay(t0, e.clone()).unwrap().header.marker);
        e.header.marker = false;
        e.header.sequence_number = 502;
        assert!(!r.relay(t0, e).unwrap().header.marker);
    }

    #[test]
    fn unknown_payload_types_are_dropped() {
        let mut r = relay(Towards::Sip, BROWSER, SIP_U);
        assert_eq!(
            r.relay(Instant::now(), pkt(13, 1, &[0])).unwrap_err(),
            Dropped::UnknownPayloadType(13)
        );
        let mut r = relay(Towards::Sip, BROWSER, SIP_A);
        assert_eq!(
            r.relay(Instant::now(), pkt(126, 1, &[0])).unwrap_err(),
            Dropped::NotNegotiatedOnOutput(126)
        );
    }

    #[test]
    fn law_conversion_both_ways() {
        let mut to_sip = relay(Towards::Sip, BROWSER, SIP_A);
        let mut to_browser = relay(Towards::Browser, SIP_A, BROWSER);
        let now = Instant::now();
        let a = to_sip.relay(now, pkt(0, 1, &[0xFF, 0x80, 0x00])).unwrap();
        assert_eq!(a.header.payload_type, 8);
        assert_eq!(&a.payload[..], &[0xD5, 0xAA, 0x2A]);
        let u = to_browser.relay(now, a).unwrap();
        assert_eq!(u.header.payload_type, 0);
        // Silence comes back as the smallest µ-law level (A-law has no zero).
        assert_eq!(&u.payload[..], &[0xFE, 0x80, 0x00]);
    }

    #[test]
    fn other_static_law_from_sip_is_converted() {
        // The peer answered "0 8" and we chose PCMU, but it sends PCMA anyway.
        let mut r = relay(Towards::Browser, SIP_U, BROWSER);
        let out = r.relay(Instant::now(), pkt(8, 1, &[0xD5])).unwrap();
        assert_eq!(out.header.payload_type, 0);
        assert_eq!(&out.payload[..], &[0xFE]);
    }

    #[test]
    fn opus_cannot_be_bridged_to_g711() {
        let opus = PayloadFormat {
            codec: AudioCodec::Opus,
            payload_type: 111,
            dtmf_payload_type: None,
        };
        let rw = RtpRewriter::new(1, 1, 1, 8000, 160);
        let e = Relay::new(Towards::Sip, opus, SIP_U, rw.clone()).unwrap_err();
        assert!(
            matches!(
                e,
                MediaError::CodecMismatch {
                    browser: AudioCodec::Opus,
                    sip: AudioCodec::Pcmu
                }
            ),
            "{e}"
        );
        let e = Relay::new(Towards::Browser, SIP_U, opus, rw).unwrap_err();
        assert!(
            matches!(
                e,
                MediaError::CodecMismatch {
                    browser: AudioCodec::Opus,
                    sip: AudioCodec::Pcmu
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn set_formats_keeps_stream_continuous() {
        let mut r = relay(Towards::Sip, BROWSER, SIP_U);
        let now = Instant::now();
        let a = r.relay(now, pkt(0, 1, &[0xFF])).unwrap();
        r.set_formats(BROWSER, SIP_A).unwrap();
        let b = r.relay(now, pkt(0, 2, &[0xFF])).unwrap();
        assert_eq!(b.header.sequence_number, a.header.sequence_number + 1);
        assert_eq!(b.header.payload_type, 8);
        assert_eq!(&b.payload[..], &[0xD5]);
    }
}

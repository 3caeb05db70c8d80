//! Codec instances of the transcoding path: G.711 and Opus decoders and encoders, all
//! at 8 kHz mono (Opus decodes straight to 8 kHz and is fed 8 kHz, so no resampler),
//! packet-loss concealment, and a pool that hands out payload buffers without one
//! allocation per packet.
//!
//! Sans-IO. Loss handling: Opus uses in-band FEC from the next packet when it is there
//! and its own PLC otherwise; G.711 repeats the last 20 ms with a gain that fades to
//! silence over 60 ms.

use bytes::{Bytes, BytesMut};

use super::MediaError;
use super::codec::AudioCodec;
use super::g711;

/// Sample rate of every decoded signal in the bridge.
pub const PCM_RATE: u32 = 8000;
/// Largest decoded frame: 120 ms at 8 kHz (the longest Opus packet).
pub const MAX_FRAME: usize = 960;
/// Largest Opus packet we produce (RFC 6716 allows 1275 bytes per frame).
const OPUS_MAX_PACKET: usize = 1275;
/// Samples over which G.711 concealment fades to silence (60 ms).
const G711_FADE: usize = 480;
/// Samples of G.711 history repeated by concealment (20 ms).
const G711_HISTORY: usize = 160;
/// Bytes allocated at once by a [`PayloadPool`].
const POOL_BLOCK: usize = 16 * 1024;
/// Opus concealment granularity: 2.5 ms at 8 kHz.
const OPUS_QUANTUM: usize = 20;

/// Opus encoder settings (config `[media]` keys `opus_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    /// Encoder complexity, 0 (cheapest) to 10.
    pub complexity: u8,
    /// Target bitrate, bits per second.
    pub bitrate: u32,
    /// Whether to send in-band FEC (LBRR) so the browser can recover a lost packet.
    pub fec: bool,
    /// Packet loss, percent, the encoder plans its FEC for.
    pub expected_loss_pct: u8,
}

impl Default for OpusSettings {
    fn default() -> Self {
        OpusSettings {
            // SILK at complexity 0-1 costs ~14 µs per 20 ms frame here, 2 already ~30 µs and
            // 5 ~40 µs (docs/benchmarks.md); speech quality differs little at 8 kHz.
            complexity: 1,
            bitrate: 24_000,
            fec: true,
            expected_loss_pct: 10,
        }
    }
}

/// Maps an `opus` error into [`MediaError::Codec`].
fn opus_err(what: &'static str) -> impl Fn(opus::Error) -> MediaError {
    move |e| MediaError::Codec(format!("{what}: {e}"))
}

/// How a lost packet was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concealment {
    /// Recovered from the next packet's in-band FEC.
    Fec,
    /// Synthesised by packet-loss concealment.
    Plc,
}

/// The codec-specific part of a [`Decoder`].
enum DecoderKind {
    /// G.711 µ-law.
    Ulaw,
    /// G.711 A-law.
    Alaw,
    /// Opus, decoding at 8 kHz mono.
    Opus(opus::Decoder),
}

/// Decodes one incoming stream to 8 kHz PCM.
pub struct Decoder {
    /// Which codec.
    kind: DecoderKind,
    /// The last decoded G.711 samples, repeated by concealment.
    history: [i16; G711_HISTORY],
    /// Valid samples in `history`.
    history_len: usize,
    /// Samples concealed since the last good packet (drives the fade).
    concealed_run: usize,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codec = match self.kind {
            DecoderKind::Ulaw => "PCMU",
            DecoderKind::Alaw => "PCMA",
            DecoderKind::Opus(_) => "opus",
        };
        f.debug_struct("Decoder").field("codec", &codec).finish()
    }
}

impl Decoder {
    /// A decoder for `codec`.
    pub fn new(codec: AudioCodec) -> Result<Decoder, MediaError> {
        let kind = match codec {
            AudioCodec::Pcmu => DecoderKind::Ulaw,
            AudioCodec::Pcma => DecoderKind::Alaw,
            AudioCodec::Opus => DecoderKind::Opus(
                opus::Decoder::new(PCM_RATE, opus::Channels::Mono)
                    .map_err(opus_err("create Opus decoder"))?,
            ),
        };
        Ok(Decoder {
            kind,
            history: [0; G711_HISTORY],
            history_len: 0,
            concealed_run: 0,
        })
    }

    /// Decodes `payload` into `out` (at least [`MAX_FRAME`] long); the sample count, or
    /// `None` for a payload the codec rejects.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Option<usize> {
        self.concealed_run = 0;
        match &mut self.kind {
            DecoderKind::Ulaw | DecoderKind::Alaw => {
                let n = payload.len().min(out.len());
                let law = if matches!(self.kind, DecoderKind::Ulaw) {
                    g711::ulaw_to_linear
                } else {
                    g711::alaw_to_linear
                };
                for (o, &c) in out.iter_mut().zip(&payload[..n]) {
                    *o = law(c);
                }
                let keep = n.min(G711_HISTORY);
                self.history[..keep].copy_from_slice(&out[n - keep..n]);
                self.history_len = keep;
                Some(n)
            }
            DecoderKind::Opus(d) => {
                if payload.is_empty() {
                    return None;
                }
                d.decode(payload, out, false).ok()
            }
        }
    }

    /// Fills `samples` (rounded for Opus) of concealment into `out`, using `fec` (the next
    /// packet) when the codec can. Returns the sample count and how it was made.
    pub fn conceal(
        &mut self,
        samples: usize,
        fec: Option<&[u8]>,
        out: &mut [i16],
    ) -> (usize, Concealment) {
        let samples = samples.clamp(1, out.len().min(MAX_FRAME));
        match &mut self.kind {
            DecoderKind::Opus(d) => {
                let n = (samples.div_ceil(OPUS_QUANTUM) * OPUS_QUANTUM).min(out.len());
                if let Some(next) = fec.filter(|p| !p.is_empty())
                    && let Ok(got) = d.decode(next, &mut out[..n], true)
                    && got > 0
                {
                    return (got, Concealment::Fec);
                }
                match d.decode(&[], &mut out[..n], false) {
                    Ok(got) => (got, Concealment::Plc),
                    Err(_) => {
                        out[..n].fill(0);
                        (n, Concealment::Plc)
                    }
                }
            }
            DecoderKind::Ulaw | DecoderKind::Alaw => {
                let len = self.history_len;
                for (i, o) in out[..samples].iter_mut().enumerate() {
                    let run = self.concealed_run + i;
                    *o = if len == 0 || run >= G711_FADE {
                        0
                    } else {
                        let gain = (G711_FADE - run) as i32;
                        (i32::from(self.history[run % len]) * gain / G711_FADE as i32) as i16
                    };
                }
                self.concealed_run += samples;
                (samples, Concealment::Plc)
            }
        }
    }
}

/// The codec-specific part of an [`Encoder`].
enum EncoderKind {
    /// G.711 µ-law.
    Ulaw,
    /// G.711 A-law.
    Alaw,
    /// Opus, fed 8 kHz mono.
    Opus(opus::Encoder),
}

/// Encodes 8 kHz PCM frames for one outgoing stream.
pub struct Encoder {
    /// Which codec.
    kind: EncoderKind,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codec = match self.kind {
            EncoderKind::Ulaw => "PCMU",
            EncoderKind::Alaw => "PCMA",
            EncoderKind::Opus(_) => "opus",
        };
        f.debug_struct("Encoder").field("codec", &codec).finish()
    }
}

impl Encoder {
    /// An encoder for `codec`; `opus` applies to Opus only.
    pub fn new(codec: AudioCodec, opus: &OpusSettings) -> Result<Encoder, MediaError> {
        let kind = match codec {
            AudioCodec::Pcmu => EncoderKind::Ulaw,
            AudioCodec::Pcma => EncoderKind::Alaw,
            AudioCodec::Opus => {
                let err = opus_err("configure Opus encoder");
                let mut e =
                    opus::Encoder::new(PCM_RATE, opus::Channels::Mono, opus::Application::Voip)
                        .map_err(opus_err("create Opus encoder"))?;
                e.set_complexity(i32::from(opus.complexity.min(10)))
                    .map_err(&err)?;
                e.set_bitrate(opus::Bitrate::Bits(
                    opus.bitrate.clamp(6_000, 510_000) as i32
                ))
                .map_err(&err)?;
                e.set_inband_fec(opus.fec).map_err(&err)?;
                e.set_packet_loss_perc(i32::from(opus.expected_loss_pct.min(100)))
                    .map_err(&err)?;
                e.set_signal(opus::Signal::Voice).map_err(&err)?;
                EncoderKind::Opus(e)
            }
        };
        Ok(Encoder { kind })
    }

    /// Encodes one frame of `pcm` (for Opus: 2.5, 5, 10, 20, 40 or 60 ms) into a payload.
    pub fn encode(&mut self, pcm: &[i16], pool: &mut PayloadPool) -> Option<Bytes> {
        match &mut self.kind {
            EncoderKind::Ulaw => pool.fill(pcm.len(), |buf| {
                for (o, &s) in buf.iter_mut().zip(pcm) {
                    *o = g711::linear_to_ulaw(s);
                }
                Some(pcm.len())
            }),
            EncoderKind::Alaw => pool.fill(pcm.len(), |buf| {
                for (o, &s) in buf.iter_mut().zip(pcm) {
                    *o = g711::linear_to_alaw(s);
                }
                Some(pcm.len())
            }),
            EncoderKind::Opus(e) => pool.fill(OPUS_MAX_PACKET, |buf| e.encode(pcm, buf).ok()),
        }
    }
}

/// Whether `samples` at 8 kHz is a frame size the Opus encoder accepts.
pub fn is_opus_frame(samples: usize) -> bool {
    matches!(samples, 20 | 40 | 80 | 160 | 320 | 480)
}

/// Hands out payload buffers carved from shared 16 KiB blocks, so producing a packet
/// does not allocate (one allocation per block, freed when its last packet is dropped).
#[derive(Debug, Default)]
pub struct PayloadPool {
    /// The unused rest of the current block.
    buf: BytesMut,
}

impl Clone for PayloadPool {
    fn clone(&self) -> Self {
        PayloadPool::default()
    }
}

impl PayloadPool {
    /// Makes sure `n` more bytes fit in the current block.
    fn reserve(&mut self, n: usize) {
        if self.buf.capacity() - self.buf.len() < n {
            self.buf = BytesMut::with_capacity(POOL_BLOCK.max(n));
        }
    }

    /// A payload of `input` with every byte mapped through `f` (e.g. a G.711 law table).
    pub fn map(&mut self, input: &[u8], f: impl Fn(u8) -> u8) -> Bytes {
        self.reserve(input.len());
        self.buf.resize(input.len(), 0);
        for (o, &i) in self.buf.iter_mut().zip(input) {
            *o = f(i);
        }
        self.buf.split().freeze()
    }

    /// A payload of the bytes produced by `bytes`.
    pub fn collect(&mut self, bytes: impl ExactSizeIterator<Item = u8>) -> Bytes {
        self.reserve(bytes.len());
        self.buf.extend(bytes);
        self.buf.split().freeze()
    }

    /// A payload written by `write` into at most `max` bytes (`None` if it fails).
    pub fn fill(
        &mut self,
        max: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<Bytes> {
        self.reserve(max);
        self.buf.resize(max, 0);
        match write(&mut self.buf[..]) {
            Some(n) if n <= max => {
                self.buf.truncate(n);
                Some(self.buf.split().freeze())
            }
            _ => {
                self.buf.clear();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, n: usize, offset: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (offset + i) as f64 / f64::from(PCM_RATE);
                (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn g711_round_trip_through_encoder_and_decoder() {
        let mut pool = PayloadPool::default();
        let pcm = tone(1000.0, 160, 0);
        for codec in [AudioCodec::Pcmu, AudioCodec::Pcma] {
            let mut enc = Encoder::new(codec, &OpusSettings::default()).unwrap();
            let mut dec = Decoder::new(codec).unwrap();
            let payload = enc.encode(&pcm, &mut pool).unwrap();
            assert_eq!(payload.len(), 160);
            let mut out = [0i16; MAX_FRAME];
            assert_eq!(dec.decode(&payload, &mut out), Some(160));
            for (a, b) in pcm.iter().zip(&out) {
                assert!((i32::from(*a) - i32::from(*b)).abs() <= 260, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn opus_encodes_8khz_frames_and_decodes_at_8khz() {
        let mut pool = PayloadPool::default();
        let mut enc = Encoder::new(AudioCodec::Opus, &OpusSettings::default()).unwrap();
        let mut dec = Decoder::new(AudioCodec::Opus).unwrap();
        let mut out = [0i16; MAX_FRAME];
        let mut energy_in = 0f64;
        let mut energy_out = 0f64;
        for k in 0..50 {
            let pcm = tone(440.0, 160, k * 160);
            let p = enc.encode(&pcm, &mut pool).unwrap();
            assert!(!p.is_empty() && p.len() < 200, "{} bytes", p.len());
            assert_eq!(dec.decode(&p, &mut out), Some(160));
            if k > 10 {
                energy_in += pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
                energy_out += out[..160]
                    .iter()
                    .map(|&s| f64::from(s).powi(2))
                    .sum::<f64>();
            }
        }
        let ratio = energy_out / energy_in;
        assert!((0.5..2.0).contains(&ratio), "energy ratio {ratio}");
    }

    #[test]
    fn opus_loss_uses_fec_when_the_next_packet_is_there() {
        let mut pool = PayloadPool::default();
        let mut enc = Encoder::new(AudioCodec::Opus, &OpusSettings::default()).unwrap();
        let mut dec = Decoder::new(AudioCodec::Opus).unwrap();
        let packets: Vec<Bytes> = (0..20)
            .map(|k| enc.encode(&tone(300.0, 160, k * 160), &mut pool).unwrap())
            .collect();
        let mut out = [0i16; MAX_FRAME];
        for p in &packets[..10] {
            dec.decode(p, &mut out).unwrap();
        }
        let (n, how) = dec.conceal(160, Some(&packets[11]), &mut out);
        assert_eq!((n, how), (160, Concealment::Fec));
        let (n, how) = dec.conceal(160, None, &mut out);
        assert_eq!((n, how), (160, Concealment::Plc));
    }

    #[test]
    fn g711_concealment_fades_to_silence() {
        let mut dec = Decoder::new(AudioCodec::Pcmu).unwrap();
        let mut out = [0i16; MAX_FRAME];
        let frame: Vec<u8> = tone(500.0, 160, 0)
            .into_iter()
            .map(g711::linear_to_ulaw)
            .collect();
        dec.decode(&frame, &mut out).unwrap();
        let peak = |s: &[i16]| s.iter().map(|x| x.unsigned_abs()).max().unwrap_or(0);
        let first_peak = peak(&out[..160]);
        let (n, _) = dec.conceal(160, None, &mut out);
        assert_eq!(n, 160);
        let p1 = peak(&out[..160]);
        assert!(
            p1 > first_peak / 2,
            "first concealed frame keeps most energy"
        );
        dec.conceal(160, None, &mut out);
        dec.conceal(160, None, &mut out);
        assert!(
            peak(&out[140..160]) < first_peak / 10,
            "nearly faded at 60 ms"
        );
        dec.conceal(160, None, &mut out);
        assert_eq!(peak(&out[..160]), 0, "silent after 60 ms");
    }

    #[test]
    fn pool_reuses_one_block_for_many_payloads() {
        let mut pool = PayloadPool::default();
        let a = pool.collect([1u8; 160].into_iter());
        let b = pool.collect([2u8; 160].into_iter());
        assert_eq!((&a[..], &b[..]), (&[1u8; 160][..], &[2u8; 160][..]));
        // Both views share one allocation: b starts right after a.
        assert_eq!(a.as_ptr().wrapping_add(160), b.as_ptr());
        let c = pool.fill(100, |buf| {
            buf[..3].copy_from_slice(&[7, 8, 9]);
            Some(3)
        });
        assert_eq!(c.as_deref(), Some(&[7u8, 8, 9][..]));
        assert!(pool.fill(10, |_| None).is_none());
    }
}

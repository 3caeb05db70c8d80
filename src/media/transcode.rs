//! One transcoded direction, sans-IO:
//!
//! ```text
//! RTP in ─> JitterBuffer ─> Decoder (8 kHz PCM; FEC/PLC on loss) ─> Repacketizer
//!        ─> Encoder (output ptime) ─> RtpRewriter ─> RTP out
//! ```
//!
//! Every position on the way is a sample index of one 8 kHz timeline derived from the
//! input timestamps (`ts × 8000 / clock`), so the output timestamp of a frame is that
//! position in the output clock (×6 for Opus): 20 ms is 960 ticks at 48 kHz and 160 at
//! 8 kHz, and gaps (DTX, loss beyond concealment) keep their length. RFC 4733 events go
//! through the jitter buffer with the audio (same sequence space) and come out at the
//! position of their start timestamp, payload unchanged (`telephone-event/8000` on
//! both legs). Events we generate ([`Transcoder::inject_event`]) take the position of
//! the next audio sample. Either way the audio before an event leaves before it: a
//! frame still being filled is completed with silence first, so one output queue
//! carries audio and events in timeline order (sequence numbers and timestamps agree).
//! The marker is set on the first frame of each talk spurt: after a gap in the timeline
//! (DTX, a skipped loss) or a source restart. The [`RtpRewriter`] at the end gives the
//! output its SSRC and keeps it continuous when the pipeline is rebuilt (new SIP codec
//! after 183 → 200).
//!
//! Contract: `handle_packet(now, packet)`, `handle_timeout(now)`, drain
//! `poll_output()`, then wait until `poll_timeout()`.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use rtc::rtp;

use super::MediaError;
use super::audio::{Concealment, Decoder, Encoder, MAX_FRAME, OpusSettings, PCM_RATE, PayloadPool};
use super::codec::{AudioCodec, PayloadFormat};
use super::dtmf::EventPacket;
use super::g711;
use super::jitter::{Incoming, JitterBuffer, JitterConfig, JitterStats, Playout};
use super::relay::Dropped;
use super::repacketize::Repacketizer;
use super::rewrite::RtpRewriter;

/// Settings of the transcoding path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscodeConfig {
    /// Jitter buffer bounds.
    pub jitter: JitterConfig,
    /// Opus encoder settings.
    pub opus: OpusSettings,
}

/// Codec work done by one direction (zero on a relayed call).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodecWork {
    /// Packets decoded.
    pub decoded: u64,
    /// Frames encoded.
    pub encoded: u64,
    /// Lost packets replaced by PLC.
    pub concealed: u64,
    /// Lost packets recovered from in-band FEC.
    pub fec_recovered: u64,
    /// Payloads the decoder rejected (concealed instead).
    pub decode_errors: u64,
}

impl std::ops::Add for CodecWork {
    type Output = CodecWork;
    fn add(self, o: CodecWork) -> CodecWork {
        CodecWork {
            decoded: self.decoded + o.decoded,
            encoded: self.encoded + o.encoded,
            concealed: self.concealed + o.concealed,
            fec_recovered: self.fec_recovered + o.fec_recovered,
            decode_errors: self.decode_errors + o.decode_errors,
        }
    }
}

/// The encoding end of a transcoder: encoder, packetisation and output queue.
#[derive(Debug)]
struct Sink {
    /// Output format.
    output: PayloadFormat,
    /// The encoder.
    encoder: Encoder,
    /// Payload buffers.
    pool: PayloadPool,
    /// Sequence number of our virtual source (the rewriter maps it).
    seq: u16,
    /// SSRC of our virtual source.
    ssrc: u32,
    /// Set the marker on the next audio packet.
    marker: bool,
    /// Where the next audio frame starts if the talk spurt goes on.
    next_audio: Option<i64>,
    /// Output clock ticks per 8 kHz sample.
    ticks_per_sample: i64,
    /// Output SSRC, sequence and timestamp continuity.
    rewriter: RtpRewriter,
    /// Packets ready to send.
    queue: VecDeque<rtp::Packet>,
    /// Frames encoded.
    encoded: u64,
}

impl Sink {
    /// Queues a packet of our virtual source at timeline position `pos`.
    fn push(&mut self, now: Instant, pos: i64, payload_type: u8, marker: bool, payload: Bytes) {
        let ts = (pos * self.ticks_per_sample) as u32;
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let rw = self.rewriter.rewrite(now, self.ssrc, seq, ts);
        self.queue.push_back(rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker: marker || rw.marker,
                payload_type,
                sequence_number: rw.sequence_number,
                timestamp: rw.timestamp,
                ssrc: rw.ssrc,
                ..Default::default()
            },
            payload,
        });
    }

    /// Encodes one frame at `pos` and queues it.
    fn audio(&mut self, now: Instant, pos: i64, pcm: &[i16]) {
        let Some(payload) = self.encoder.encode(pcm, &mut self.pool) else {
            tracing::debug!("encoder rejected a frame");
            self.next_audio = Some(pos + pcm.len() as i64);
            return;
        };
        self.encoded += 1;
        let gap = self.next_audio.is_some_and(|next| pos > next);
        self.next_audio = Some(pos + pcm.len() as i64);
        let marker = std::mem::take(&mut self.marker) || gap;
        self.push(now, pos, self.output.payload_type, marker, payload);
    }
}

/// One direction that decodes and re-encodes.
#[derive(Debug)]
pub struct Transcoder {
    /// Input format.
    input: PayloadFormat,
    /// Input RTP clock rate.
    input_clock: i64,
    /// Reorders and times the input.
    jitter: JitterBuffer,
    /// Decodes the input codec.
    decoder: Decoder,
    /// Cuts decoded audio into output frames.
    repack: Repacketizer,
    /// Scratch buffer for decoded audio.
    pcm: Box<[i16; MAX_FRAME]>,
    /// Encodes and packetises.
    sink: Sink,
    /// Codec work counters (decode side; encode side is in the sink).
    work: CodecWork,
    /// Timeline position of the event we are generating.
    event_pos: i64,
    /// Position and start time of the last event we generated.
    last_event: Option<(i64, Instant)>,
}

/// The frame length in 8 kHz samples for `codec` at `ptime_ms` (Opus: 20 ms unless the
/// ptime is one Opus supports).
pub fn frame_samples(codec: AudioCodec, ptime_ms: u32) -> usize {
    let samples = (PCM_RATE * ptime_ms / 1000) as usize;
    match codec {
        AudioCodec::Opus if !super::audio::is_opus_frame(samples) => 160,
        _ => samples.clamp(40, MAX_FRAME),
    }
}

impl Transcoder {
    /// A transcoder from `input` to `output` packets of `output_ptime_ms`, sending
    /// through `rewriter` (whose clock is set to the output codec's).
    pub fn new(
        input: PayloadFormat,
        output: PayloadFormat,
        output_ptime_ms: u32,
        mut rewriter: RtpRewriter,
        config: &TranscodeConfig,
    ) -> Result<Transcoder, MediaError> {
        let frame = frame_samples(output.codec, output_ptime_ms);
        let ticks_per_sample = i64::from(output.codec.clock_rate() / PCM_RATE);
        rewriter.set_clock(
            output.codec.clock_rate(),
            frame as u32 * ticks_per_sample as u32,
        );
        Ok(Transcoder {
            input,
            input_clock: i64::from(input.codec.clock_rate()),
            jitter: JitterBuffer::new(config.jitter, input.codec.clock_rate()),
            decoder: Decoder::new(input.codec)?,
            repack: Repacketizer::new(frame),
            pcm: Box::new([0; MAX_FRAME]),
            sink: Sink {
                output,
                encoder: Encoder::new(output.codec, &config.opus)?,
                pool: PayloadPool::default(),
                seq: 0,
                ssrc: rand::random(),
                marker: true,
                next_audio: None,
                ticks_per_sample,
                rewriter,
                queue: VecDeque::with_capacity(8),
                encoded: 0,
            },
            work: CodecWork::default(),
            event_pos: 0,
            last_event: None,
        })
    }

    /// Hands the rewriter back (the pipeline is being rebuilt).
    pub fn into_rewriter(self) -> RtpRewriter {
        self.sink.rewriter
    }

    /// The output SSRC.
    pub fn ssrc(&self) -> u32 {
        self.sink.rewriter.ssrc()
    }

    /// Source restarts hidden by the rewriter.
    pub fn resyncs(&self) -> u64 {
        self.sink.rewriter.resyncs()
    }

    /// Codec work so far.
    pub fn work(&self) -> CodecWork {
        CodecWork {
            encoded: self.sink.encoded,
            ..self.work
        }
    }

    /// Jitter buffer counters and delay.
    pub fn jitter_stats(&self) -> JitterStats {
        self.jitter.stats()
    }

    /// Whether packets of payload type `pt` are taken (the input codec, the other G.711
    /// law, or telephone-event).
    pub fn accepts_payload_type(&self, pt: u8) -> bool {
        pt == self.input.payload_type
            || g711_alternative(self.input.codec, pt)
            || self.input.dtmf_payload_type == Some(pt)
    }

    /// Marks the next audio frame as a talk spurt start (input was held back).
    pub fn restart_next(&mut self) {
        self.sink.marker = true;
    }

    /// Emits the audio frame being filled when it starts at or before `pos`, completed
    /// with silence, so that an event at `pos` leaves after the audio before it.
    fn audio_before(&mut self, now: Instant, pos: i64) {
        if self
            .repack
            .pending_start()
            .is_some_and(|start| start <= pos)
        {
            let sink = &mut self.sink;
            self.repack.flush(&mut |p, s| sink.audio(now, p, s));
        }
    }

    /// Queues an RFC 4733 packet we generate (payload type `payload_type` on the
    /// output) at `now`, in timeline order with the audio. All packets of one event
    /// share the position of its first: the next audio sample then, or, when the audio
    /// has not moved since the previous event, that event's position plus the time
    /// that passed (so consecutive events never share a timestamp).
    pub fn inject_event(&mut self, now: Instant, payload_type: u8, event: &EventPacket) {
        if event.first {
            let next = self.repack.next_position();
            let pos = match (next, self.last_event) {
                (Some(next), Some((last, _))) if next > last => next,
                (next, Some((last, at))) => {
                    // The audio did not move since the last event (DTX, a stalled
                    // browser): go on by the clock so two events never share a start.
                    let elapsed = now.saturating_duration_since(at);
                    let by_clock =
                        last + (elapsed.as_micros() * u128::from(PCM_RATE) / 1_000_000) as i64;
                    next.unwrap_or(last).max(by_clock)
                }
                (next, None) => next.unwrap_or(0),
            };
            self.audio_before(now, pos);
            self.event_pos = pos;
            self.last_event = Some((pos, now));
        }
        let payload = Bytes::copy_from_slice(&event.payload);
        self.sink
            .push(now, self.event_pos, payload_type, event.marker, payload);
    }

    /// Accepts one input packet that arrived at `now`.
    pub fn handle_packet(&mut self, now: Instant, packet: rtp::Packet) -> Result<(), Dropped> {
        let pt = packet.header.payload_type;
        let audio = if pt == self.input.payload_type || g711_alternative(self.input.codec, pt) {
            true
        } else if self.input.dtmf_payload_type == Some(pt) {
            if self.sink.output.dtmf_payload_type.is_none() {
                return Err(Dropped::NotNegotiatedOnOutput(pt));
            }
            false
        } else {
            return Err(Dropped::UnknownPayloadType(pt));
        };
        let h = &packet.header;
        self.jitter.handle_packet(
            now,
            Incoming {
                ssrc: h.ssrc,
                seq: h.sequence_number,
                ts: h.timestamp,
                payload_type: pt,
                marker: h.marker,
                audio,
                payload: packet.payload,
            },
        );
        self.handle_timeout(now);
        Ok(())
    }

    /// The 8 kHz timeline position of input timestamp `ts`.
    fn position(&self, ts: i64) -> i64 {
        (ts * i64::from(PCM_RATE)).div_euclid(self.input_clock)
    }

    /// Releases, decodes and encodes whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(playout) = self.jitter.poll_output(now) {
            match playout {
                Playout::Frame(f) if !f.audio => {
                    let pos = self.position(f.ts);
                    if f.restart {
                        self.sink.marker = true;
                    }
                    if let Some(pt) = self.sink.output.dtmf_payload_type {
                        self.audio_before(now, pos);
                        self.sink.push(now, pos, pt, f.marker, f.payload);
                    }
                }
                Playout::Frame(f) => {
                    let pos = self.position(f.ts);
                    if f.restart {
                        self.sink.marker = true;
                    }
                    let decoded = if f.payload_type == self.input.payload_type {
                        self.decoder.decode(&f.payload, &mut self.pcm[..])
                    } else {
                        Some(decode_other_law(
                            f.payload_type,
                            &f.payload,
                            &mut self.pcm[..],
                        ))
                    };
                    let n = match decoded {
                        Some(n) => {
                            self.work.decoded += 1;
                            n
                        }
                        None => {
                            self.work.decode_errors += 1;
                            let samples = (PCM_RATE / 50) as usize;
                            self.decoder.conceal(samples, None, &mut self.pcm[..]).0
                        }
                    };
                    let sink = &mut self.sink;
                    self.repack
                        .push(pos, &self.pcm[..n], &mut |p, s| sink.audio(now, p, s));
                }
                Playout::Lost { ts, duration, fec } => {
                    let pos = self.position(ts);
                    let samples = (i64::from(duration) * i64::from(PCM_RATE) / self.input_clock)
                        .max(1) as usize;
                    let (n, how) = self
                        .decoder
                        .conceal(samples, fec.as_deref(), &mut self.pcm[..]);
                    match how {
                        Concealment::Fec => self.work.fec_recovered += 1,
                        Concealment::Plc => self.work.concealed += 1,
                    }
                    let sink = &mut self.sink;
                    self.repack
                        .push(pos, &self.pcm[..n], &mut |p, s| sink.audio(now, p, s));
                }
            }
        }
    }

    /// The next packet to send.
    pub fn poll_output(&mut self) -> Option<rtp::Packet> {
        self.sink.queue.pop_front()
    }

    /// When [`Transcoder::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.jitter.poll_timeout()
    }
}

/// Whether `pt` is the other static G.711 law while the input is G.711 (a peer that
/// answered both laws may send either).
fn g711_alternative(input: AudioCodec, pt: u8) -> bool {
    matches!(input, AudioCodec::Pcmu | AudioCodec::Pcma) && (pt == 0 || pt == 8)
}

/// Decodes a static-payload-type G.711 frame (0: µ-law, else A-law) into `out`.
fn decode_other_law(pt: u8, payload: &[u8], out: &mut [i16]) -> usize {
    let n = payload.len().min(out.len());
    let law = if pt == 0 {
        g711::ulaw_to_linear
    } else {
        g711::alaw_to_linear
    };
    for (o, &c) in out.iter_mut().zip(&payload[..n]) {
        *o = law(c);
    }
    n
}

#[cfg(test)]
#[path = "transcode_tests.rs"]
mod tests;

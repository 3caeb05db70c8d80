//! `[media]`: codecs, transcoding, quality reports, media supervision, recording.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[media]`: how audio is negotiated, moved and recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Codecs accepted from browsers (`pcmu`, `pcma`, `opus`); the browser leg uses
    /// the first of them the browser offers, Opus first when the trunks take Opus.
    pub browser_codecs: Vec<String>,
    /// Codecs offered to trunks, in order (the browser's codec is moved first when
    /// listed, so the call can be relayed).
    pub sip_codecs: Vec<String>,
    /// Opus encoder complexity 0-10 (transcoded calls only; 1 is cheap and fine at 8 kHz).
    pub opus_complexity: u8,
    /// Opus target bitrate, bit/s.
    pub opus_bitrate: u32,
    /// Opus in-band FEC toward the browser.
    pub opus_fec: bool,
    /// Jitter buffer floor (transcoded calls).
    #[serde(with = "humantime_serde")]
    pub jitter_min: Duration,
    /// Jitter buffer ceiling (transcoded calls).
    #[serde(with = "humantime_serde")]
    pub jitter_max: Duration,
    /// End the call (`media_failed`) when a leg sends nothing for this long; 0s: never.
    #[serde(with = "humantime_serde")]
    pub inactivity_timeout: Duration,
    /// Symmetric RTP (NAT traversal for a far end whose SDP names an address its media
    /// does not come from): latch onto the first source that sends right after the
    /// answer, and send there. Off: media is accepted only from the SDP's address.
    pub symmetric_rtp: bool,
    /// How long after the answer symmetric RTP may latch; later, only the SDP's address
    /// (or the source latched) is accepted.
    #[serde(with = "humantime_serde")]
    pub symmetric_rtp_window: Duration,
    /// Within how many received packets after the answer symmetric RTP may latch.
    pub symmetric_rtp_packets: u32,
    /// How often quality is computed and sent to the browser as `stats`.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
    /// Interval of our RTCP sender/receiver reports on both legs (randomised ×0.5-1.5
    /// on the SIP leg, RFC 3550 §6.2).
    #[serde(with = "humantime_serde")]
    pub rtcp_interval: Duration,
    /// ICE-lite on the browser leg (RFC 8445 §2.5): for a gateway on a public address
    /// or behind a 1:1 NAT (`server.public_ip`); the browser does all the checks.
    pub ice_lite: bool,
    /// What runs the browser legs: `worker` (media worker threads, one shared UDP
    /// port each, calls told apart by their ICE ufrag), the only engine.
    pub engine: MediaEngineKind,
    /// Media worker threads; 0: one per CPU core.
    pub workers: usize,
    /// UDP port of media worker 0, worker k uses `worker_port_base + k` (open these
    /// in the firewall); 0: ports chosen by the system (tests, local use).
    pub worker_port_base: u16,
    /// Receive and send buffer of each media worker socket, bytes (bursts of many
    /// calls' packets land on one socket); the kernel caps it at `net.core.rmem_max`.
    pub worker_socket_buffer_bytes: usize,
    /// DTLS handshake datagrams a media worker handles per loop turn; more wait for
    /// the next turns, so a burst of new calls cannot hold up the audio of the calls
    /// already up on that worker.
    pub worker_handshakes_per_turn: usize,
    /// With `server.media_ip` unspecified (`0.0.0.0`/`::`) and no `server.public_ip`:
    /// the addresses offered to browsers as host candidates; empty: the addresses of
    /// every interface that is up (loopback ones only when there is no other).
    pub host_candidate_ips: Vec<IpAddr>,
    /// Where call recordings (stereo WAV) are written.
    pub recording_dir: PathBuf,
    /// Largest recording file; recording stops there.
    pub recording_max_bytes: u64,
    /// Global disk quota of everything in `recording_dir`: when full, new calls are
    /// not recorded and recordings in progress stop.
    pub recording_max_total_bytes: u64,
    /// Record every call (else only tokens with `record: true` and routes with `record`).
    pub record_all: bool,
    /// Internal networks (CIDR) whose browser ICE candidates are used: loopback,
    /// RFC 1918, `fc00::/7`, link-local and CGNAT candidates are ignored unless listed
    /// (so a browser cannot point the gateway at the operator's network). Empty by
    /// default; the embedded local-use defaults list loopback.
    pub allow_candidate_networks: Vec<String>,
}

/// The engine of the browser legs (`media.engine`). `tasks` (a `webrtc`-crate peer
/// connection, socket and driver task per call) was removed; the key stays so that
/// configs naming `worker` keep loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaEngineKind {
    /// Media worker threads with one shared port each.
    Worker,
}

/// Default of `media.worker_socket_buffer_bytes` (4 MiB, as the TURN listener's).
pub const DEFAULT_WORKER_SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Most media workers.
pub const MAX_MEDIA_WORKERS: usize = 256;

impl MediaConfig {
    /// The number of media workers to start (`workers`, or one per core).
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            browser_codecs: vec!["pcmu".into(), "pcma".into(), "opus".into()],
            sip_codecs: vec!["pcmu".into(), "pcma".into()],
            opus_complexity: 1,
            opus_bitrate: 24_000,
            opus_fec: true,
            jitter_min: Duration::from_millis(20),
            jitter_max: Duration::from_millis(200),
            inactivity_timeout: Duration::from_secs(30),
            symmetric_rtp: false,
            symmetric_rtp_window: Duration::from_secs(2),
            symmetric_rtp_packets: 50,
            stats_interval: Duration::from_secs(5),
            rtcp_interval: crate::media::webrtc_setup::DEFAULT_RTCP_INTERVAL,
            ice_lite: false,
            engine: MediaEngineKind::Worker,
            workers: 0,
            worker_port_base: 0,
            worker_socket_buffer_bytes: DEFAULT_WORKER_SOCKET_BUFFER_BYTES,
            worker_handshakes_per_turn: 4,
            host_candidate_ips: Vec::new(),
            recording_dir: PathBuf::from("data/recordings"),
            recording_max_bytes: 100 * 1024 * 1024,
            recording_max_total_bytes: 10 * 1024 * 1024 * 1024,
            record_all: false,
            allow_candidate_networks: Vec::new(),
        }
    }
}

/// Checks `[media]` (codecs, jitter, candidate networks, symmetric RTP, recording).
pub(super) fn validate(media: &MediaConfig) -> Result<(), ConfigError> {
    for (key, list) in [
        ("media.browser_codecs", &media.browser_codecs),
        ("media.sip_codecs", &media.sip_codecs),
    ] {
        if list.is_empty() {
            return Err(ConfigError::invalid(key, "list at least one codec"));
        }
        for name in list {
            if crate::media::codec::AudioCodec::from_encoding_name(name).is_none() {
                return Err(ConfigError::invalid(
                    key,
                    format!("`{name}` is not one of pcmu, pcma, opus"),
                ));
            }
        }
    }
    if media.opus_complexity > 10 {
        return Err(ConfigError::invalid(
            "media.opus_complexity",
            "must be 0-10",
        ));
    }
    if !(6_000..=510_000).contains(&media.opus_bitrate) {
        return Err(ConfigError::invalid(
            "media.opus_bitrate",
            "must be 6000-510000 bit/s",
        ));
    }
    if media.jitter_min > media.jitter_max || media.jitter_max > std::time::Duration::from_secs(2) {
        return Err(ConfigError::invalid(
            "media.jitter_max",
            "need jitter_min <= jitter_max <= 2s",
        ));
    }
    if media.stats_interval < std::time::Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "media.stats_interval",
            "must be at least 1s",
        ));
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&media.rtcp_interval) {
        return Err(ConfigError::invalid(
            "media.rtcp_interval",
            "must be 1s-60s (RFC 3550 suggests 5s; reports carry the RTT and loss figures)",
        ));
    }
    for (i, net) in media.allow_candidate_networks.iter().enumerate() {
        let parsed = crate::netguard::parse_net(net).map_err(|_| {
            ConfigError::invalid(
                format!("media.allow_candidate_networks[{i}]"),
                format!("`{net}` is not an address or CIDR network like 10.0.0.0/8"),
            )
        })?;
        if parsed.prefix_len() == 0 {
            return Err(ConfigError::invalid(
                format!("media.allow_candidate_networks[{i}]"),
                format!(
                    "`{net}` opens every internal network to browser candidates; list the \
                     networks your browsers are really on, e.g. 10.0.0.0/8 or 127.0.0.0/8"
                ),
            ));
        }
    }
    if media.symmetric_rtp {
        let window = media.symmetric_rtp_window;
        if window < std::time::Duration::from_millis(100)
            || window > std::time::Duration::from_secs(30)
        {
            return Err(ConfigError::invalid(
                "media.symmetric_rtp_window",
                "must be 100ms-30s (the far end's media starts right after the answer; a long window lets strangers latch)",
            ));
        }
        let least = crate::media::latch::LATCH_AFTER;
        if !(least..=10_000).contains(&media.symmetric_rtp_packets) {
            return Err(ConfigError::invalid(
                "media.symmetric_rtp_packets",
                format!("must be {least}-10000"),
            ));
        }
    }
    if media.workers > MAX_MEDIA_WORKERS {
        return Err(ConfigError::invalid(
            "media.workers",
            format!("must be 0 (one per core) to {MAX_MEDIA_WORKERS}"),
        ));
    }
    if media.worker_port_base != 0
        && usize::from(media.worker_port_base) + media.worker_count() > 65_536
    {
        return Err(ConfigError::invalid(
            "media.worker_port_base",
            format!(
                "worker ports {}..{} run past 65535; lower the base or media.workers",
                media.worker_port_base,
                usize::from(media.worker_port_base) + media.worker_count() - 1
            ),
        ));
    }
    if !(64 << 10..=256 << 20).contains(&media.worker_socket_buffer_bytes) {
        return Err(ConfigError::invalid(
            "media.worker_socket_buffer_bytes",
            format!(
                "must be between 65536 (64 KiB) and 268435456 (256 MiB); the default is {DEFAULT_WORKER_SOCKET_BUFFER_BYTES}"
            ),
        ));
    }
    if !(1..=1024).contains(&media.worker_handshakes_per_turn) {
        return Err(ConfigError::invalid(
            "media.worker_handshakes_per_turn",
            "must be 1-1024 (4 keeps a worker's media flowing while calls start)",
        ));
    }
    if media.recording_max_bytes < 1024 * 1024 {
        return Err(ConfigError::invalid(
            "media.recording_max_bytes",
            "must be at least 1 MiB",
        ));
    }
    if media.recording_max_total_bytes < 64 * 1024 {
        return Err(ConfigError::invalid(
            "media.recording_max_total_bytes",
            "must be at least 64 KiB (65536); it caps the disk space of all recordings",
        ));
    }
    Ok(())
}

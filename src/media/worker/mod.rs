//! The media worker engine (`media.engine = "worker"`): a few OS threads, each running
//! a single-threaded tokio runtime whose one loop owns its calls' `rtc` peer
//! connections and one UDP port shared by all of them. The bridges of those calls
//! (SIP-side sockets, pipelines) are spawned on the same runtime
//! ([`WorkerLink::runtime`]), so a call's media never changes threads.
//!
//! ```text
//!  bridge tasks ──RTP (bounded)──> worker loop ──sendto──> browsers
//!  (same thread) <── browser RTP ──┘ │  demux by source / STUN ufrag
//!  call task ──Control (candidates, answer, close)──> │  timer heap (one per worker)
//! ```
//!
//! A leg is negotiated on the call's task (SDP in, SDP out: pure computation on the
//! `rtc` core) and then handed to the least loaded worker, which advertises its port
//! as the leg's only host candidate. From then on the call talks to the leg through
//! [`WorkerLink`]: trickled candidates, the browser's answer, RTP to send, statistics,
//! close. The worker wakes only for datagrams, control messages and the earliest
//! deadline of its legs (the runtime's timer has millisecond resolution, so near
//! deadlines share a wake-up). Datagrams from sources no leg knows, and datagrams our legs would send to
//! addresses the [`CandidatePolicy`] refuses, are dropped and counted.

mod budget;
mod demux;
mod event_loop;
mod leg;
mod outbox;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use prometheus::IntCounterVec;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

pub use demux::{LegId, Refused};
#[cfg(test)]
pub(crate) use leg::WorkerLeg;
pub use leg::{MEDIA_QUEUE, NewLeg};

use super::candidates::CandidatePolicy;
use crate::media::browser_media::{BrowserView, view_from_report};
use rtc::statistics::report::RTCStatsReport;

/// Our RTP toward browsers that may wait for one worker (≈ 80 ms of 1000 calls'
/// 20 ms audio); beyond that the worker is overloaded and packets are dropped
/// (`callbridge_webrtc_dropped_total{reason="worker_full"}`) instead of piling up.
pub const WORKER_MEDIA_QUEUE: usize = 4096;

/// Every `reason` label of `callbridge_webrtc_dropped_total`.
pub const DROP_REASONS: [&str; 8] = [
    "unknown_source",
    "unknown_ufrag",
    "too_many_sources",
    "refused_destination",
    "send_failed",
    "bridge_full",
    "handshake_backlog",
    "worker_full",
];

/// Settings of the worker pool.
#[derive(Debug, Clone)]
pub struct WorkerPoolConfig {
    /// Number of worker threads (at least 1).
    pub workers: usize,
    /// Address the workers' sockets bind to.
    pub bind_ip: IpAddr,
    /// Worker k binds `port_base + k`; 0: ports chosen by the system.
    pub port_base: u16,
    /// Address advertised in host candidates instead of `bind_ip` (1:1 NAT).
    pub public_ip: Option<IpAddr>,
    /// When `bind_ip` is unspecified and there is no `public_ip`: the addresses
    /// advertised as host candidates (each datagram is then answered from the address
    /// it was sent to).
    pub host_ips: Vec<IpAddr>,
    /// Receive and send buffer of each worker socket, bytes.
    pub socket_buffer_bytes: usize,
    /// Where the legs may send.
    pub policy: Arc<CandidatePolicy>,
    /// Datagrams dropped, by reason (`callbridge_webrtc_dropped_total`).
    pub dropped: IntCounterVec,
    /// DTLS handshake datagrams each worker handles per loop turn.
    pub handshakes_per_turn: usize,
}

/// The addresses of this host's interfaces that are up, of the IPv4 family when
/// `v4` (else IPv6): the host candidates of workers bound to a wildcard address.
/// Loopback addresses only when there is no other; IPv6 link-local ones never (a
/// browser cannot use them without a scope).
pub fn interface_addresses(v4: bool) -> io::Result<Vec<IpAddr>> {
    use nix::net::if_::InterfaceFlags;
    let mut found: Vec<IpAddr> = Vec::new();
    let mut loopback: Vec<IpAddr> = Vec::new();
    for (ip, flags) in crate::netguard::interface_addresses()? {
        let link_local = matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
        if !flags.contains(InterfaceFlags::IFF_UP)
            || ip.is_ipv4() != v4
            || ip.is_unspecified()
            || ip.is_multicast()
            || link_local
        {
            continue;
        }
        let list = if ip.is_loopback() || flags.contains(InterfaceFlags::IFF_LOOPBACK) {
            &mut loopback
        } else {
            &mut found
        };
        if !list.contains(&ip) {
            list.push(ip);
        }
    }
    Ok(if found.is_empty() { loopback } else { found })
}

/// A message from a call to its leg's worker.
pub(crate) enum Control {
    /// Take over a negotiated leg.
    Add(Box<NewLeg>),
    /// A browser candidate for a leg.
    Candidate(LegId, rtc::peer_connection::transport::RTCIceCandidateInit),
    /// The browser's answer to our offer.
    Answer(
        LegId,
        Box<rtc::peer_connection::sdp::RTCSessionDescription>,
        oneshot::Sender<Result<(), String>>,
    ),
    /// Statistics of a leg.
    Stats(LegId, oneshot::Sender<RTCStatsReport>),
    /// Close and forget a leg.
    Close(LegId),
    /// End the thread.
    Stop,
}

/// What a call and a worker share.
#[derive(Debug)]
pub(crate) struct WorkerShared {
    /// Worker number (thread name `cb-media-<index>`).
    index: usize,
    /// The host candidates of this worker's legs: `public_ip`, the bound address, or
    /// (bound to a wildcard) each of `host_ips`; all on the worker's port.
    hosts: Vec<SocketAddr>,
    /// The socket is bound to a wildcard and the hosts are our own addresses: a
    /// datagram's local address is the one it was sent to, and we answer from it.
    per_datagram_local: bool,
    /// Control messages (a few per call: not bounded, never dropped).
    control: mpsc::UnboundedSender<Control>,
    /// Our RTP toward the browsers, bounded ([`WORKER_MEDIA_QUEUE`]).
    media: mpsc::Sender<(LegId, rtc::rtp::Packet)>,
    /// Packets dropped because `media` was full.
    media_dropped: prometheus::IntCounter,
    /// The worker's runtime (the bridges of its calls run there).
    runtime: Handle,
    /// Legs on this worker (for placement).
    legs: AtomicUsize,
}

impl WorkerShared {
    /// Sends `control` to the worker.
    pub(crate) fn send(&self, control: Control) {
        let _ = self.control.send(control);
    }

    /// One more leg placed on this worker (the worker uncounts it when it goes).
    pub(crate) fn count_leg(&self) {
        self.legs.fetch_add(1, Ordering::Relaxed);
    }

    /// The host candidates of this worker's legs (all on the worker's port).
    pub(crate) fn hosts(&self) -> &[SocketAddr] {
        &self.hosts
    }

    /// The worker's port.
    pub(crate) fn port(&self) -> u16 {
        self.hosts.first().map_or(0, SocketAddr::port)
    }
}

/// A call's handle on its leg in a worker.
#[derive(Debug, Clone)]
pub struct WorkerLink {
    /// The worker.
    pub(crate) worker: Arc<WorkerShared>,
    /// The leg.
    pub(crate) id: LegId,
}

impl WorkerLink {
    /// Sends `control` about this leg.
    pub(crate) fn send(&self, control: Control) {
        self.worker.send(control);
    }

    /// The runtime of the leg's worker: the call's bridge runs there.
    pub fn runtime(&self) -> &Handle {
        &self.worker.runtime
    }

    /// Our RTP toward the browser (dropped and counted when the worker is overloaded;
    /// dropped silently when the worker is gone).
    pub fn write_rtp(&self, packet: rtc::rtp::Packet) {
        if let Err(mpsc::error::TrySendError::Full(_)) =
            self.worker.media.try_send((self.id, packet))
        {
            self.worker.media_dropped.inc();
        }
    }

    /// The browser leg's RTT and loss as the stack sees them (default when gone).
    pub async fn view(&self) -> BrowserView {
        view_from_report(&self.report().await)
    }

    /// The stack's statistics of the leg (empty when it is gone).
    pub async fn report(&self) -> RTCStatsReport {
        let (tx, rx) = oneshot::channel();
        self.worker.send(Control::Stats(self.id, tx));
        rx.await.unwrap_or_default()
    }
}

/// The running workers. Dropping this stops them (and ends their legs and the
/// bridges on their runtimes): keep it for as long as legs live.
#[derive(Debug)]
pub struct MediaWorkers {
    /// Each worker's shared half.
    workers: Vec<Arc<WorkerShared>>,
    /// Next leg id.
    next_id: AtomicU64,
    /// The threads, joined on [`MediaWorkers::stop`].
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl MediaWorkers {
    /// Binds every worker's socket and starts the threads.
    pub fn start(config: &WorkerPoolConfig) -> io::Result<Arc<MediaWorkers>> {
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for index in 0..config.workers.max(1) {
            let port = match config.port_base {
                0 => 0,
                base => base.checked_add(index as u16).ok_or_else(|| {
                    io::Error::other("media.worker_port_base + workers exceeds 65535")
                })?,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("cb-media-{index}"))
                .build()?;
            let socket = event_loop::bind(
                SocketAddr::new(config.bind_ip, port),
                config.socket_buffer_bytes,
            )?;
            let socket = {
                let _in_worker = runtime.enter();
                tokio::net::UdpSocket::from_std(socket)?
            };
            let bound = socket.local_addr()?;
            let per_datagram_local = bound.ip().is_unspecified() && config.public_ip.is_none();
            let hosts: Vec<SocketAddr> = match config.public_ip {
                Some(ip) => vec![SocketAddr::new(ip, bound.port())],
                None if per_datagram_local => config
                    .host_ips
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, bound.port()))
                    .collect(),
                None => vec![bound],
            };
            if hosts.is_empty() {
                return Err(io::Error::other(
                    "no address to advertise to browsers: the media socket is bound to a \
                     wildcard and no interface address was found (set media.host_candidate_ips)",
                ));
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let (media_tx, media_rx) = mpsc::channel(WORKER_MEDIA_QUEUE);
            let shared = Arc::new(WorkerShared {
                index,
                hosts: hosts.clone(),
                per_datagram_local,
                control: tx,
                media: media_tx,
                media_dropped: config.dropped.with_label_values(&["worker_full"]),
                runtime: runtime.handle().clone(),
                legs: AtomicUsize::new(0),
            });
            let worker = {
                let _in_worker = runtime.enter();
                event_loop::Worker::new(
                    Arc::clone(&shared),
                    socket,
                    (rx, media_rx),
                    Arc::clone(&config.policy),
                    config.dropped.clone(),
                    config.handshakes_per_turn,
                )?
            };
            let thread = std::thread::Builder::new()
                .name(format!("cb-media-{index}"))
                .spawn(move || {
                    runtime.block_on(worker.run());
                })?;
            tracing::info!(worker = index, %bound, ?hosts, "media worker started");
            workers.push(shared);
            threads.push(thread);
        }
        Ok(Arc::new(MediaWorkers {
            workers,
            next_id: AtomicU64::new(1),
            threads: Mutex::new(threads),
        }))
    }

    /// A new leg id and the least loaded worker for it.
    pub(crate) fn place(&self) -> (LegId, Arc<WorkerShared>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| (w.legs.load(Ordering::Relaxed), w.index))
            .cloned()
            .unwrap_or_else(|| Arc::clone(&self.workers[0]));
        (id, worker)
    }

    /// The host candidates of each worker.
    pub fn advertised_addrs(&self) -> Vec<Vec<SocketAddr>> {
        self.workers.iter().map(|w| w.hosts.clone()).collect()
    }

    /// Stops and joins every worker (their legs are closed).
    pub fn stop(&self) {
        for w in &self.workers {
            w.send(Control::Stop);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for MediaWorkers {
    fn drop(&mut self) {
        for w in &self.workers {
            w.send(Control::Stop);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(workers: usize) -> Arc<MediaWorkers> {
        MediaWorkers::start(&WorkerPoolConfig {
            workers,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            port_base: 0,
            public_ip: Some(IpAddr::from([192, 0, 2, 7])),
            host_ips: Vec::new(),
            socket_buffer_bytes: 1 << 20,
            policy: Arc::default(),
            dropped: IntCounterVec::new(prometheus::Opts::new("d", "d"), &["reason"])
                .expect("counter"),
            handshakes_per_turn: 4,
        })
        .expect("workers start")
    }

    #[tokio::test]
    async fn rtp_beyond_a_full_worker_queue_is_dropped_and_counted() {
        let (control, _control_rx) = mpsc::unbounded_channel();
        let (media, media_rx) = mpsc::channel(2);
        let dropped = prometheus::IntCounter::new("d", "d").expect("counter");
        let link = WorkerLink {
            worker: Arc::new(WorkerShared {
                index: 0,
                hosts: vec![SocketAddr::from(([127, 0, 0, 1], 9))],
                per_datagram_local: false,
                control,
                media,
                media_dropped: dropped.clone(),
                runtime: Handle::current(),
                legs: AtomicUsize::new(0),
            }),
            id: 1,
        };
        for _ in 0..5 {
            link.write_rtp(rtc::rtp::Packet::default());
        }
        assert_eq!(dropped.get(), 3, "two queued, three dropped");
        drop(media_rx);
        link.write_rtp(rtc::rtp::Packet::default());
        assert_eq!(
            dropped.get(),
            3,
            "a stopped worker is not an overloaded one"
        );
    }

    #[test]
    fn interface_addresses_are_usable_host_candidates() {
        for v4 in [true, false] {
            let ips = interface_addresses(v4).expect("getifaddrs");
            assert!(
                ips.iter().all(|ip| ip.is_ipv4() == v4
                    && !ip.is_unspecified()
                    && !ip.is_multicast()
                    && !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())),
                "{ips:?}"
            );
            let unique: std::collections::HashSet<&IpAddr> = ips.iter().collect();
            assert_eq!(unique.len(), ips.len(), "no address twice: {ips:?}");
            if ips.iter().any(|ip| !ip.is_loopback()) {
                assert!(
                    !ips.iter().any(IpAddr::is_loopback),
                    "loopback only as a last resort: {ips:?}"
                );
            }
        }
        // Every host has an IPv4 loopback at least.
        assert!(!interface_addresses(true).expect("getifaddrs").is_empty());
    }

    #[test]
    fn legs_placed_in_a_burst_spread_over_the_workers() {
        let workers = pool(2);
        let addrs = workers.advertised_addrs();
        assert_eq!(addrs.len(), 2);
        assert!(
            addrs
                .iter()
                .all(|a| a.len() == 1 && a[0].ip() == IpAddr::from([192, 0, 2, 7])),
            "public_ip advertised: {addrs:?}"
        );
        assert_ne!(addrs[0][0].port(), addrs[1][0].port(), "a port per worker");
        let mut placed = Vec::new();
        for _ in 0..4 {
            let (id, w) = workers.place();
            w.count_leg();
            placed.push((id, w.index));
        }
        let on_first = placed.iter().filter(|(_, w)| *w == 0).count();
        assert_eq!(on_first, 2, "two legs on each worker: {placed:?}");
        let ids: std::collections::HashSet<LegId> = placed.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), 4, "ids are unique");
        workers.stop();
    }
}

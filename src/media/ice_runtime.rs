//! The runtime a WebRTC leg's peer connection runs on: the `webrtc` crate's tokio
//! runtime, with two additions at the socket layer.
//!
//! - Every UDP socket the peer connection binds is registered, the moment it is bound,
//!   as an ICE port of the call's user ([`IceLease`]); the TURN peer policy lets that
//!   user's relay reach it and nothing else on the gateway. The port is released when
//!   the socket closes.
//! - Every datagram is checked against the [`CandidatePolicy`] before it leaves: one to
//!   a refused address (a loopback or private peer not allowed, a service port of the
//!   gateway, a peer-reflexive address learnt from a spoofed source) is dropped. This
//!   holds whatever way the address reached the ICE agent (SDP, trickle, peer-reflexive).

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    Transmit,
};

use super::candidates::CandidatePolicy;
use crate::netguard::ice_ports::IceLease;

/// A runtime that guards and registers the sockets of one peer connection.
#[derive(Debug)]
pub struct GuardedRuntime {
    /// The `webrtc` crate's default (tokio) runtime, which does the real work.
    inner: Arc<dyn Runtime>,
    /// Where the sockets may send.
    policy: Arc<CandidatePolicy>,
    /// Registers the sockets' ports for the call's user.
    lease: Arc<IceLease>,
}

impl GuardedRuntime {
    /// Wraps the default runtime; `None` when the crate has none compiled in.
    pub fn new(policy: Arc<CandidatePolicy>, lease: Arc<IceLease>) -> Option<GuardedRuntime> {
        Some(GuardedRuntime {
            inner: webrtc::runtime::default_runtime()?,
            policy,
            lease,
        })
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Runtime for GuardedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let port = socket.local_addr()?.port();
        let inner = self.inner.wrap_udp_socket(socket)?;
        self.lease.add(port);
        Ok(Arc::new(GuardedUdpSocket {
            inner,
            policy: Arc::clone(&self.policy),
            lease: Arc::clone(&self.lease),
            port,
        }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> BoxFuture<'a, io::Result<Arc<dyn AsyncTcpStream>>> {
        if let Err(why) = self.policy.judge(remote_addr) {
            self.policy.count_dropped_send();
            tracing::debug!(%remote_addr, %why, "ICE TCP connect refused by policy");
            return Box::pin(async move {
                Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{remote_addr} refused: {why}"),
                ))
            });
        }
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "callbridge-guarded-tokio"
    }
}

/// A leg's UDP socket: sends to refused addresses are dropped; closing releases the port.
#[derive(Debug)]
struct GuardedUdpSocket {
    /// The runtime's socket.
    inner: Arc<dyn AsyncUdpSocket>,
    /// Where it may send.
    policy: Arc<CandidatePolicy>,
    /// Holds `port` for the call's user.
    lease: Arc<IceLease>,
    /// The local port.
    port: u16,
}

impl AsyncUdpSocket for GuardedUdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        if let Err(why) = self.policy.judge(transmit.destination) {
            self.policy.count_dropped_send();
            tracing::trace!(destination = %transmit.destination, %why, "ICE datagram dropped by policy");
            // Reported as sent: to the ICE agent this is a peer that never answers.
            return Poll::Ready(Ok(transmit.contents.len()));
        }
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

impl Drop for GuardedUdpSocket {
    fn drop(&mut self) {
        self.lease.remove(self.port);
    }
}

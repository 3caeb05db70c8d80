//! The accept loops of the SIP TCP and TLS listeners. Every connection is accepted
//! and then judged by [`ConnectionLimits`]: over a cap it is closed at once (and
//! counted), so the kernel's backlog never fills and a trunk's connection, which
//! has its own room, always gets in. A TLS handshake runs in the connection's own
//! task within `sip.tls_handshake_timeout`, at most `sip.max_tls_handshakes` at once
//! from non-trunk addresses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::connections::{Link, Liveness, NetEvent, fail_queued, run};
use super::limits::{CloseReason, ConnectionLimits, ConnectionPermit};
use crate::sip::transport::{Peer, Transport};

/// Accepts inbound TCP connections, or TLS ones when `tls` is set, within `limits`.
pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    net: mpsc::UnboundedSender<NetEvent>,
    first_id: u64,
    limits: Arc<ConnectionLimits>,
) {
    let mut next_id = first_id;
    let mut tasks = JoinSet::new();
    let kind = if tls.is_some() { "TLS" } else { "TCP" };
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // E.g. EMFILE: let the process breathe instead of spinning.
                tracing::warn!("SIP {kind} accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while tasks.try_join_next().is_some() {}
        let permit = match limits.admit(addr.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                tracing::debug!(%addr, reason = refusal.label(), "SIP {kind} connection refused");
                drop(stream);
                continue;
            }
        };
        let handshake = match &tls {
            None => None,
            Some(_) => match limits.handshake(&permit) {
                Ok(slot) => Some(slot),
                Err(refusal) => {
                    tracing::debug!(%addr, reason = refusal.label(), "SIP TLS connection refused");
                    drop(stream);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let net = net.clone();
        let tls = tls.clone();
        let limits = Arc::clone(&limits);
        tasks.spawn(async move {
            let error = match tls {
                None => {
                    serve_inbound(stream, Transport::Tcp, addr, id, &net, &permit, &limits).await
                }
                Some(acceptor) => {
                    let wait = limits.config().tls_handshake_timeout;
                    let accepted = tokio::time::timeout(wait, acceptor.accept(stream)).await;
                    drop(handshake);
                    match accepted {
                        Ok(Ok(stream)) => {
                            serve_inbound(stream, Transport::Tls, addr, id, &net, &permit, &limits)
                                .await
                        }
                        Ok(Err(e)) => {
                            limits.count_close(CloseReason::TlsHandshake);
                            Some(format!("TLS handshake: {e}"))
                        }
                        Err(_) => {
                            limits.count_close(CloseReason::TlsHandshake);
                            Some(format!("TLS handshake: no progress in {wait:?}"))
                        }
                    }
                }
            };
            if let Some(error) = error {
                tracing::debug!(%addr, "inbound {kind} connection ended: {error}");
            }
            drop(permit);
        });
    }
}

/// Runs one accepted connection: announces it to the driver, then reads and writes
/// until it ends; returns why it ended (`None` if the driver is gone).
async fn serve_inbound<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    transport: Transport,
    addr: SocketAddr,
    id: u64,
    net: &mpsc::UnboundedSender<NetEvent>,
    permit: &ConnectionPermit,
    limits: &ConnectionLimits,
) -> Option<String> {
    let peer = Peer { transport, addr };
    let (sender, mut queue) = mpsc::unbounded_channel();
    net.send(NetEvent::Accepted { peer, id, sender }).ok()?;
    let liveness = Liveness::inbound(permit.is_trunk(), limits);
    let link = Link::new(peer, net, limits);
    let error = run(stream, link, &mut queue, liveness, &mut Vec::new()).await;
    fail_queued(peer, &mut queue, net, &error);
    let _ = net.send(NetEvent::Closed { peer, id });
    Some(error)
}

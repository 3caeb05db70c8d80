//! TURN over TCP and TLS (RFC 5766 §2.1, client-to-server transport): every accepted
//! connection is framed into STUN messages and ChannelData (padded to 4 bytes), and
//! all connections of a listener are presented to the `turn` server as one
//! datagram-like `Conn`, keyed by the client's address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Largest frame accepted from a client (a STUN message or ChannelData).
const MAX_FRAME: usize = 4 + 65535 + 3;
/// Frames queued toward the server or one client before new ones are dropped.
const QUEUE: usize = 512;

/// One framed unit from a stream, or `None` at a clean end.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = [0u8; 4];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let total = match head[0] >> 6 {
        0b00 => 20 + length,                    // STUN: 20-byte header + attributes
        0b01 => 4 + length.next_multiple_of(4), // ChannelData, padded on streams
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "neither STUN nor ChannelData",
            ));
        }
    };
    if !(4..=MAX_FRAME).contains(&total) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut frame = vec![0u8; total];
    frame[..4].copy_from_slice(&head);
    reader.read_exact(&mut frame[4..]).await?;
    if head[0] >> 6 == 0b01 {
        frame.truncate(4 + length); // drop the stream padding
    }
    Ok(Some(frame))
}

/// Pads ChannelData to a multiple of 4 bytes for a stream transport.
fn pad_for_stream(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if data.first().is_some_and(|b| b >> 6 == 0b01) {
        out.resize(data.len().next_multiple_of(4), 0);
    }
    out
}

/// All TCP (or TLS) connections of one listener as a single `Conn`.
pub struct StreamMux {
    /// Frames from every client.
    incoming: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    /// The writer queue of each connected client.
    writers: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    /// Stops the accept loop and every connection.
    stop: CancellationToken,
}

impl StreamMux {
    /// Accepts on `listener` (TLS when `tls` is given) until `stop` is cancelled.
    pub fn start(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        stop: CancellationToken,
    ) -> std::io::Result<Arc<StreamMux>> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mux = Arc::new(StreamMux {
            incoming: tokio::sync::Mutex::new(rx),
            writers: Mutex::new(HashMap::new()),
            stop,
        });
        let accept = Arc::clone(&mux);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::warn!(error = %e, "TURN stream accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = accept.stop.cancelled() => break,
                };
                let _ = stream.set_nodelay(true);
                let mux = Arc::clone(&accept);
                let tx = tx.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            let handshake = acceptor.accept(stream);
                            match tokio::time::timeout(
                                std::time::Duration::from_secs(10),
                                handshake,
                            )
                            .await
                            {
                                Ok(Ok(s)) => mux.serve(s, peer, tx).await,
                                _ => tracing::debug!(%peer, "TURN TLS handshake failed"),
                            }
                        }
                        None => mux.serve(stream, peer, tx).await,
                    }
                });
            }
        });
        Ok(mux)
    }

    async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        to_server: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    ) {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        self.lock_writers().insert(peer, out_tx);
        let stop = self.stop.clone();
        let write = tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if writer.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        loop {
            let frame = tokio::select! {
                f = read_frame(&mut reader) => f,
                _ = stop.cancelled() => break,
            };
            match frame {
                Ok(Some(frame)) => {
                    if to_server.try_send((frame, peer)).is_err() {
                        tracing::debug!(%peer, "TURN stream queue full, frame dropped");
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TURN stream closed");
                    break;
                }
            }
        }
        self.lock_writers().remove(&peer);
        write.abort();
    }

    fn lock_writers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>> {
        self.writers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next frame from any client.
    pub async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        let mut rx = self.incoming.lock().await;
        let (frame, peer) = rx.recv().await.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "listener closed")
        })?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok((n, peer))
    }

    /// Queues a frame to the client at `target`.
    pub fn send_to(&self, data: &[u8], target: SocketAddr) -> std::io::Result<usize> {
        let writer = self.lock_writers().get(&target).cloned();
        match writer {
            Some(w) => {
                // A full queue means a stuck client: drop, as UDP would.
                let _ = w.try_send(pad_for_stream(data));
                Ok(data.len())
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "client disconnected",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_stun_and_padded_channel_data() {
        let stun_len = 8u16;
        let mut stream = vec![0x00, 0x01];
        stream.extend_from_slice(&stun_len.to_be_bytes());
        stream.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        stream.extend_from_slice(&[7u8; 12 + 8]);
        stream.extend_from_slice(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]);
        let mut reader = &stream[..];
        let first = read_frame(&mut reader).await.expect("read").expect("frame");
        assert_eq!(first.len(), 28);
        let second = read_frame(&mut reader).await.expect("read").expect("frame");
        assert_eq!(second, vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5]);
        assert!(read_frame(&mut reader).await.expect("eof").is_none());
        assert_eq!(pad_for_stream(&second).len(), 12);
        assert_eq!(pad_for_stream(&first).len(), 28);
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let mut reader = &[0xFFu8, 0, 0, 1, 0][..];
        assert!(read_frame(&mut reader).await.is_err());
        let mut short = &[0x00u8, 0x01, 0x00][..];
        assert!(read_frame(&mut short).await.expect("eof").is_none());
    }
}

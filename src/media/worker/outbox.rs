//! What a media worker's legs send during one loop turn, handed to the kernel at the
//! end of the turn with `sendmmsg`: one system call for up to [`BATCH`] datagrams
//! instead of one each.
//!
//! Datagrams that must leave from a chosen address (a worker bound to a wildcard:
//! `IP_PKTINFO`/`IPV6_PKTINFO`) go in runs of the same source address, since one
//! `sendmmsg` call carries one set of control messages.

use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

use bytes::BytesMut;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

/// Datagrams per `sendmmsg` call.
pub(super) const BATCH: usize = 32;

/// One datagram to send.
#[derive(Debug)]
struct Outgoing {
    /// Where to.
    dest: SocketAddr,
    /// The source address to leave from, if chosen.
    src: Option<IpAddr>,
    /// The bytes.
    data: BytesMut,
}

/// The datagrams queued this turn.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// In the order the legs produced them.
    queued: Vec<Outgoing>,
}

/// The `sendmmsg` headers of one worker thread (they hold raw pointers, so they live
/// on the worker's thread, not in the `Send` worker state).
pub(super) struct Headers {
    /// Without control messages.
    plain: MultiHeaders<SockaddrStorage>,
    /// With room for one packet-info control message per datagram.
    with_source: MultiHeaders<SockaddrStorage>,
}

impl Headers {
    /// Headers for a socket of the IPv4 family when `v4`, else IPv6.
    pub(super) fn new(v4: bool) -> Headers {
        let space = if v4 {
            nix::cmsg_space!(libc::in_pktinfo)
        } else {
            nix::cmsg_space!(libc::in6_pktinfo)
        };
        Headers {
            plain: MultiHeaders::preallocate(BATCH, None),
            with_source: MultiHeaders::preallocate(BATCH, Some(space)),
        }
    }
}

/// What a flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flushed {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Datagrams it refused (full buffer, unreachable): dropped.
    pub failed: usize,
}

impl Outbox {
    /// Queues a datagram to `dest`, leaving from `src` when given.
    pub(super) fn push(&mut self, dest: SocketAddr, src: Option<IpAddr>, data: BytesMut) {
        self.queued.push(Outgoing { dest, src, data });
    }

    /// Number of datagrams queued.
    pub(super) fn len(&self) -> usize {
        self.queued.len()
    }

    /// Sends everything queued on `fd` and empties the box.
    pub(super) fn flush(&mut self, fd: RawFd, headers: &mut Headers) -> Flushed {
        let mut flushed = Flushed::default();
        let mut start = 0;
        while start < self.queued.len() {
            let src = self.queued[start].src;
            let run = self.queued[start..]
                .iter()
                .take(BATCH)
                .take_while(|o| o.src == src)
                .count();
            let end = start + run;
            let mut next = start;
            while next < end {
                match send_run(fd, headers, &self.queued[next..end], src) {
                    Ok(n) if n > 0 => {
                        flushed.sent += n;
                        next += n;
                    }
                    // The datagram at `next` was refused (the kernel reports the first
                    // failure of a batch on its own): drop it, go on with the rest.
                    _ => {
                        flushed.failed += 1;
                        next += 1;
                    }
                }
            }
            start = end;
        }
        self.queued.clear();
        flushed
    }
}

/// One `sendmmsg` of `items`, all leaving from `src`; how many the kernel took.
fn send_run(
    fd: RawFd,
    headers: &mut Headers,
    items: &[Outgoing],
    src: Option<IpAddr>,
) -> nix::Result<usize> {
    let slices: Vec<[IoSlice<'_>; 1]> = items.iter().map(|o| [IoSlice::new(&o.data)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = items
        .iter()
        .map(|o| Some(SockaddrStorage::from(o.dest)))
        .collect();
    let v4_info;
    let v6_info;
    let (header, cmsgs): (_, Vec<ControlMessage<'_>>) = match src {
        None => (&mut headers.plain, Vec::new()),
        Some(IpAddr::V4(ip)) => {
            v4_info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            (
                &mut headers.with_source,
                vec![ControlMessage::Ipv4PacketInfo(&v4_info)],
            )
        }
        Some(IpAddr::V6(ip)) => {
            v6_info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: 0,
            };
            (
                &mut headers.with_source,
                vec![ControlMessage::Ipv6PacketInfo(&v6_info)],
            )
        }
    };
    let sent = sendmmsg(fd, header, &slices, &addrs, &cmsgs, MsgFlags::empty())?;
    Ok(sent.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A real socket pair on loopback: what the box sends arrives, in order, from the
    /// source address asked for.
    #[test]
    fn a_flush_sends_every_datagram_in_order_from_the_chosen_address() {
        let sender = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let dest = receiver.local_addr().expect("addr");
        let mut outbox = Outbox::default();
        let mut headers = Headers::new(true);
        // More than one batch, and a change of source address in the middle.
        for i in 0..(BATCH + 5) as u8 {
            let src = (i >= 10).then(|| IpAddr::from([127, 0, 0, 2]));
            outbox.push(dest, src, BytesMut::from(&[i][..]));
        }
        assert_eq!(outbox.len(), BATCH + 5);
        let flushed = outbox.flush(sender.as_raw_fd(), &mut headers);
        assert_eq!(
            flushed,
            Flushed {
                sent: BATCH + 5,
                failed: 0
            }
        );
        assert_eq!(outbox.len(), 0);
        let mut buf = [0u8; 16];
        for i in 0..(BATCH + 5) as u8 {
            let (n, from) = receiver.recv_from(&mut buf).expect("datagram");
            assert_eq!(&buf[..n], &[i], "in order");
            let expected = if i >= 10 {
                [127, 0, 0, 2]
            } else {
                [127, 0, 0, 1]
            };
            assert_eq!(from.ip(), IpAddr::from(expected), "datagram {i}");
        }
    }
}

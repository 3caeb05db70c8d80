//! The SIP side of the load: a minimal UAS the gateway's trunk points at, and an RTP
//! echo. It runs in the tool's process on plain OS threads, so its cost is never the
//! gateway's, yet every call crosses the gateway's real SIP client and SIP-side RTP.
//!
//! - SIP over UDP on one socket: INVITE → 100 Trying + 200 OK with an SDP answer
//!   (PCMU and telephone-event/8000 101, whatever else was offered); a re-INVITE gets the
//!   same answer; ACK is absorbed; BYE, CANCEL, OPTIONS, UPDATE, INFO, PRACK → 200 OK.
//!   Responses go to the datagram's source (the gateway's SIP socket).
//! - RTP: ONE socket for all calls (every answer names the same port), each datagram
//!   sent straight back to its source; the gateway has a socket (port) per call, so the
//!   source port tells the calls apart. RTCP goes to the next port and is counted and
//!   dropped. Not batched (no recvmmsg/sendmmsg): one thread keeps up with thousands of
//!   packets per second on loopback; its socket's kernel drop counter is reported so a
//!   run that overflowed it is visible.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;

/// Counters of the echo, shared with its threads.
#[derive(Default)]
pub struct EchoCounters {
    /// INVITEs answered 200 (initial ones, not re-INVITEs or retransmissions).
    pub invites: AtomicU64,
    /// BYEs answered.
    pub byes: AtomicU64,
    /// RTP datagrams echoed.
    pub rtp: AtomicU64,
    /// RTCP datagrams received (and dropped).
    pub rtcp: AtomicU64,
    /// When each caller's first INVITE arrived and its 200 OK was sent, by From user
    /// (the gateway puts the token's user there); taken by [`EchoCounters::take_timing`].
    timings: Mutex<HashMap<String, (Instant, Instant)>>,
}

impl EchoCounters {
    /// When `user`'s INVITE arrived and its 200 OK left (once per call).
    pub fn take_timing(&self, user: &str) -> Option<(Instant, Instant)> {
        self.timings.lock().ok()?.remove(user)
    }
}

impl std::fmt::Display for EchoCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} INVITEs answered, {} BYEs, {} RTP packets echoed, {} RTCP received",
            self.invites.load(Ordering::Relaxed),
            self.byes.load(Ordering::Relaxed),
            self.rtp.load(Ordering::Relaxed),
            self.rtcp.load(Ordering::Relaxed)
        )
    }
}

/// A running SIP UAS + RTP echo (its threads live as long as the process).
pub struct SipEcho {
    /// The SIP address to configure as the trunk.
    pub sip_addr: SocketAddr,
    /// The RTP address every answer names.
    pub rtp_addr: SocketAddr,
    /// Its counters.
    pub counters: Arc<EchoCounters>,
}

impl SipEcho {
    /// Binds SIP on `sip_listen` (port 0: any) and RTP/RTCP on an even/odd pair of the
    /// same IP, and starts their threads.
    pub fn start(sip_listen: SocketAddr) -> anyhow::Result<SipEcho> {
        let sip = UdpSocket::bind(sip_listen)
            .with_context(|| format!("cannot bind the SIP echo on {sip_listen}"))?;
        let ip = sip_listen.ip();
        let (rtp, rtcp) = loop {
            let rtp = UdpSocket::bind((ip, 0)).context("cannot bind the RTP echo")?;
            let port = rtp.local_addr()?.port();
            if port % 2 == 0
                && port < u16::MAX
                && let Ok(rtcp) = UdpSocket::bind((ip, port + 1))
            {
                break (rtp, rtcp);
            }
        };
        let echo = SipEcho {
            sip_addr: sip.local_addr()?,
            rtp_addr: rtp.local_addr()?,
            counters: Arc::new(EchoCounters::default()),
        };
        let counters = echo.counters.clone();
        std::thread::Builder::new()
            .name("rtp-echo".into())
            .spawn(move || rtp_loop(&rtp, &counters))?;
        let counters = echo.counters.clone();
        std::thread::Builder::new()
            .name("rtcp-sink".into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                while rtcp.recv_from(&mut buf).is_ok() {
                    counters.rtcp.fetch_add(1, Ordering::Relaxed);
                }
            })?;
        let counters = echo.counters.clone();
        let rtp_addr = echo.rtp_addr;
        std::thread::Builder::new()
            .name("sip-echo".into())
            .spawn(move || sip_loop(&sip, rtp_addr, &counters))?;
        Ok(echo)
    }

    /// Datagrams the kernel dropped on the RTP echo's socket (full receive buffer),
    /// from /proc/self/net/udp.
    pub fn rtp_socket_drops(&self) -> u64 {
        let port = format!(":{:04X}", self.rtp_addr.port());
        let Ok(text) = std::fs::read_to_string("/proc/self/net/udp") else {
            return 0;
        };
        text.lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(1)?.ends_with(&port)).then(|| f.last()?.parse::<u64>().ok())?
            })
            .sum()
    }
}

/// Echoes every datagram to its source.
fn rtp_loop(socket: &UdpSocket, counters: &EchoCounters) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if socket.send_to(&buf[..n], from).is_ok() {
            counters.rtp.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Answers the gateway's requests; remembers each dialog's To tag so retransmissions
/// and re-INVITEs get the same one.
fn sip_loop(socket: &UdpSocket, rtp: SocketAddr, counters: &EchoCounters) {
    let mut buf = [0u8; 65535];
    let mut tags: HashMap<String, String> = HashMap::new();
    let mut next_tag = 0u64;
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let arrived = Instant::now();
        let Ok(text) = std::str::from_utf8(&buf[..n]) else {
            continue;
        };
        let Some(request) = Request::parse(text) else {
            continue; // responses (none expected) and garbage
        };
        let call_id = request
            .header("call-id", "i")
            .unwrap_or_default()
            .to_owned();
        match request.method {
            "ACK" => continue,
            "INVITE" => {
                let _ = socket.send_to(request.response(100, "Trying", None, "").as_bytes(), from);
                let mut initial = false;
                let tag = tags.entry(call_id).or_insert_with(|| {
                    next_tag += 1;
                    initial = true;
                    counters.invites.fetch_add(1, Ordering::Relaxed);
                    format!("echo{next_tag}")
                });
                let sdp = answer_sdp(rtp);
                let contact = format!("Contact: <sip:echo@{}>\r\n", socket_addr(socket));
                let extra = format!("{contact}Content-Type: application/sdp\r\n");
                let ok = request.response(200, "OK", Some(tag), &format!("{extra}\r\n{sdp}"));
                let _ = socket.send_to(ok.as_bytes(), from);
                if initial
                    && let Some(user) = request.header("from", "f").and_then(sip_user)
                    && let Ok(mut timings) = counters.timings.lock()
                {
                    timings.insert(user.to_owned(), (arrived, Instant::now()));
                }
            }
            method => {
                let tag = tags.get(&call_id).cloned();
                if method == "BYE" {
                    counters.byes.fetch_add(1, Ordering::Relaxed);
                    tags.remove(&call_id);
                }
                let ok = request.response(200, "OK", tag.as_deref(), "");
                let _ = socket.send_to(ok.as_bytes(), from);
            }
        }
    }
}

/// The user part of a From/To value (`"x" <sip:user@host>;tag=…`).
fn sip_user(value: &str) -> Option<&str> {
    let start = value.find("sip:")? + 4;
    let rest = &value[start..];
    let end = rest.find('@')?;
    Some(&rest[..end])
}

fn socket_addr(socket: &UdpSocket) -> String {
    socket
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// The answer every call gets: PCMU and telephone-event at the echo's RTP address.
fn answer_sdp(rtp: SocketAddr) -> String {
    format!(
        "v=0\r\no=echo 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

/// The parts of a SIP request a UAS needs to answer it.
struct Request<'a> {
    method: &'a str,
    /// Header lines (name, value), in order.
    headers: Vec<(&'a str, &'a str)>,
}

impl<'a> Request<'a> {
    fn parse(text: &'a str) -> Option<Request<'a>> {
        let head = text.split("\r\n\r\n").next()?;
        let mut lines = head.split("\r\n");
        let first = lines.next()?;
        let method = first.split(' ').next()?;
        if first.starts_with("SIP/2.0") || !first.ends_with("SIP/2.0") {
            return None;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim(), v.trim()))
            .collect();
        Some(Request { method, headers })
    }

    /// The first value of header `name` (or its compact form).
    fn header(&self, name: &str, compact: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(compact))
            .map(|(_, v)| *v)
    }

    /// A response copying Via, From, To (with `to_tag` added), Call-ID and CSeq;
    /// `rest` is more header lines ending in CRLF, then CRLF and a body, or empty.
    fn response(&self, code: u16, reason: &str, to_tag: Option<&str>, rest: &str) -> String {
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
                "to" | "t" => match to_tag {
                    Some(tag) if !value.contains(";tag=") => {
                        out.push_str(&format!("{name}: {value};tag={tag}\r\n"));
                    }
                    _ => out.push_str(&format!("{name}: {value}\r\n")),
                },
                _ => {}
            }
        }
        let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        let headers = headers.strip_suffix("\r\n").unwrap_or(headers);
        if !headers.is_empty() {
            out.push_str(headers);
            out.push_str("\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_an_invite_with_the_dialog_headers_and_a_tag() {
        let invite = "INVITE sip:+15550000000@127.0.0.1:5070 SIP/2.0\r\n\
                      Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
                      From: <sip:a@x>;tag=f1\r\nTo: <sip:+15550000000@x>\r\n\
                      Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let r = Request::parse(invite).expect("parses");
        assert_eq!(r.method, "INVITE");
        assert_eq!(r.header("call-id", "i"), Some("c1"));
        let ok = r.response(
            200,
            "OK",
            Some("t9"),
            "Content-Type: application/sdp\r\n\r\nv=0\r\n",
        );
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(ok.contains("To: <sip:+15550000000@x>;tag=t9\r\n"));
        assert!(ok.contains("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n"));
        assert!(ok.contains("CSeq: 1 INVITE\r\n"));
        assert!(ok.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"));
        assert!(Request::parse("SIP/2.0 200 OK\r\n\r\n").is_none());
        assert_eq!(sip_user(r.header("from", "f").expect("From")), Some("a"));
        assert_eq!(sip_user("\"A\" <sip:bob@h:5060>;tag=1"), Some("bob"));
    }
}

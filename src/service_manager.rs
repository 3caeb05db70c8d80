//! Talking to the service manager (systemd's `sd_notify` protocol, a datagram of
//! `KEY=value` lines to the Unix socket named by `$NOTIFY_SOCKET`): `READY=1` once
//! every listener is up, and when a drain starts, `STOPPING=1` with
//! `EXTEND_TIMEOUT_USEC` set to the time the stop may take ([`stop_budget`]), so a
//! unit's `TimeoutStopSec` no longer has to be kept above `drain.timeout` by hand
//! (`deploy/callbridge.service`: `Type=notify`). Without `$NOTIFY_SOCKET` (not run by
//! systemd) nothing is sent. Hand-written: it is one `sendto`, and the crates for it
//! were not reachable from this build's registry mirror.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// What a stop adds to the drain itself: hang-ups, closing sessions, writing the
/// queued events (each waited for up to 5 s), stopping the SIP endpoint.
pub const SHUTDOWN_ALLOWANCE: Duration = Duration::from_secs(30);

/// How long a stop may take once a drain of `drain_timeout` starts: what systemd's
/// `TimeoutStopSec`, Kubernetes' `terminationGracePeriodSeconds` and compose's
/// `stop_grace_period` must allow.
pub fn stop_budget(drain_timeout: Duration) -> Duration {
    drain_timeout + SHUTDOWN_ALLOWANCE
}

/// The notification that a drain started and the stop may take `budget`.
pub fn stopping_message(budget: Duration) -> String {
    format!(
        "STOPPING=1\nEXTEND_TIMEOUT_USEC={}\nSTATUS=draining: waiting up to {} for calls to end",
        budget.as_micros(),
        humantime::format_duration(budget)
    )
}

/// Sends `message` to the service manager, if there is one (`$NOTIFY_SOCKET`).
pub fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, message) {
        tracing::warn!(error = %e, "could not notify the service manager ($NOTIFY_SOCKET)");
    }
}

fn send(path: &std::ffi::OsStr, message: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    // `@name`: a socket in the abstract namespace.
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        socket.send_to(message.as_bytes(), path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_budget_covers_the_drain_and_the_shutdown() {
        let budget = stop_budget(Duration::from_secs(120));
        assert_eq!(budget, Duration::from_secs(150));
        let message = stopping_message(budget);
        assert!(message.starts_with("STOPPING=1\n"), "{message}");
        assert!(
            message.contains("\nEXTEND_TIMEOUT_USEC=150000000\n"),
            "{message}"
        );
    }

    #[test]
    fn a_message_reaches_a_named_and_an_abstract_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        send(path.as_os_str(), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("callbridge-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract address");
        let server = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").expect("send");
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}

use super::*;
use crate::sip::message::{Incoming, parse};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_700_000_000;

fn key() -> ForwardKey {
    ForwardKey::new(SECRET, Duration::from_secs(30))
}

fn invite(extra: &str, body: &str) -> Request {
    let raw = format!(
        "INVITE sip:+15550001111@gw SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKcbpx1\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKt1\r\nFrom: <sip:a@h>;tag=f1\r\nTo: <sip:+15550001111@gw>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Contact: <sip:a@10.0.0.2>\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    match parse(raw.as_bytes()) {
        Ok(Incoming::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn origin() -> Origin {
    Origin {
        source: Peer::udp("10.0.0.2:5060".parse().unwrap()),
        digest_checked: true,
    }
}

/// `request` with the header `key` stamps on it at `at`.
fn stamped(key: &ForwardKey, at: u64, extra: &str, body: &str) -> (Request, String) {
    let header = key.stamp(at, origin(), &invite(extra, body)).unwrap();
    let line = header.to_string();
    (invite(&format!("{line}\r\n{extra}"), body), line)
}

#[test]
fn a_stamped_invite_verifies_within_the_window() {
    let (request, line) = stamped(&key(), NOW, "", "v=0\r\n");
    assert!(
        line.starts_with(
            "X-Callbridge-Forwarded: v1;ts=1700000000;src=udp:10.0.0.2:5060;auth=1;mac="
        ),
        "{line}"
    );
    assert_eq!(key().verify(NOW, &request), Ok(origin()));
    assert_eq!(key().verify(NOW + 30, &request), Ok(origin()));
    assert_eq!(key().verify(NOW - 30, &request), Ok(origin()), "clock skew");
    assert_eq!(
        key().verify(NOW + 31, &request),
        Err(ForwardedError::Expired {
            age_secs: 31,
            max_secs: 30
        }),
        "a captured header cannot be replayed later"
    );
}

#[test]
fn any_change_or_another_secret_breaks_the_signature() {
    let (request, line) = stamped(&key(), NOW, "", "v=0\r\n");
    let other = ForwardKey::new(
        b"another secret of thirty-two bytes",
        Duration::from_secs(30),
    );
    assert_eq!(
        other.verify(NOW, &request),
        Err(ForwardedError::BadSignature)
    );
    let text = request.to_string();
    for (from, to) in [
        ("auth=1", "auth=0"),
        ("src=udp:10.0.0.2:5060", "src=udp:10.0.0.9:5060"),
        ("ts=1700000000", "ts=1700000001"),
        ("Call-ID: c1", "Call-ID: c2"),
        ("CSeq: 1 INVITE", "CSeq: 2 INVITE"),
        ("tag=f1", "tag=f2"),
        ("v=0\r\n", "v=1\r\n"),
    ] {
        assert!(text.contains(from), "{from} in {text}");
        let changed = text.replacen(from, to, 1);
        let Ok(Incoming::Request(r)) = parse(changed.as_bytes()) else {
            panic!("{changed}");
        };
        assert_eq!(
            key().verify(NOW, &r),
            Err(ForwardedError::BadSignature),
            "{from} -> {to}"
        );
    }
    // A forged header with a made-up MAC, as an attacker writes it.
    let forged = invite(
        &format!(
            "X-Callbridge-Forwarded: v1;ts={NOW};src=udp:10.0.0.2:5060;auth=1;mac={}\r\n",
            "00".repeat(32)
        ),
        "",
    );
    assert_eq!(
        key().verify(NOW, &forged),
        Err(ForwardedError::BadSignature)
    );
    // Two headers: ambiguous, refused even if one is genuine.
    let twice = invite(&format!("{line}\r\n{line}\r\n"), "v=0\r\n");
    assert_eq!(key().verify(NOW, &twice), Err(ForwardedError::Repeated));
}

#[test]
fn missing_and_malformed_headers_are_not_believed() {
    assert_eq!(
        key().verify(NOW, &invite("", "")),
        Err(ForwardedError::Missing)
    );
    for bad in [
        "v2;ts=1;src=udp:10.0.0.2:5060;auth=1;mac=00",
        "v1;src=udp:10.0.0.2:5060;auth=1;mac=",
        "v1;ts=x;src=udp:10.0.0.2:5060;auth=1;mac=00",
        "v1;ts=1;src=sctp:10.0.0.2:5060;auth=1;mac=00",
        "v1;ts=1;src=udp:10.0.0.2:5060;auth=yes;mac=00",
        "v1;ts=1;src=udp:10.0.0.2:5060;auth=1;mac=zz",
        "v1;ts=1;src=udp:10.0.0.2:5060;auth=1;extra=1;mac=00",
    ] {
        let r = invite(&format!("X-Callbridge-Forwarded: {bad}\r\n"), "");
        assert!(
            matches!(key().verify(NOW, &r), Err(ForwardedError::Malformed(_))),
            "{bad}"
        );
    }
    assert!(
        !format!("{:?}", key()).contains("0123456789"),
        "secret not in Debug"
    );
}

use super::*;

const M1: &[u8] = b"BYE sip:a SIP/2.0\r\nl: 3\r\n\r\nabc";
const M2: &[u8] = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";

/// Every message framed from `chunks` pushed one after the other, or the error.
fn frame(max: usize, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, FramingError> {
    let mut f = StreamFramer::new(max);
    let mut out = Vec::new();
    for chunk in chunks {
        f.push(chunk);
        while let Some(m) = f.next_message()? {
            out.push(m);
        }
    }
    Ok(out)
}

#[test]
fn counts_keepalive_pings_split_across_reads() {
    let mut f = StreamFramer::default();
    f.push(b"\r\n\r");
    assert_eq!(f.next_message().unwrap(), None);
    assert_eq!(f.take_pings(), 0, "half a ping");
    f.push(b"\n");
    assert_eq!(f.next_message().unwrap(), None);
    assert_eq!(f.take_pings(), 1);
    // Two separate pongs are no ping.
    for _ in 0..2 {
        f.push(b"\r\n");
        assert_eq!(f.next_message().unwrap(), None);
    }
    assert_eq!(f.take_pings(), 0);
    // A lone CRLF (a pong) before a message is no ping; two pings in a row are.
    f.push(b"\r\nOPTIONS x SIP/2.0\r\nl: 0\r\n\r\n\r\n\r\n\r\n\r\n");
    assert!(f.next_message().unwrap().is_some());
    assert_eq!(f.take_pings(), 0);
    assert_eq!(f.next_message().unwrap(), None);
    assert_eq!(f.take_pings(), 2);
    assert_eq!(f.take_pings(), 0, "taken");
}

#[test]
fn frames_split_and_coalesced_messages() {
    let mut stream = b"\r\n\r\n".to_vec();
    stream.extend(M1);
    stream.extend(M2);
    let chunks: Vec<&[u8]> = stream.chunks(7).collect();
    assert_eq!(
        frame(65_535, &chunks).unwrap(),
        vec![M1.to_vec(), M2.to_vec()]
    );
    let mut f = StreamFramer::default();
    f.push(b"INVITE x SIP/2.0\r\nContent-Length: 10\r\n\r\nabc");
    assert_eq!(f.next_message().unwrap(), None, "waits for the body");
    assert!(!f.is_idle());
}

#[test]
fn a_split_at_every_byte_frames_the_same() {
    let mut stream = b"\r\n\r\n".to_vec();
    stream.extend(M1);
    stream.extend(b"\r\n\r\n");
    stream.extend(M2);
    stream.extend(M1);
    let whole = frame(65_535, &[&stream]).unwrap();
    assert_eq!(whole.len(), 3);
    for at in 0..=stream.len() {
        let (a, b) = stream.split_at(at);
        assert_eq!(frame(65_535, &[a, b]).unwrap(), whole, "split at {at}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(frame(65_535, &bytes).unwrap(), whole, "byte at a time");
}

#[test]
fn content_length_near_u64_max_is_refused_not_wrapped() {
    // With unchecked `head + 4 + length` this wrapped to a length shorter than the
    // header section and the second request was framed from the first's bytes
    // (request smuggling); in a debug build it panicked the connection task.
    let smuggle = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 18446744073709551615\r\n\r\nINVITE sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    let mut f = StreamFramer::default();
    f.push(smuggle);
    match f.next_message() {
        Err(FramingError::TooLarge { content_length, .. }) => assert_eq!(content_length, u64::MAX),
        other => panic!("{other:?}"),
    }
    let head = String::from_utf8(f.head().expect("head read").to_vec()).unwrap();
    assert!(
        head.starts_with("OPTIONS ") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(
        !head.contains("INVITE"),
        "the head is the first message's only"
    );
    for huge in [
        "18446744073709551616",
        "99999999999999999999999999",
        "18446744073709551611",
        "65536",
    ] {
        let text = format!("BYE x SIP/2.0\r\nl: {huge}\r\n\r\n");
        let err = frame(65_535, &[text.as_bytes()]).unwrap_err();
        assert!(
            matches!(err, FramingError::TooLarge { .. }),
            "{huge}: {err}"
        );
        assert_eq!(err.status(), 413);
    }
}

#[test]
fn negative_signed_and_garbage_content_lengths_are_refused() {
    for bad in ["-1", "+5", "5x", "0x10", "", "1 2", "1.0", "５"] {
        let text = format!("BYE x SIP/2.0\r\nContent-Length: {bad}\r\n\r\n12345");
        let err = frame(65_535, &[text.as_bytes()]).unwrap_err();
        assert!(
            matches!(err, FramingError::ContentLength(_)),
            "{bad:?}: {err}"
        );
        assert_eq!(err.status(), 400);
    }
    let two = b"BYE x SIP/2.0\r\nContent-Length: 0\r\nl: 5\r\n\r\n12345";
    assert!(matches!(
        frame(65_535, &[two]),
        Err(FramingError::ContentLength(_))
    ));
    let same = b"BYE x SIP/2.0\r\nContent-Length: 5\r\nl: 5\r\n\r\n12345";
    assert_eq!(frame(65_535, &[same]).unwrap().len(), 1);
    let spaced = b"BYE x SIP/2.0\r\nContent-Length :  2 \r\n\r\nab";
    assert_eq!(frame(65_535, &[spaced]).unwrap()[0].len(), spaced.len());
}

#[test]
fn refuses_oversized_header_sections_and_bodies() {
    let mut f = StreamFramer::new(100);
    f.push(&[b'a'; 200]);
    assert!(matches!(
        f.next_message(),
        Err(FramingError::HeaderTooLong(100))
    ));
    assert!(f.head().is_none(), "no head to answer from");
    let body = b"BYE x SIP/2.0\r\nContent-Length: 1000\r\n\r\n";
    assert!(matches!(
        frame(100, &[body]),
        Err(FramingError::TooLarge { max: 100, .. })
    ));
    // Exactly at the limit is accepted.
    let head = b"BYE x SIP/2.0\r\nl: 10\r\n\r\n";
    let mut exact = head.to_vec();
    exact.extend([b'x'; 10]);
    assert_eq!(frame(exact.len(), &[&exact]).unwrap().len(), 1);
    assert!(frame(exact.len() - 1, &[&exact]).is_err());
}

#[test]
fn a_byte_at_a_time_peer_is_searched_once() {
    let mut f = StreamFramer::default();
    let head = "OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n".repeat(50);
    for (i, b) in head.bytes().enumerate() {
        f.push(&[b]);
        assert_eq!(f.next_message().unwrap(), None);
        // The next search starts three bytes before the end: nothing is rescanned.
        assert_eq!(f.scanned, i + 1);
    }
    f.push(b"l: 0\r\n\r");
    assert_eq!(f.next_message().unwrap(), None);
    f.push(b"\n");
    let m = f.next_message().unwrap().expect("framed");
    assert!(m.ends_with(b"l: 0\r\n\r\n"));
    assert!(f.is_idle());
}

#[test]
fn mutated_streams_frame_the_same_whole_and_in_pieces() {
    let base: Vec<u8> = [b"\r\n\r\n".as_slice(), M1, b"\r\n\r\n", M2, M1].concat();
    let mut state = 0x2545_f491_u32;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    for _ in 0..3000 {
        let mut data = vec![(next() & 0xff) as u8];
        data.extend(&base);
        for _ in 0..(next() % 6) {
            let at = next() as usize % data.len();
            match next() % 4 {
                0 => data[at] = (next() & 0xff) as u8,
                1 => data.insert(at, b"0123456789:\r\n-+"[next() as usize % 15]),
                2 => {
                    data.remove(at);
                }
                _ => data
                    .splice(
                        at..at,
                        b"Content-Length: 18446744073709551615\r\n".iter().copied(),
                    )
                    .for_each(drop),
            }
            if data.is_empty() {
                data.push(0);
            }
        }
        fuzz_stream(&data);
    }
}

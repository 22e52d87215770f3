//! Property tests of the frame reader: arbitrary bytes split anywhere never panic and keep the
//! reader's buffers within their limits; a valid frame stream decodes the same however it is
//! split. Written as a child module so the buffers themselves can be checked, not only the
//! messages.

use proptest::prelude::*;

use super::*;

type Msgs = Vec<Message<Vec<u8>>>;

/// Limits worth distinguishing: none at all, the control frame size, a small and the default.
fn max_sizes() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(125),
        Just(300),
        Just(DEFAULT_MAX_MESSAGE_SIZE)
    ]
}

/// `data` cut at the given offsets (out-of-range and repeated offsets are ignored).
fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().copied().filter(|&c| c <= data.len()).collect();
    points.extend([0, data.len()]);
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

/// The reader's buffers are within their limits, whatever it was fed.
fn check_buffers(r: &FrameReader) {
    assert!(
        r.msg.len() as u64 <= r.max_message_size,
        "message buffer over the limit"
    );
    assert!(
        r.ctrl.len() <= MAX_CONTROL_PAYLOAD,
        "control buffer over 125 bytes"
    );
    assert!(
        (r.head_len as usize) < MAX_HEADER,
        "header buffer holds a whole header"
    );
    if r.failed.is_some() {
        assert_eq!(
            r.msg.capacity() + r.ctrl.capacity(),
            0,
            "a failed reader keeps buffers"
        );
        assert!(!r.at_frame_boundary());
    }
}

/// What the reader promises about each message it reports.
fn check_message(m: &Message<Vec<u8>>, max: u64) {
    match m.opcode {
        TEXT | BINARY => assert!(m.data.len() as u64 <= max),
        CLOSE | PING | PONG => assert!(m.data.len() <= MAX_CONTROL_PAYLOAD),
        other => panic!("reported opcode {other}"),
    }
    if m.opcode == TEXT {
        let text = std::str::from_utf8(&m.data).expect("TEXT is valid UTF-8");
        assert_eq!(m.envelope, ocppj::peek(text));
    } else {
        assert_eq!(m.envelope, Envelope::default());
    }
    if m.opcode == CLOSE {
        assert_eq!(m.close_code.is_some(), !m.data.is_empty());
        assert!(m.close_code.is_none_or(is_valid_close_code));
        assert!(m.close_reason(&m.data).is_some());
    } else {
        assert_eq!(m.close_code, None);
    }
}

/// Feeds every chunk, checking the reader after each; once it fails, every later feed must
/// fail with the same error. Returns the messages and the error, if any.
fn run(r: &mut FrameReader, chunks: &[&[u8]]) -> (Msgs, Option<ProtocolError>) {
    let mut messages = Vec::new();
    let mut error = None;
    for chunk in chunks {
        match (r.feed_vec(chunk), &error) {
            (Ok(got), None) => messages.extend(got),
            (Err(e), None) => error = Some(e),
            (Err(e), Some(first)) => assert_eq!(&e, first, "a failed reader changed its error"),
            (Ok(_), Some(_)) => panic!("a failed reader accepted more bytes"),
        }
        check_buffers(r);
    }
    if let Some(e) = &error {
        assert!(matches!(
            e.close_code,
            CLOSE_PROTOCOL_ERROR | CLOSE_INVALID_DATA | CLOSE_TOO_BIG
        ));
        assert_eq!(r.feed_vec(b"").unwrap_err(), *e);
    }
    for m in &messages {
        check_message(m, r.max_message_size());
    }
    (messages, error)
}

/// Bytes that look like frames: plausible first and second bytes (valid or not), every length
/// encoding, short payloads; sometimes with a few bytes flipped.
fn frame_like_streams() -> impl Strategy<Value = Vec<u8>> {
    let opcode = prop_oneof![
        4 => prop::sample::select(vec![CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG]),
        1 => 0u8..16,
    ];
    let frame = (
        opcode,
        prop::bool::weighted(0.8),  // FIN
        prop::bool::weighted(0.05), // an RSV bit
        any::<bool>(),              // MASK
        0u8..4,                     // length form: 7-bit, 16-bit, 64-bit, huge 64-bit
        prop::collection::vec(any::<u8>(), 0..40),
        any::<[u8; 4]>(),
    )
        .prop_map(|(op, fin, rsv, mask, form, payload, key)| {
            let mut out = vec![u8::from(fin) << 7 | u8::from(rsv) << 6 | op];
            let n = payload.len();
            let bit = u8::from(mask) << 7;
            match form {
                0 => out.push(bit | n as u8),
                1 => {
                    out.push(bit | 126);
                    out.extend_from_slice(&(n as u16).to_be_bytes());
                }
                2 => {
                    out.push(bit | 127);
                    out.extend_from_slice(&(n as u64).to_be_bytes());
                }
                _ => {
                    out.push(bit | 127);
                    out.extend_from_slice(&(u64::MAX - n as u64).to_be_bytes());
                }
            }
            if mask {
                out.extend_from_slice(&key);
            }
            out.extend_from_slice(&payload);
            out
        });
    (
        prop::collection::vec(frame, 0..8),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(frames, flips)| {
            let mut bytes = frames.concat();
            if !bytes.is_empty() {
                for (at, bits) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= bits;
                }
            }
            bytes
        })
}

/// One message of a valid stream.
#[derive(Debug, Clone)]
enum Planned {
    Data {
        opcode: u8,
        payload: Vec<u8>,
        cuts: Vec<usize>,
    },
    Control {
        opcode: u8,
        payload: Vec<u8>,
    },
}

fn planned() -> impl Strategy<Value = Planned> {
    let text = prop_oneof![
        any::<String>(),
        r#"\[[234],"[a-z0-9]{0,8}",("[A-Za-z]{1,12}",)?\{("[a-z]{1,5}":(1|"x"|\[\]|null),?){0,3}\}\]"#,
    ]
    .prop_map(String::into_bytes);
    let data = prop_oneof![
        (Just(TEXT), text),
        (Just(BINARY), prop::collection::vec(any::<u8>(), 0..300)),
    ];
    prop_oneof![
        3 => (data, prop::collection::vec(any::<usize>(), 0..3))
            .prop_map(|((opcode, payload), cuts)| Planned::Data { opcode, payload, cuts }),
        1 => (
            prop::sample::select(vec![PING, PONG]),
            prop::collection::vec(any::<u8>(), 0..=MAX_CONTROL_PAYLOAD),
        )
            .prop_map(|(opcode, payload)| Planned::Control { opcode, payload }),
    ]
}

/// Writes the plan as frames (data messages fragmented at its cuts, a ping between fragments),
/// masked for a client, and ends with a close frame. Returns the bytes and the messages.
fn encode(plan: &[Planned], from_client: bool, keys: &[[u8; 4]]) -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
    let mut out = Vec::new();
    let mut expected = Vec::new();
    let mut frame_no = 0;
    let mut frame = |out: &mut Vec<u8>, opcode: u8, fin: bool, payload: &[u8]| {
        let key = from_client.then(|| keys[frame_no % keys.len()]);
        frame_no += 1;
        let mut buf = vec![0u8; frame_size(payload.len(), from_client)];
        write_frame(&mut buf, opcode, fin, key, &[payload]);
        out.extend(buf);
    };
    for item in plan {
        match item {
            Planned::Control { opcode, payload } => {
                frame(&mut out, *opcode, true, payload);
                expected.push((*opcode, payload.clone()));
            }
            Planned::Data {
                opcode,
                payload,
                cuts,
            } => {
                let mut points: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
                points.sort_unstable();
                points.dedup();
                let mut start = 0;
                for (i, &end) in points.iter().chain([payload.len()].iter()).enumerate() {
                    let last = i == points.len();
                    let op = if i == 0 { *opcode } else { CONTINUATION };
                    frame(&mut out, op, last, &payload[start..end]);
                    start = end;
                    if !last {
                        frame(&mut out, PING, true, b"between");
                    }
                }
                // The pings complete before the message they interrupt.
                expected.extend(std::iter::repeat_n(
                    (PING, b"between".to_vec()),
                    points.len(),
                ));
                expected.push((*opcode, payload.clone()));
            }
        }
    }
    frame(&mut out, CLOSE, true, b"\x03\xe8bye");
    expected.push((CLOSE, b"\x03\xe8bye".to_vec()));
    (out, expected)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_bytes_split_anywhere_never_panic(
        from_client in any::<bool>(),
        max in max_sizes(),
        data in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        run(&mut FrameReader::new(from_client, max), &split(&data, &cuts));
    }

    #[test]
    fn frame_like_bytes_split_anywhere_never_panic_and_split_does_not_matter(
        from_client in any::<bool>(),
        max in max_sizes(),
        data in frame_like_streams(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        let whole = run(&mut FrameReader::new(from_client, max), &[&data]);
        let pieces = run(&mut FrameReader::new(from_client, max), &split(&data, &cuts));
        // Messages completed in the call that failed are lost with the error, so with an error
        // the split run may report more of them; the error itself is the same.
        prop_assert_eq!(&pieces.1, &whole.1);
        if whole.1.is_none() {
            prop_assert_eq!(pieces.0, whole.0);
        } else {
            prop_assert!(pieces.0.starts_with(&whole.0));
        }
    }

    #[test]
    fn valid_stream_decodes_identically_however_split(
        from_client in any::<bool>(),
        plan in prop::collection::vec(planned(), 0..6),
        keys in prop::collection::vec(any::<[u8; 4]>(), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        byte_by_byte in prop::bool::weighted(0.1),
    ) {
        let (stream, expected) = encode(&plan, from_client, &keys);
        let chunks: Vec<&[u8]> = if byte_by_byte {
            stream.chunks(1).collect()
        } else {
            let cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            split(&stream, &cuts)
        };
        let mut reader = FrameReader::new(from_client, DEFAULT_MAX_MESSAGE_SIZE);
        let (got, error) = run(&mut reader, &chunks);
        prop_assert_eq!(error, None);
        let seen: Vec<(u8, Vec<u8>)> = got.iter().map(|m| (m.opcode, m.data.clone())).collect();
        prop_assert_eq!(seen, expected);
        prop_assert_eq!(&got, &whole_messages(from_client, &stream));
        prop_assert!(reader.at_message_boundary() && reader.closed());
    }
}

fn whole_messages(from_client: bool, stream: &[u8]) -> Msgs {
    FrameReader::new(from_client, DEFAULT_MAX_MESSAGE_SIZE)
        .feed_vec(stream)
        .expect("a valid stream")
}

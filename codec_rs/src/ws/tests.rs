use super::*;
use crate::ocppj::{JsonStr, CALL, NOT_OCPP};

const FIN: u8 = 0x80;
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const KEY2: [u8; 4] = [0x01, 0x80, 0xff, 0x7e];
const MAX: u64 = DEFAULT_MAX_MESSAGE_SIZE;

/// How a test frame encodes its payload length.
#[derive(Clone, Copy)]
enum Len {
    Minimal,
    Ext16,
    Ext64,
    /// Raw 7-bit field plus raw extended bytes, payload as given (for malformed headers).
    Raw(u8, &'static [u8]),
}

/// Builds a frame by hand, independent of the writer under test.
fn build(b0: u8, key: Option<[u8; 4]>, payload: &[u8], len: Len) -> Vec<u8> {
    let mask_bit = if key.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    let mut out = vec![b0];
    let len = match len {
        Len::Minimal if n <= 125 => Len::Raw(n as u8, &[]),
        Len::Minimal if n <= 0xFFFF => Len::Ext16,
        Len::Minimal => Len::Ext64,
        other => other,
    };
    match len {
        Len::Ext16 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        Len::Ext64 => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        Len::Raw(l7, ext) => {
            out.push(mask_bit | l7);
            out.extend_from_slice(ext);
        }
        Len::Minimal => unreachable!(),
    }
    if let Some(k) = key {
        out.extend_from_slice(&k);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A frame as a client sends it (masked).
fn cf(b0: u8, payload: &[u8]) -> Vec<u8> {
    build(b0, Some(KEY), payload, Len::Minimal)
}

/// A frame as a server sends it (unmasked).
fn sf(b0: u8, payload: &[u8]) -> Vec<u8> {
    build(b0, None, payload, Len::Minimal)
}

fn client() -> FrameReader {
    FrameReader::new(true, MAX)
}

fn server() -> FrameReader {
    FrameReader::new(false, MAX)
}

type Msgs = Vec<Message<Vec<u8>>>;

fn feed_chunks(r: &mut FrameReader, chunks: &[&[u8]]) -> Result<Msgs, ProtocolError> {
    let mut all = Vec::new();
    for c in chunks {
        all.extend(r.feed_vec(c)?);
    }
    Ok(all)
}

fn whole(from_client: bool, max: u64, bytes: &[u8]) -> Result<Msgs, ProtocolError> {
    FrameReader::new(from_client, max).feed_vec(bytes)
}

/// Feeds `bytes` split at every offset (two chunks) and byte by byte; each run must give the
/// same messages (or the same error) as feeding it whole. Returns the whole-feed result.
fn same_at_every_split(from_client: bool, max: u64, bytes: &[u8]) -> Result<Msgs, ProtocolError> {
    let expected = whole(from_client, max, bytes);
    for i in 0..=bytes.len() {
        let mut r = FrameReader::new(from_client, max);
        let got = feed_chunks(&mut r, &[&bytes[..i], &bytes[i..]]);
        assert_eq!(got, expected, "split at {i}");
        assert_eq!(
            r.at_frame_boundary(),
            expected.is_ok(),
            "boundary after split at {i}"
        );
    }
    let mut r = FrameReader::new(from_client, max);
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(feed_chunks(&mut r, &singles), expected, "byte by byte");
    expected
}

fn err(r: Result<Msgs, ProtocolError>) -> ProtocolError {
    r.expect_err("expected a protocol error")
}

fn assert_error(r: Result<Msgs, ProtocolError>, code: u16, reason_part: &str) {
    let e = err(r);
    assert_eq!(e.close_code, code, "{e:?}");
    assert!(
        e.reason.contains(reason_part),
        "{e:?} should mention {reason_part:?}"
    );
}

fn call_text() -> Vec<u8> {
    br#"[2,"19223201","MeterValues",{"connectorId":1,"meterValue":[{"timestamp":"2024-05-01T10:00:00Z","sampledValue":[{"value":"1234.5","measurand":"Energy.Active.Import.Register","unit":"Wh"}]}]}]"#.to_vec()
}

// ---- basic messages -------------------------------------------------------------------------

#[test]
fn server_text_message_with_envelope() {
    let text = call_text();
    let msgs = whole(false, MAX, &sf(FIN | TEXT, &text)).unwrap();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.opcode, TEXT);
    assert_eq!(m.data, text);
    assert_eq!(m.close_code, None);
    assert_eq!(m.close_reason(&m.data), None);
    assert_eq!(m.envelope.message_type, CALL);
    let s = std::str::from_utf8(&m.data).unwrap();
    assert_eq!(m.envelope.unique_id.as_ref().unwrap().as_str(s), "19223201");
    assert_eq!(m.envelope.action.as_ref().unwrap().as_str(s), "MeterValues");
    assert_eq!(
        &s[m.envelope.payload_start..m.envelope.payload_end],
        &s[28..s.len() - 1]
    );
}

#[test]
fn client_masked_text_is_unmasked() {
    let text = call_text();
    let msgs = same_at_every_split(true, MAX, &cf(FIN | TEXT, &text)).unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].data, text);
    assert_eq!(msgs[0].envelope.message_type, CALL);
}

#[test]
fn binary_message_is_not_peeked() {
    let msgs = whole(false, MAX, &sf(FIN | BINARY, &call_text())).unwrap();
    assert_eq!(msgs[0].opcode, BINARY);
    assert_eq!(msgs[0].envelope, ocppj::Envelope::default());
    assert_eq!(msgs[0].envelope.message_type, NOT_OCPP);
}

#[test]
fn text_that_is_not_ocpp() {
    let msgs = whole(false, MAX, &sf(FIN | TEXT, b"hello")).unwrap();
    assert_eq!(msgs[0].data, b"hello");
    assert_eq!(msgs[0].envelope.message_type, NOT_OCPP);
    assert_eq!(msgs[0].envelope.unique_id, None);
    assert_eq!(
        (msgs[0].envelope.payload_start, msgs[0].envelope.payload_end),
        (0, 0)
    );
}

#[test]
fn ping_and_pong_payloads() {
    let mut bytes = cf(FIN | PING, b"are you there");
    bytes.extend(cf(FIN | PONG, b""));
    let msgs = same_at_every_split(true, MAX, &bytes).unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        (msgs[0].opcode, msgs[0].data.as_slice()),
        (PING, &b"are you there"[..])
    );
    assert_eq!((msgs[1].opcode, msgs[1].data.as_slice()), (PONG, &b""[..]));
    assert_eq!(msgs[0].close_code, None);
    assert_eq!(msgs[0].close_reason(&msgs[0].data), None);
}

#[test]
fn empty_data_messages() {
    let mut bytes = sf(FIN | TEXT, b"");
    bytes.extend(sf(FIN | BINARY, b""));
    bytes.extend(sf(TEXT, b""));
    bytes.extend(sf(FIN | CONTINUATION, b""));
    let msgs = same_at_every_split(false, MAX, &bytes).unwrap();
    let got: Vec<(u8, usize)> = msgs.iter().map(|m| (m.opcode, m.data.len())).collect();
    assert_eq!(got, vec![(TEXT, 0), (BINARY, 0), (TEXT, 0)]);
}

#[test]
fn several_messages_in_one_chunk_and_split_everywhere() {
    let mut bytes = cf(FIN | TEXT, &call_text());
    bytes.extend(cf(FIN | PING, b"x"));
    bytes.extend(build(BINARY, Some(KEY2), b"abc", Len::Minimal));
    bytes.extend(cf(FIN | CONTINUATION, b"defg"));
    bytes.extend(cf(FIN | CLOSE, b"\x03\xe8done"));
    let msgs = same_at_every_split(true, MAX, &bytes).unwrap();
    let got: Vec<(u8, &[u8])> = msgs.iter().map(|m| (m.opcode, m.data.as_slice())).collect();
    let text = call_text();
    assert_eq!(
        got,
        vec![
            (TEXT, text.as_slice()),
            (PING, &b"x"[..]),
            (BINARY, &b"abcdefg"[..]),
            (CLOSE, &b"\x03\xe8done"[..]),
        ]
    );
    assert_eq!(msgs[3].close_code, Some(1000));
}

// ---- lengths --------------------------------------------------------------------------------

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Splits at every offset near the start and end and at a few inside (long payloads).
fn check_sampled_splits(from_client: bool, bytes: &[u8], expected: &[u8]) {
    let n = bytes.len();
    let mut offsets: Vec<usize> = (0..20.min(n)).chain(n.saturating_sub(20)..=n).collect();
    offsets.extend([n / 3, n / 2, n / 2 + 1, n / 2 + 2, n / 2 + 3]);
    for i in offsets {
        let mut r = FrameReader::new(from_client, MAX);
        let msgs = feed_chunks(&mut r, &[&bytes[..i], &bytes[i..]]).unwrap();
        assert_eq!(msgs.len(), 1, "split at {i}");
        assert_eq!(msgs[0].data, expected, "split at {i}");
        assert!(r.at_frame_boundary());
    }
}

#[test]
fn sixteen_bit_lengths() {
    for n in [126usize, 127, 1000, 65535] {
        let p = payload(n);
        let s = sf(FIN | BINARY, &p);
        assert_eq!(s[1], 126);
        assert_eq!(s.len(), 4 + n);
        check_sampled_splits(false, &s, &p);
        let c = cf(FIN | BINARY, &p);
        assert_eq!(c[1], 0x80 | 126);
        check_sampled_splits(true, &c, &p);
    }
}

#[test]
fn sixty_four_bit_lengths() {
    for n in [65536usize, 70001] {
        let p = payload(n);
        let s = sf(FIN | BINARY, &p);
        assert_eq!(s[1], 127);
        assert_eq!(s.len(), 10 + n);
        check_sampled_splits(false, &s, &p);
        let c = cf(FIN | BINARY, &p);
        check_sampled_splits(true, &c, &p);
    }
}

#[test]
fn non_minimal_lengths_are_accepted() {
    let mut bytes = build(FIN | TEXT, None, b"hello", Len::Ext16);
    bytes.extend(build(FIN | BINARY, None, b"world", Len::Ext64));
    bytes.extend(build(FIN | PING, None, b"p", Len::Ext16));
    bytes.extend(build(FIN | PONG, None, b"q", Len::Ext64));
    let msgs = same_at_every_split(false, MAX, &bytes).unwrap();
    let got: Vec<(u8, &[u8])> = msgs.iter().map(|m| (m.opcode, m.data.as_slice())).collect();
    assert_eq!(
        got,
        vec![
            (TEXT, &b"hello"[..]),
            (BINARY, &b"world"[..]),
            (PING, &b"p"[..]),
            (PONG, &b"q"[..])
        ]
    );
}

// ---- fragmentation --------------------------------------------------------------------------

#[test]
fn fragments_with_interleaved_control_frames() {
    let mut bytes = build(TEXT, Some(KEY), b"Hel", Len::Minimal);
    bytes.extend(build(FIN | PING, Some(KEY2), b"p1", Len::Minimal));
    bytes.extend(build(CONTINUATION, Some(KEY2), b"lo, ", Len::Minimal));
    bytes.extend(build(FIN | PONG, Some(KEY), b"", Len::Minimal));
    bytes.extend(build(CONTINUATION, Some(KEY), b"", Len::Minimal));
    bytes.extend(build(
        FIN | CONTINUATION,
        Some([9, 8, 7, 6]),
        b"world",
        Len::Minimal,
    ));
    let msgs = same_at_every_split(true, MAX, &bytes).unwrap();
    let got: Vec<(u8, &[u8])> = msgs.iter().map(|m| (m.opcode, m.data.as_slice())).collect();
    assert_eq!(
        got,
        vec![
            (PING, &b"p1"[..]),
            (PONG, &b""[..]),
            (TEXT, &b"Hello, world"[..])
        ]
    );
}

#[test]
fn fragmented_ocpp_call_is_peeked_after_joining() {
    let text = call_text();
    let (a, b) = text.split_at(40);
    let mut bytes = sf(TEXT, a);
    bytes.extend(sf(FIN | PING, b""));
    bytes.extend(sf(FIN | CONTINUATION, b));
    let msgs = same_at_every_split(false, MAX, &bytes).unwrap();
    assert_eq!(msgs[1].data, text);
    assert_eq!(msgs[1].envelope.message_type, CALL);
    assert_eq!(msgs[1].envelope.unique_id, Some(JsonStr::Span(4, 12)));
}

#[test]
fn utf8_split_across_fragments_is_valid() {
    let text = "zw€i 😀 ok".as_bytes();
    for cut in 1..text.len() {
        let mut bytes = sf(TEXT, &text[..cut]);
        bytes.extend(sf(FIN | CONTINUATION, &text[cut..]));
        let msgs = whole(false, MAX, &bytes).unwrap();
        assert_eq!(msgs[0].data, text, "cut at {cut}");
    }
}

#[test]
fn invalid_utf8_across_fragments_is_1007_at_completion() {
    // A 4-byte sequence cut short by the end of the message.
    let mut r = server();
    assert!(r.feed_vec(&sf(TEXT, b"ok \xf0\x9f")).unwrap().is_empty());
    assert!(r.feed_vec(&sf(FIN | PING, b"")).unwrap().len() == 1);
    assert_error(r.feed_vec(&sf(FIN | CONTINUATION, b"\x98")), 1007, "UTF-8");
}

// ---- close frames ---------------------------------------------------------------------------

#[test]
fn close_without_payload() {
    let mut r = client();
    let msgs = r.feed_vec(&cf(FIN | CLOSE, b"")).unwrap();
    assert_eq!(msgs[0].opcode, CLOSE);
    assert_eq!(msgs[0].close_code, None);
    assert_eq!(msgs[0].close_reason(&msgs[0].data), Some(""));
    assert!(r.closed());
    assert!(r.at_frame_boundary());
}

#[test]
fn close_with_code_and_reason() {
    let mut payload = 4000u16.to_be_bytes().to_vec();
    payload.extend_from_slice("bientôt".as_bytes());
    let msgs = same_at_every_split(false, MAX, &sf(FIN | CLOSE, &payload)).unwrap();
    assert_eq!(msgs[0].close_code, Some(4000));
    assert_eq!(msgs[0].close_reason(&msgs[0].data), Some("bientôt"));
    let msgs = whole(false, MAX, &sf(FIN | CLOSE, b"\x03\xe9")).unwrap();
    assert_eq!(msgs[0].close_code, Some(1001));
    assert_eq!(msgs[0].close_reason(&msgs[0].data), Some(""));
}

#[test]
fn closed_is_set_only_when_the_close_frame_is_complete() {
    let bytes = cf(FIN | CLOSE, b"\x03\xe8bye");
    let mut r = client();
    assert!(r.feed_vec(&bytes[..bytes.len() - 1]).unwrap().is_empty());
    assert!(!r.closed());
    assert!(!r.at_frame_boundary());
    assert_eq!(r.feed_vec(&bytes[bytes.len() - 1..]).unwrap().len(), 1);
    assert!(r.closed());
}

#[test]
fn valid_and_invalid_close_codes() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 3999, 4000, 4999,
    ] {
        let msgs = whole(false, MAX, &sf(FIN | CLOSE, &code.to_be_bytes())).unwrap();
        assert_eq!(msgs[0].close_code, Some(code));
    }
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        assert_error(
            whole(false, MAX, &sf(FIN | CLOSE, &code.to_be_bytes())),
            1002,
            "close code",
        );
    }
}

#[test]
fn close_payload_of_one_byte() {
    assert_error(
        same_at_every_split(true, MAX, &cf(FIN | CLOSE, b"\x03")),
        1002,
        "one byte",
    );
}

#[test]
fn close_reason_not_utf8() {
    assert_error(
        same_at_every_split(false, MAX, &sf(FIN | CLOSE, b"\x03\xe8ab\xff")),
        1007,
        "reason",
    );
}

#[test]
fn close_code_checked_before_reason() {
    assert_error(
        whole(false, MAX, &sf(FIN | CLOSE, b"\x03\xed\xff")),
        1002,
        "close code",
    );
}

// ---- the error table, row by row -------------------------------------------------------------

#[test]
fn rsv_bits() {
    for rsv in [0x40u8, 0x20, 0x10, 0x70] {
        assert_error(
            same_at_every_split(false, MAX, &sf(FIN | rsv | TEXT, b"x")),
            1002,
            "reserved bits",
        );
        assert_error(
            same_at_every_split(true, MAX, &cf(FIN | rsv | PING, b"")),
            1002,
            "reserved bits",
        );
    }
}

#[test]
fn reserved_opcodes() {
    for op in (3u8..=7).chain(11..=15) {
        assert_error(
            same_at_every_split(false, MAX, &sf(FIN | op, b"x")),
            1002,
            "reserved opcode",
        );
    }
}

#[test]
fn masking_must_match_the_side() {
    assert_error(
        same_at_every_split(true, MAX, &sf(FIN | TEXT, b"x")),
        1002,
        "not masked",
    );
    assert_error(
        same_at_every_split(false, MAX, &cf(FIN | TEXT, b"x")),
        1002,
        "masked",
    );
    assert_error(whole(true, MAX, &sf(FIN | CLOSE, b"")), 1002, "not masked");
}

#[test]
fn control_frame_fragmented() {
    for op in [CLOSE, PING, PONG] {
        assert_error(
            same_at_every_split(false, MAX, &sf(op, b"")),
            1002,
            "fragmented control",
        );
    }
}

#[test]
fn control_frame_too_long() {
    assert!(whole(false, MAX, &sf(FIN | PING, &[b'a'; 125])).is_ok());
    for op in [CLOSE, PING, PONG] {
        let bytes = sf(FIN | op, &[b'a'; 126]);
        assert_error(
            same_at_every_split(false, MAX, &bytes),
            1002,
            "control frame payload",
        );
        let bytes = build(FIN | op, None, &[b'a'; 126], Len::Ext64);
        assert_error(whole(false, MAX, &bytes), 1002, "control frame payload");
    }
    // 64-bit length with the top bit set on a control frame: the control check comes first.
    let bytes = build(
        FIN | PING,
        None,
        b"",
        Len::Raw(127, &[0x80, 0, 0, 0, 0, 0, 0, 1]),
    );
    assert_error(whole(false, MAX, &bytes), 1002, "control frame payload");
}

#[test]
fn continuation_without_message() {
    assert_error(
        same_at_every_split(false, MAX, &sf(FIN | CONTINUATION, b"x")),
        1002,
        "continuation",
    );
    assert_error(
        whole(true, MAX, &cf(CONTINUATION, b"")),
        1002,
        "continuation",
    );
    // After a complete message, nothing is in progress any more.
    let mut bytes = sf(FIN | TEXT, b"a");
    bytes.extend(sf(FIN | CONTINUATION, b"b"));
    assert_error(whole(false, MAX, &bytes), 1002, "continuation");
}

#[test]
fn new_data_message_while_one_is_in_progress() {
    for op in [TEXT, BINARY] {
        let mut bytes = sf(BINARY, b"a");
        bytes.extend(sf(FIN | PING, b""));
        bytes.extend(sf(FIN | op, b"b"));
        assert_error(same_at_every_split(false, MAX, &bytes), 1002, "in progress");
    }
}

#[test]
fn sixty_four_bit_length_with_msb() {
    let ext: &[u8] = &[0x80, 0, 0, 0, 0, 0, 0, 5];
    let bytes = build(FIN | BINARY, None, b"hello", Len::Raw(127, ext));
    assert_error(same_at_every_split(false, MAX, &bytes), 1002, "top bit");
    // Checked before the size limit.
    assert_error(whole(false, 10, &bytes), 1002, "top bit");
    // The largest 63-bit length passes that check and fails the size check.
    let ext: &[u8] = &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let bytes = build(FIN | BINARY, None, b"", Len::Raw(127, ext));
    assert_error(whole(false, MAX, &bytes), 1009, "too big");
}

#[test]
fn message_size_limit() {
    let max = 300;
    assert_eq!(
        whole(false, max, &sf(FIN | BINARY, &payload(300))).unwrap()[0]
            .data
            .len(),
        300
    );
    assert_error(
        same_at_every_split(false, max, &sf(FIN | BINARY, &payload(301))),
        1009,
        "too big",
    );
    assert_error(
        whole(true, max, &cf(FIN | TEXT, &payload(70000))),
        1009,
        "too big",
    );
    // Fragments add up: 200 + 100 is fine, 200 + 101 is not.
    let mut ok = sf(BINARY, &payload(200));
    ok.extend(sf(FIN | PING, &payload(100)));
    ok.extend(sf(FIN | CONTINUATION, &payload(100)));
    assert_eq!(whole(false, max, &ok).unwrap()[1].data.len(), 300);
    let mut bad = sf(BINARY, &payload(200));
    bad.extend(sf(FIN | CONTINUATION, &payload(101)));
    assert_error(same_at_every_split(false, max, &bad), 1009, "too big");
    // Control frames do not count.
    assert!(whole(false, 10, &sf(FIN | PING, &payload(125))).is_ok());
}

#[test]
fn too_big_is_raised_on_the_header_before_the_payload() {
    let mut r = FrameReader::new(true, 100);
    let bytes = cf(FIN | BINARY, &payload(1000));
    assert_error(r.feed_vec(&bytes[..4]), 1009, "too big");
}

#[test]
fn any_frame_after_close() {
    for next in [
        sf(FIN | PING, b""),
        sf(FIN | TEXT, b"x"),
        sf(FIN | CLOSE, b""),
    ] {
        let mut bytes = sf(FIN | CLOSE, b"\x03\xe8");
        bytes.extend(next);
        assert_error(same_at_every_split(false, MAX, &bytes), 1002, "after close");
    }
    // After close the size check still comes first (table order).
    let mut bytes = sf(FIN | CLOSE, b"");
    bytes.extend(sf(FIN | BINARY, &payload(20)));
    assert_error(whole(false, 10, &bytes), 1009, "too big");
    // ... and so do the 2-byte checks.
    let mut bytes = sf(FIN | CLOSE, b"");
    bytes.extend(sf(FIN | 0x40 | TEXT, b""));
    assert_error(whole(false, MAX, &bytes), 1002, "reserved bits");
}

#[test]
fn text_not_utf8() {
    for bad in [
        &b"\xff"[..],
        b"abc\xc3",
        b"\xed\xa0\x80",
        b"\xc0\xaf",
        b"\xf4\x90\x80\x80",
    ] {
        assert_error(
            same_at_every_split(true, MAX, &cf(FIN | TEXT, bad)),
            1007,
            "UTF-8",
        );
    }
    // Binary messages are not checked.
    assert_eq!(
        whole(false, MAX, &sf(FIN | BINARY, b"\xff")).unwrap()[0].data,
        b"\xff"
    );
}

// ---- error order and timing ------------------------------------------------------------------

#[test]
fn checks_run_in_table_order() {
    // rsv before opcode before mask before control-fin.
    assert_error(whole(true, MAX, &sf(0x40 | 3, b"")), 1002, "reserved bits");
    assert_error(whole(true, MAX, &sf(FIN | 3, b"")), 1002, "reserved opcode");
    assert_error(whole(true, MAX, &sf(PING, b"")), 1002, "not masked");
    // Control payload length is checked before anything that comes later.
    let mut bytes = sf(FIN | CLOSE, b"");
    bytes.extend(sf(FIN | PING, &[0; 126]));
    assert_error(whole(false, MAX, &bytes), 1002, "control frame payload");
    // Continuation check before the size check.
    assert_error(
        whole(false, 1, &sf(CONTINUATION, &[0; 5])),
        1002,
        "continuation",
    );
}

#[test]
fn header_errors_are_raised_once_the_two_byte_header_arrives() {
    let mut r = server();
    assert!(r.feed_vec(&[FIN | TEXT | 0x20]).unwrap().is_empty());
    assert!(!r.at_frame_boundary());
    assert_error(r.feed_vec(&[126]), 1002, "reserved bits");
}

#[test]
fn length_errors_are_raised_when_the_extended_length_arrives() {
    // Masked frame: the key has not arrived yet, the length check still fires.
    let ext: &[u8] = &[0x80, 0, 0, 0, 0, 0, 0, 1];
    let bytes = build(FIN | BINARY, Some(KEY), b"", Len::Raw(127, ext));
    let mut r = client();
    assert!(r.feed_vec(&bytes[..9]).unwrap().is_empty());
    assert_error(r.feed_vec(&bytes[9..10]), 1002, "top bit");
}

#[test]
fn errors_are_sticky_and_discard_messages_of_the_same_feed() {
    let mut r = server();
    let mut bytes = sf(FIN | TEXT, b"fine");
    bytes.extend(sf(FIN | 5, b""));
    let first = err(r.feed_vec(&bytes));
    assert_eq!(first.close_code, 1002);
    assert_eq!(err(r.feed_vec(b"")), first);
    assert_eq!(err(r.feed_vec(&sf(FIN | TEXT, b"ok"))), first);
    assert_eq!(r.error(), Some(&first));
    assert!(!r.at_frame_boundary());
}

// ---- state and memory ------------------------------------------------------------------------

#[test]
fn at_frame_boundary_tracks_partial_frames() {
    let mut r = client();
    assert!(r.at_frame_boundary());
    let text = cf(TEXT, b"abcdef");
    r.feed_vec(&text[..1]).unwrap();
    assert!(!r.at_frame_boundary(), "partial header");
    r.feed_vec(&text[1..8]).unwrap();
    assert!(!r.at_frame_boundary(), "partial payload");
    r.feed_vec(&text[8..]).unwrap();
    assert!(r.at_frame_boundary(), "between fragments");
    let last = cf(FIN | CONTINUATION, b"");
    r.feed_vec(&last[..2]).unwrap();
    assert!(!r.at_frame_boundary(), "header without key");
    assert_eq!(r.feed_vec(&last[2..]).unwrap()[0].data, b"abcdef");
    assert!(r.at_frame_boundary());
}

#[test]
fn idle_reader_holds_no_allocations() {
    assert!(
        std::mem::size_of::<FrameReader>() <= 128,
        "{}",
        std::mem::size_of::<FrameReader>()
    );
    let mut r = client();
    let mut bytes = cf(BINARY, &payload(3000));
    bytes.extend(cf(FIN | PING, b"ping payload"));
    bytes.extend(cf(FIN | CONTINUATION, &payload(5000)));
    for chunk in bytes.chunks(7) {
        r.feed_vec(chunk).unwrap();
    }
    assert!(r.at_frame_boundary());
    assert_eq!(r.msg.capacity(), 0);
    assert_eq!(r.ctrl.capacity(), 0);
    assert!(r.failed.is_none());
}

#[test]
fn unmask_keeps_the_key_phase_across_pieces() {
    let data = payload(103);
    let mut once = data.clone();
    unmask(&mut once, KEY, 0);
    for cut in 0..data.len() {
        for cut2 in [cut, (cut + 9).min(data.len())] {
            let mut pieces = data.clone();
            let (a, rest) = pieces.split_at_mut(cut);
            let (b, c) = rest.split_at_mut(cut2 - cut);
            unmask(a, KEY, 0);
            unmask(b, KEY, cut);
            unmask(c, KEY, cut2);
            assert_eq!(pieces, once);
        }
    }
    let expected: Vec<u8> = data
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ KEY[i % 4])
        .collect();
    assert_eq!(once, expected);
}

// ---- writer ----------------------------------------------------------------------------------

#[test]
fn encode_unmasked_frames_round_trip() {
    for n in [0usize, 1, 125, 126, 65535, 65536] {
        let p = payload(n);
        let f = encode_frame(BINARY, &p, false, true).unwrap();
        assert_eq!(f, build(FIN | BINARY, None, &p, Len::Minimal), "len {n}");
        let msgs = whole(false, MAX, &f).unwrap();
        assert_eq!(msgs[0].data, p);
    }
}

#[test]
fn encode_masked_frames_round_trip() {
    for n in [0usize, 3, 125, 126, 65535, 65536] {
        let p = payload(n);
        let f = encode_frame(
            TEXT,
            &p.iter().map(|b| b & 0x7f).collect::<Vec<_>>(),
            true,
            true,
        )
        .unwrap();
        assert_eq!(f.len(), frame_size(n, true));
        assert_eq!(f[0], FIN | TEXT);
        assert_ne!(f[1] & 0x80, 0);
        let msgs = whole(true, MAX, &f).unwrap();
        assert_eq!(msgs[0].data, p.iter().map(|b| b & 0x7f).collect::<Vec<_>>());
    }
    // A fresh key per frame.
    let keys: std::collections::HashSet<Vec<u8>> = (0..8)
        .map(|_| encode_frame(BINARY, b"", true, true).unwrap()[2..6].to_vec())
        .collect();
    assert!(keys.len() > 1);
}

#[test]
fn encode_fragments_round_trip() {
    let mut bytes = encode_frame(TEXT, b"frag", false, false).unwrap();
    assert_eq!(bytes[0], TEXT);
    bytes.extend(encode_frame(PING, b"", false, true).unwrap());
    bytes.extend(encode_frame(CONTINUATION, b"ment", false, true).unwrap());
    let msgs = whole(false, MAX, &bytes).unwrap();
    assert_eq!(msgs[1].data, b"fragment");
}

#[test]
fn encode_frame_rejects_invalid_frames() {
    for op in [3u8, 7, 11, 15, 16, 255] {
        assert!(matches!(
            encode_frame(op, b"", false, true),
            Err(EncodeError::Invalid(_))
        ));
    }
    assert!(matches!(
        encode_frame(PING, b"", false, false),
        Err(EncodeError::Invalid(_))
    ));
    assert!(matches!(
        encode_frame(PONG, &[0; 126], false, true),
        Err(EncodeError::Invalid(_))
    ));
    assert!(encode_frame(PONG, &[0; 125], false, true).is_ok());
    assert!(encode_frame(BINARY, b"", true, false).is_ok());
}

#[test]
fn encode_close_frames() {
    assert_eq!(encode_close(None, "", false).unwrap(), vec![FIN | CLOSE, 0]);
    let f = encode_close(Some(1001), "going away", false).unwrap();
    assert_eq!(
        f,
        build(FIN | CLOSE, None, b"\x03\xe9going away", Len::Minimal)
    );
    let f = encode_close(Some(4000), "é", true).unwrap();
    let msgs = whole(true, MAX, &f).unwrap();
    assert_eq!(msgs[0].close_code, Some(4000));
    assert_eq!(msgs[0].close_reason(&msgs[0].data), Some("é"));
    let reason = "r".repeat(123);
    assert_eq!(
        encode_close(Some(1000), &reason, false).unwrap().len(),
        2 + 125
    );
    assert!(matches!(
        encode_close(Some(1000), &"r".repeat(124), false),
        Err(EncodeError::Invalid(_))
    ));
    assert!(matches!(
        encode_close(None, "why", false),
        Err(EncodeError::Invalid(_))
    ));
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
        assert!(matches!(
            encode_close(Some(code), "", false),
            Err(EncodeError::Invalid(_))
        ));
    }
}

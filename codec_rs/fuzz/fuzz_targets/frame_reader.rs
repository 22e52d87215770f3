//! The frame reader on arbitrary bytes: never panics, and feeding the stream in pieces gives
//! the messages (or the error) of feeding it whole. The first two bytes choose the side, the
//! message size limit and the piece size.
#![no_main]

use _codec::ws::{FrameReader, DEFAULT_MAX_MESSAGE_SIZE};
use libfuzzer_sys::fuzz_target;

const LIMITS: [u64; 4] = [0, 125, 300, DEFAULT_MAX_MESSAGE_SIZE];

fuzz_target!(|data: &[u8]| {
    let [setup, stride, stream @ ..] = data else {
        return;
    };
    let from_client = setup & 1 == 1;
    let max = LIMITS[usize::from(setup >> 1) & 3];

    let whole = FrameReader::new(from_client, max).feed_vec(stream);

    let mut reader = FrameReader::new(from_client, max);
    let mut messages = Vec::new();
    let mut error = None;
    for piece in stream.chunks(usize::from(*stride) + 1) {
        match reader.feed_vec(piece) {
            Ok(got) => messages.extend(got),
            Err(e) => {
                assert_eq!(reader.feed_vec(b"").unwrap_err(), e, "the error is sticky");
                error = Some(e);
                break;
            }
        }
    }
    match whole {
        Ok(expected) => {
            assert_eq!(error, None);
            assert_eq!(messages, expected);
        }
        // Messages completed by the failing call are lost with the error, so only a prefix
        // of the pieces' messages is comparable; the error must be the same.
        Err(e) => assert_eq!(error, Some(e)),
    }
    for m in &messages {
        match m.opcode {
            1 | 2 => assert!(m.data.len() as u64 <= max),
            _ => assert!(m.data.len() <= 125),
        }
    }
});

//! The OCPP-J envelope peek on arbitrary text: never panics, and a reported envelope points
//! at a payload inside the text, on character boundaries.
#![no_main]

use _codec::ocppj::{peek, Envelope, NOT_OCPP};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = peek(text);
    if env.message_type == NOT_OCPP {
        assert_eq!(env, Envelope::default());
        return;
    }
    let (start, end) = (env.payload_start, env.payload_end);
    assert!(0 < start && start < end && end < text.len());
    assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
    for s in [&env.unique_id, &env.action, &env.error_code].into_iter().flatten() {
        let _ = s.as_str(text);
    }
});

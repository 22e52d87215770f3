//! Property tests of the envelope peek: it never panics, whatever the text, and what it
//! reports is consistent with the text it was given.

use proptest::prelude::*;

use super::*;

/// Checks everything `peek` promises about its result for `text`.
fn check(text: &str) -> Envelope {
    let env = peek(text);
    if env.message_type == NOT_OCPP {
        assert_eq!(env, Envelope::default());
        return env;
    }
    assert!(matches!(env.message_type, CALL | CALLRESULT | CALLERROR));
    let (start, end) = (env.payload_start, env.payload_end);
    assert!(
        0 < start && start < end && end < text.len(),
        "payload span {start}..{end}"
    );
    assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
    let id = env.unique_id.as_ref().expect("a frame has a unique id");
    let _ = id.as_str(text);
    assert_eq!(env.action.is_some(), env.message_type == CALL);
    assert_eq!(env.error_code.is_some(), env.message_type == CALLERROR);
    for s in [&env.action, &env.error_code].into_iter().flatten() {
        let _ = s.as_str(text);
    }
    // The payload is a JSON value by itself: as the payload of another frame it is found again.
    let payload = &text[start..end];
    let again = peek(&format!("[3,\"x\",{payload}]"));
    assert_eq!(
        again.message_type, CALLRESULT,
        "payload {payload:?} of {text:?}"
    );
    assert_eq!(again.payload_end - again.payload_start, end - start);
    env
}

/// Short strings over the JSON alphabet: far more grammar corner cases than random text.
fn json_alphabet() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[\[\]{}",:\\/ \t\nu0-9a-fA-FeEtrulsn.+-]{0,48}"#).unwrap()
}

/// `s` as a JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// JSON string literals: any text, escapes of every kind, surrogate pairs and lone surrogates.
fn json_strings() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => any::<String>().prop_map(|s| quote(&s)),
        1 => Just(r#""a\"b\\c\/\b\f\n\r\t\u0041""#.to_owned()),
        1 => Just(r#""\ud83d\ude00""#.to_owned()),
        1 => Just(r#""\ud800""#.to_owned()),
        1 => Just(r#""\udc00x""#.to_owned()),
    ]
}

/// Valid JSON values (apart from the lone surrogates some strings hold).
fn json_values() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        8 => json_strings(),
        2 => prop::sample::select(vec!["null", "true", "false"]).prop_map(str::to_owned),
        8 => "-?(0|[1-9][0-9]{0,5})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
        1 => (61usize..=64).prop_map(|n| "[".repeat(n) + &"]".repeat(n)),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((json_strings(), inner), 0..4).prop_map(|v| {
                let members: Vec<String> = v.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// OCPP-J frames (CALL, CALLRESULT, CALLERROR) with arbitrary strings and payloads, spaced
/// oddly, then sometimes edited at a few places: most are OCPP-J, many nearly so.
fn frame_shaped() -> impl Strategy<Value = String> {
    let ws = || {
        prop::sample::select(vec![
            "", "", "", " ", "\n\t\r ", "", "", " ", "\t", "\u{a0}",
        ])
    };
    let frame = (
        prop::sample::select(vec![
            "2", "3", "4", "2", "3", "4", "2", "3", "4", "2.0", "02", "\"2\"", "5",
        ]),
        prop::collection::vec(json_strings(), 3),
        json_values(),
        ws(),
        ws(),
    )
        .prop_map(|(kind, strings, payload, a, b)| {
            let elements: Vec<&str> = match kind {
                "3" => vec![kind, &strings[0], &payload],
                "4" => vec![kind, &strings[0], &strings[1], &strings[2], &payload],
                _ => vec![kind, &strings[0], &strings[1], &payload],
            };
            format!("{a}[{a}{}{b}]{b}", elements.join(&format!("{b},{a}")))
        });
    let edit = (
        any::<prop::sample::Index>(),
        0u8..3,
        prop::sample::select(r#"[]{}",:\u0e."#.chars().collect::<Vec<_>>()),
    );
    let edits = prop_oneof![2 => Just(Vec::new()), 1 => prop::collection::vec(edit, 1..4)];
    (frame, edits).prop_map(|(mut text, edits)| {
        for (at, kind, c) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            match kind {
                0 => text.insert(i, c),
                1 if i < text.len() => {
                    text.remove(i);
                }
                _ => text.truncate(i),
            }
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn peek_never_panics_on_arbitrary_text(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn peek_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn peek_never_panics_on_json_like_text(text in json_alphabet()) {
        check(&text);
    }

    #[test]
    fn peek_of_frame_shaped_text_is_consistent(text in frame_shaped(), cut in any::<prop::sample::Index>()) {
        check(&text);
        // Every prefix too (a truncated frame), on character boundaries.
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        check(&text[..at]);
    }
}

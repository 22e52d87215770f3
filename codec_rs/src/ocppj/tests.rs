use super::*;

/// The envelope with its strings resolved, for compact assertions.
#[derive(Debug, PartialEq)]
struct Seen<'a> {
    message_type: u8,
    unique_id: Option<&'a str>,
    action: Option<&'a str>,
    error_code: Option<&'a str>,
    payload: &'a str,
}

fn seen<'a>(text: &'a str, env: &'a Envelope) -> Seen<'a> {
    Seen {
        message_type: env.message_type,
        unique_id: env.unique_id.as_ref().map(|s| s.as_str(text)),
        action: env.action.as_ref().map(|s| s.as_str(text)),
        error_code: env.error_code.as_ref().map(|s| s.as_str(text)),
        payload: &text[env.payload_start..env.payload_end],
    }
}

fn assert_not_ocpp(text: &str) {
    assert_eq!(
        peek(text),
        Envelope::default(),
        "{text:?} should be NOT_OCPP"
    );
}

fn call<'a>(id: &'a str, action: &'a str, payload: &'a str) -> Seen<'a> {
    Seen {
        message_type: CALL,
        unique_id: Some(id),
        action: Some(action),
        error_code: None,
        payload,
    }
}

#[test]
fn valid_call() {
    let text = r#"[2,"19223201","BootNotification",{"chargePointVendor":"VendorX","chargePointModel":"SingleSocket"}]"#;
    let env = peek(text);
    assert_eq!(
        seen(text, &env),
        call(
            "19223201",
            "BootNotification",
            r#"{"chargePointVendor":"VendorX","chargePointModel":"SingleSocket"}"#
        )
    );
    assert_eq!(env.payload_start, 33);
    assert_eq!(env.payload_end, text.len() - 1);
    // Strings without escapes are spans of the text, not copies.
    assert_eq!(env.unique_id, Some(JsonStr::Span(4, 12)));
}

#[test]
fn valid_callresult() {
    let text = r#"[3,"19223201",{"status":"Accepted","currentTime":"2013-02-01T20:53:32.486Z","interval":300}]"#;
    let env = peek(text);
    assert_eq!(
        seen(text, &env),
        Seen {
            message_type: CALLRESULT,
            unique_id: Some("19223201"),
            action: None,
            error_code: None,
            payload: &text[14..text.len() - 1],
        }
    );
}

#[test]
fn valid_callerror() {
    let text =
        r#"[4,"162376037","NotSupported","SetDisplayMessageRequest not implemented",{"a":[1,2]}]"#;
    let env = peek(text);
    assert_eq!(
        seen(text, &env),
        Seen {
            message_type: CALLERROR,
            unique_id: Some("162376037"),
            action: None,
            error_code: Some("NotSupported"),
            payload: r#"{"a":[1,2]}"#,
        }
    );
}

#[test]
fn payload_may_be_any_value() {
    for payload in [
        "{}",
        "[]",
        "null",
        "true",
        "false",
        "0",
        "-0",
        "12",
        "-3.25",
        "1e5",
        "2E-7",
        "0.5e+10",
        r#""text""#,
        r#"[1,"a",{"b":null}]"#,
        r#"{"k":{"k":{"k":[]}}}"#,
    ] {
        let text = format!(r#"[2,"id","Act",{payload}]"#);
        let env = peek(&text);
        assert_eq!(seen(&text, &env), call("id", "Act", payload), "{text}");
        let text = format!(r#"[3,"id",{payload}]"#);
        assert_eq!(peek(&text).message_type, CALLRESULT, "{text}");
    }
}

#[test]
fn whitespace_around_everything() {
    let text = " \t\r\n[ \n2\t,\r\"id\" ,  \"Heartbeat\"\n, { \"a\" : [ 1 , 2 ] }\t ]\r\n ";
    let env = peek(text);
    assert_eq!(
        seen(text, &env),
        call("id", "Heartbeat", "{ \"a\" : [ 1 , 2 ] }")
    );
    // Only the four JSON whitespace characters count.
    assert_not_ocpp("\u{0B}[2,\"id\",\"A\",{}]");
    assert_not_ocpp("[2,\"id\",\"A\",{}]\u{0C}");
    assert_not_ocpp("[2,\u{A0}\"id\",\"A\",{}]");
}

#[test]
fn empty_strings_are_strings() {
    let text = r#"[2,"","",{}]"#;
    let env = peek(text);
    assert_eq!(seen(text, &env), call("", "", "{}"));
}

#[test]
fn wrong_arity() {
    for text in [
        r#"[2,"id","Act"]"#,
        r#"[2,"id","Act",{},{}]"#,
        r#"[2,"id"]"#,
        r#"[3,"id"]"#,
        r#"[3,"id",{},{}]"#,
        r#"[4,"id","Code","desc"]"#,
        r#"[4,"id","Code","desc",{},{}]"#,
        r#"[2]"#,
        r#"[]"#,
    ] {
        assert_not_ocpp(text);
    }
}

#[test]
fn wrong_element_types() {
    for text in [
        r#"[2,5,"Act",{}]"#,
        r#"[2,null,"Act",{}]"#,
        r#"[2,"id",null,{}]"#,
        r#"[2,"id",["Act"],{}]"#,
        r#"[3,{"id":1},{}]"#,
        r#"[4,"id",1,"desc",{}]"#,
        r#"[4,"id","Code",null,{}]"#,
        r#"{"2":"id"}"#,
        r#""[2,\"id\",\"A\",{}]""#,
    ] {
        assert_not_ocpp(text);
    }
}

#[test]
fn message_type_must_be_the_exact_token() {
    for first in [
        "2.0", "02", "\"2\"", "-2", "2e0", "2E0", "20", "1", "5", "0", "true", "null",
    ] {
        assert_not_ocpp(&format!(r#"[{first},"id","Act",{{}}]"#));
    }
    assert_eq!(peek(r#"[2,"id","Act",{}]"#).message_type, CALL);
}

#[test]
fn escapes_in_ids_are_decoded() {
    let cases = [
        (r#""a\"b""#, "a\"b"),
        (r#""back\\slash""#, "back\\slash"),
        (r#""\/""#, "/"),
        (r#""\b\f\n\r\t""#, "\u{8}\u{c}\n\r\t"),
        (r#""\u0041\u00e9\u20AC""#, "Aé€"),
        (r#""x\u0000y""#, "x\u{0}y"),
        (r#""\ud83d\ude00!""#, "😀!"),
        (r#""\uD83D\uDE00""#, "😀"),
        (r#""pre é \u00e9 post""#, "pre é é post"),
    ];
    for (json, value) in cases {
        let text = format!(r#"[2,{json},{json},{{}}]"#);
        let env = peek(&text);
        assert_eq!(env.message_type, CALL, "{text}");
        assert_eq!(
            env.unique_id,
            Some(JsonStr::Decoded(value.to_owned())),
            "{text}"
        );
        assert_eq!(env.action.as_ref().unwrap().as_str(&text), value);
        let text = format!(r#"[4,"id",{json},"desc",{{}}]"#);
        assert_eq!(
            peek(&text).error_code,
            Some(JsonStr::Decoded(value.to_owned())),
            "{text}"
        );
    }
}

#[test]
fn raw_non_ascii_and_offsets_are_in_bytes() {
    let text = r#"[2,"ïd€","Äction",{"x":"😀"}]"#;
    let env = peek(text);
    assert_eq!(seen(text, &env), call("ïd€", "Äction", r#"{"x":"😀"}"#));
    assert_eq!(env.payload_start, text.find('{').unwrap());
    assert_eq!(env.payload_end, text.len() - 1);
}

#[test]
fn lone_surrogates_make_it_not_ocpp() {
    for s in [
        r#""\ud800""#,
        r#""\udbff""#,
        r#""\udc00""#,
        r#""\udfff x""#,
        r#""\ud800x""#,
        r#""\ud800\u0041""#,
        r#""\ud800\ud800""#,
        r#""\ud800\\u dc00""#,
        r#""\ude00\ud83d""#,
        r#""\ud800\n""#,
    ] {
        assert_not_ocpp(&format!(r#"[2,{s},"Act",{{}}]"#));
        assert_not_ocpp(&format!(r#"[2,"id",{s},{{}}]"#));
        assert_not_ocpp(&format!(r#"[4,"id","Code",{s},{{}}]"#));
        // Anywhere in the text, payload values and keys included.
        assert_not_ocpp(&format!(r#"[2,"id","Act",{{"k":{s}}}]"#));
        assert_not_ocpp(&format!(r#"[2,"id","Act",{{{s}:1}}]"#));
        assert_not_ocpp(&format!(r#"[3,"id",[{s}]]"#));
    }
}

#[test]
fn invalid_escapes_and_raw_controls() {
    for s in [
        r#""\x41""#,
        r#""\u12""#,
        r#""\u12G4""#,
        r#""\U0041""#,
        r#""\'""#,
        r#""\""#,
        "\"tab\there\"",
        "\"nl\nhere\"",
        "\"nul\u{0}here\"",
        "\"\u{1f}\"",
    ] {
        assert_not_ocpp(&format!(r#"[2,{s},"Act",{{}}]"#));
        assert_not_ocpp(&format!(r#"[2,"id","Act",{{"k":{s}}}]"#));
    }
    // DEL is not a control character in JSON.
    assert_eq!(peek("[2,\"a\u{7f}\",\"Act\",{}]").message_type, CALL);
}

fn nested(depth: usize) -> String {
    // `depth` levels inside the envelope array, alternating arrays and objects.
    let mut open = String::new();
    let mut close = String::new();
    for i in 0..depth {
        if i % 2 == 0 {
            open.push('[');
            close.insert(0, ']');
        } else {
            open.push_str("{\"k\":");
            close.insert(0, '}');
        }
    }
    format!("[3,\"id\",{open}{close}]")
}

#[test]
fn nesting_limit_is_64_levels() {
    // The envelope array is level 1, so 63 levels fit inside it.
    assert_eq!(peek(&nested(63)).message_type, CALLRESULT);
    assert_not_ocpp(&nested(64));
    assert_not_ocpp(&nested(10_000));
    let arrays = format!("[3,\"id\",{}{}]", "[".repeat(63), "]".repeat(63));
    assert_eq!(peek(&arrays).message_type, CALLRESULT);
    let arrays = format!("[3,\"id\",{}{}]", "[".repeat(64), "]".repeat(64));
    assert_not_ocpp(&arrays);
    let objects = format!("[3,\"id\",{}1{}]", "{\"a\":".repeat(64), "}".repeat(64));
    assert_not_ocpp(&objects);
    let objects = format!("[3,\"id\",{}1{}]", "{\"a\":".repeat(63), "}".repeat(63));
    assert_eq!(peek(&objects).message_type, CALLRESULT);
}

#[test]
fn garbage_is_not_ocpp() {
    for text in [
        "",
        "   ",
        "[",
        "[2",
        "[2,",
        r#"[2,"id""#,
        r#"[2,"id","Act",{}"#,
        r#"[2,"id","Act",{}]]"#,
        r#"[2,"id","Act",{}],"#,
        r#"[2,"id","Act",{}] x"#,
        r#"[2,"id","Act",{}][3,"id",{}]"#,
        r#"[2,"id","Act",{},]"#,
        r#"[2,"id","Act",{"a":1,}]"#,
        r#"[2,"id","Act",{"a"}]"#,
        r#"[2,"id","Act",{"a":}]"#,
        r#"[2,"id","Act",{"a" 1}]"#,
        r#"[2,"id","Act",{a:1}]"#,
        r#"[2,"id","Act",{1:1}]"#,
        r#"[2,"id","Act",[1,]]"#,
        r#"[2,"id","Act",[,1]]"#,
        r#"[2,"id","Act",[1 2]]"#,
        r#"[2,"id","Act",tru]"#,
        r#"[2,"id","Act",nul]"#,
        r#"[2,"id","Act",True]"#,
        r#"[2,"id","Act",NaN]"#,
        r#"[2,"id","Act",Infinity]"#,
        r#"[2,"id","Act",-Infinity]"#,
        r#"[2,"id","Act",01]"#,
        r#"[2,"id","Act",1.]"#,
        r#"[2,"id","Act",.5]"#,
        r#"[2,"id","Act",1e]"#,
        r#"[2,"id","Act",1e+]"#,
        r#"[2,"id","Act",-]"#,
        r#"[2,"id","Act",+1]"#,
        r#"[2,"id","Act",0x10]"#,
        r#"[2,"id","Act",'x']"#,
        r#"[2,"id","Act",{} /* c */]"#,
        r#"[2 "id","Act",{}]"#,
        r#"[2,"id" "Act",{}]"#,
        r#"[2,"id","Act" {}]"#,
        r#"[2,"id,"Act",{}]"#,
        "null",
        "{}",
        "2",
    ] {
        assert_not_ocpp(text);
    }
}

#[test]
fn duplicate_keys_and_deep_valid_payloads_are_accepted() {
    let text = r#"[2,"id","Act",{"a":1,"a":[true,false,null,-0.0e0,"s",{"":{}}]}]"#;
    assert_eq!(peek(text).message_type, CALL);
}

#[test]
fn plain_run_end_matches_a_byte_by_byte_scan() {
    fn naive(s: &[u8], mut i: usize) -> usize {
        while i < s.len() && !(s[i] == b'"' || s[i] == b'\\' || s[i] < 0x20) {
            i += 1;
        }
        i
    }
    // Every stop byte and some near misses at every position of a 19-byte buffer, with high
    // (UTF-8) bytes around them.
    let fill = [b'a', 0x80, 0xff, 0x21, 0x5b, 0x5d, 0xa2, 0xdc, 0x7f, 0x20];
    let stops = [b'"', b'\\', 0x00, 0x1f, 0x0a, 0x01];
    for &f in &fill {
        for &stop in stops.iter().chain(&fill) {
            for pos in 0..19 {
                let mut s = vec![f; 19];
                s[pos] = stop;
                for start in 0..=s.len() {
                    assert_eq!(
                        plain_run_end(&s, start),
                        naive(&s, start),
                        "{s:?} from {start}"
                    );
                }
            }
        }
    }
    // Two stops in one word: the first one wins.
    let s = b"abc\\de\"fgh";
    assert_eq!(plain_run_end(s, 0), 3);
}

#[test]
fn ocpp21_send_and_callresulterror() {
    let text = r#"[6,"s1","NotifyPeriodicEventStream",{"id":1,"pending":0,"basetime":"2026-12-07T00:00:00Z","data":[]}]"#;
    let env = peek(text);
    assert_eq!(
        seen(text, &env),
        Seen {
            message_type: SEND,
            unique_id: Some("s1"),
            action: Some("NotifyPeriodicEventStream"),
            error_code: None,
            payload: r#"{"id":1,"pending":0,"basetime":"2026-12-07T00:00:00Z","data":[]}"#,
        }
    );
    let text = r#"[5,"r1","FormatViolation","bad result",{"detail":1}]"#;
    let env = peek(text);
    assert_eq!(
        seen(text, &env),
        Seen {
            message_type: CALLRESULTERROR,
            unique_id: Some("r1"),
            action: None,
            error_code: Some("FormatViolation"),
            payload: r#"{"detail":1}"#,
        }
    );
    // Shaped like CALL and CALLERROR, and as strict about it.
    assert_not_ocpp(r#"[6,"s1",{}]"#);
    assert_not_ocpp(r#"[5,"r1","FormatViolation",{}]"#);
    assert_not_ocpp(r#"[7,"x","A",{}]"#);
}

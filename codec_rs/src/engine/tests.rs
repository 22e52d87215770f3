//! The engine over socket pairs: each link's charger and upstream sockets are one end of a pair,
//! the test holds the other end (as the charger and as the back-office).

use super::*;
use crate::ws::encode_frame;
use proptest::prelude::*;
use std::os::unix::net::UnixStream;

const BOUNDS: [f64; 3] = [0.001, 0.1, f64::INFINITY];
const PACING: Pacing = Pacing {
    window: Duration::from_millis(2),
    counts_every: Duration::from_secs(1),
};
/// Longer than any test takes: what it paces is never signalled within a test.
const NEVER: Duration = Duration::from_secs(3600);
/// A chunk that makes the engine panic (compiled into test builds only).
pub(super) const PANIC: &[u8] = b"\xffpanic";

struct Peers {
    charger: UnixStream,
    upstream: UnixStream,
    // the engine's ends, kept open while adopted
    _ends: [UnixStream; 2],
}

fn adopt(engine: &Engine, id: u64, tracked: &[&str], trailing: [Vec<u8>; 2]) -> Peers {
    adopt_copying(engine, id, tracked, trailing, false)
}

fn adopt_copying(
    engine: &Engine,
    id: u64,
    tracked: &[&str],
    trailing: [Vec<u8>; 2],
    copy_charger: bool,
) -> Peers {
    let (charger, charger_end) = UnixStream::pair().unwrap();
    let (upstream, upstream_end) = UnixStream::pair().unwrap();
    charger_end.set_nonblocking(true).unwrap();
    upstream_end.set_nonblocking(true).unwrap();
    let adopted = engine.adopt(Adopt {
        id,
        fds: [charger_end.as_raw_fd(), upstream_end.as_raw_fd()],
        readers: [
            FrameReader::new(true, ws::DEFAULT_MAX_MESSAGE_SIZE),
            FrameReader::new(false, ws::DEFAULT_MAX_MESSAGE_SIZE),
        ],
        trailing,
        pending: [Vec::new(), Vec::new()],
        tracked: Arc::new(tracked.iter().map(|s| s.to_string()).collect()),
        keep_last_call: true,
        copy_charger,
        activity: Arc::new(AtomicU64::new(0)),
    });
    assert!(adopted.is_ok(), "the engine has stopped");
    for s in [&charger, &upstream] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    Peers {
        charger,
        upstream,
        _ends: [charger_end, upstream_end],
    }
}

fn masked(text: &str) -> Vec<u8> {
    encode_frame(ws::TEXT, text.as_bytes(), true, true).unwrap()
}

fn plain(text: &str) -> Vec<u8> {
    encode_frame(ws::TEXT, text.as_bytes(), false, true).unwrap()
}

fn read_exact(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// Waits for the engine's next batch (the notification socket) and returns its reports.
fn next_reports(engine: &Engine, all: &mut Vec<Report>, counters: &mut [Counters; 2]) {
    let mut waited = 0;
    loop {
        let (reports, c) = engine.take();
        for (total, mut these) in counters.iter_mut().zip(c) {
            merge(total, &mut these);
        }
        if !reports.is_empty() {
            all.extend(reports);
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
        waited += 1;
        assert!(waited < 2000, "no report from the engine");
    }
}

/// Whether the notification socket holds a signal now (taking it, as `take` would).
fn signalled(engine: &Engine) -> bool {
    let mut byte = [0u8; 64];
    matches!(borrowed(engine.notify_fd()).read(&mut byte), Ok(n) if n > 0)
}

/// Waits (up to 10 s) for a signal on the notification socket.
fn wait_signalled(engine: &Engine) -> bool {
    (0..2000).any(|_| {
        let got = signalled(engine);
        if !got {
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    })
}

fn handback(engine: &Engine) -> Handback {
    let mut reports = Vec::new();
    let mut counters = [Counters::default(), Counters::default()];
    loop {
        next_reports(engine, &mut reports, &mut counters);
        if let Some(i) = reports.iter().position(|r| matches!(r, Report::Ended(_))) {
            match reports.remove(i) {
                Report::Ended(h) => return *h,
                _ => unreachable!(),
            }
        }
    }
}

#[test]
fn bytes_pass_unchanged_both_ways_and_tracked_messages_are_reported() {
    let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
    let mut p = adopt(&engine, 7, &["StartTransaction"], [Vec::new(), Vec::new()]);
    let call = masked(r#"[2,"a1","StartTransaction",{"meterStart":0}]"#);
    let beat = masked(r#"[2,"h1","Heartbeat",{}]"#);
    p.charger
        .write_all(&[call.clone(), beat.clone()].concat())
        .unwrap();
    assert_eq!(
        read_exact(&mut p.upstream, call.len() + beat.len()),
        [call, beat].concat()
    );
    let answer = plain(r#"[3,"a1",{"transactionId":5}]"#);
    let beat_answer = plain(r#"[3,"h1",{}]"#);
    p.upstream.write_all(&beat_answer).unwrap();
    p.upstream.write_all(&answer).unwrap();
    assert_eq!(read_exact(&mut p.charger, beat_answer.len()), beat_answer);
    assert_eq!(read_exact(&mut p.charger, answer.len()), answer);

    let mut reports = Vec::new();
    let mut counters = [Counters::default(), Counters::default()];
    while reports.len() < 2 {
        next_reports(&engine, &mut reports, &mut counters);
    }
    let passed: Vec<(usize, Vec<u8>)> = reports
        .iter()
        .flat_map(|r| match r {
            Report::Passed {
                id, side, messages, ..
            } => {
                assert_eq!(*id, 7);
                messages
                    .iter()
                    .map(|m| (*side, m.data.clone()))
                    .collect::<Vec<_>>()
            }
            Report::Ended(_) => panic!("the link ended"),
        })
        .collect();
    assert_eq!(
        passed,
        vec![
            (
                CHARGER,
                br#"[2,"a1","StartTransaction",{"meterStart":0}]"#.to_vec()
            ),
            (UPSTREAM, br#"[3,"a1",{"transactionId":5}]"#.to_vec()),
        ]
    );
    assert_eq!(counters[CHARGER].calls.get("Heartbeat"), Some(&1));
    assert_eq!(counters[CHARGER].frames.get(&(ws::TEXT, CALL)), Some(&2));
    assert_eq!(
        counters[UPSTREAM].frames.get(&(ws::TEXT, CALLRESULT)),
        Some(&2)
    );

    engine.release(7);
    let back = handback(&engine);
    assert_eq!(back.why, Why::Released);
    assert!(back.pending.iter().all(Vec::is_empty));
    assert_eq!(back.last_call, None);
    assert!(back.readers.iter().all(FrameReader::at_message_boundary));
}

/// The messages of `Passed` reports, with their side, until `n` have come.
fn passed_messages(engine: &Engine, n: usize) -> Vec<(usize, Vec<u8>)> {
    let mut reports = Vec::new();
    let mut counters = [Counters::default(), Counters::default()];
    let mut passed = Vec::new();
    while passed.len() < n {
        next_reports(engine, &mut reports, &mut counters);
        for report in reports.drain(..) {
            if let Report::Passed { side, messages, .. } = report {
                passed.extend(messages.into_iter().map(|m| (side, m.data)));
            }
        }
    }
    passed
}

#[test]
fn copying_reports_every_charger_call_and_send_but_no_answers() {
    let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
    let mut p = adopt_copying(
        &engine,
        3,
        &["StartTransaction"],
        [Vec::new(), Vec::new()],
        true,
    );
    let texts = [
        r#"[2,"c1","Heartbeat",{}]"#,
        r#"[6,"s1","NotifyPeriodicEventStream",{}]"#,
        r#"[3,"u1",{}]"#, // the charger's answer to a back-office CALL: not a copy
        r#"[2,"c2","StartTransaction",{}]"#,
    ];
    let sent: Vec<u8> = texts.iter().flat_map(|t| masked(t)).collect();
    p.charger.write_all(&sent).unwrap();
    assert_eq!(read_exact(&mut p.upstream, sent.len()), sent);
    // answers: to an untracked CALL (not reported), to a tracked one (reported, as without copies)
    let answers = [plain(r#"[3,"c1",{}]"#), plain(r#"[3,"c2",{}]"#)].concat();
    p.upstream.write_all(&answers).unwrap();
    assert_eq!(read_exact(&mut p.charger, answers.len()), answers);
    let passed = passed_messages(&engine, 4);
    let expected: Vec<(usize, Vec<u8>)> = [
        (CHARGER, texts[0]),
        (CHARGER, texts[1]),
        (CHARGER, texts[3]),
        (UPSTREAM, r#"[3,"c2",{}]"#),
    ]
    .into_iter()
    .map(|(side, text)| (side, text.as_bytes().to_vec()))
    .collect();
    assert_eq!(passed, expected);
}

#[test]
fn without_copying_an_untracked_call_or_a_send_is_not_reported() {
    let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
    let mut p = adopt(&engine, 4, &["StartTransaction"], [Vec::new(), Vec::new()]);
    let texts = [
        r#"[2,"c1","Heartbeat",{}]"#,
        r#"[6,"s1","NotifyPeriodicEventStream",{}]"#,
        r#"[2,"c2","StartTransaction",{}]"#,
    ];
    let sent: Vec<u8> = texts.iter().flat_map(|t| masked(t)).collect();
    p.charger.write_all(&sent).unwrap();
    assert_eq!(read_exact(&mut p.upstream, sent.len()), sent);
    let passed = passed_messages(&engine, 1);
    assert_eq!(passed, vec![(CHARGER, texts[2].as_bytes().to_vec())]);
}

#[test]
fn a_close_frame_is_handed_back_unforwarded_with_the_reader_before_it() {
    let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
    let mut p = adopt(&engine, 1, &[], [Vec::new(), Vec::new()]);
    let call = masked(r#"[2,"b1","Heartbeat",{}]"#);
    p.charger.write_all(&call).unwrap();
    assert_eq!(read_exact(&mut p.upstream, call.len()), call);
    let close = crate::ws::encode_close(Some(1000), "bye", false).unwrap();
    let last = plain(r#"[3,"b1",{}]"#);
    p.upstream
        .write_all(&[last.clone(), close.clone()].concat())
        .unwrap();
    let back = handback(&engine);
    assert_eq!(back.why, Why::Message(UPSTREAM));
    assert_eq!(back.trailing[UPSTREAM], [last, close].concat());
    assert!(!back.readers[UPSTREAM].closed());
    assert_eq!(back.pending[CHARGER], vec!["b1".to_owned()]);
    assert_eq!(
        back.last_call.as_deref(),
        Some(&br#"[2,"b1","Heartbeat",{}]"#[..])
    );
}

#[test]
fn a_protocol_error_and_an_unmasked_client_frame_are_handed_back() {
    let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
    let mut p = adopt(&engine, 2, &[], [Vec::new(), Vec::new()]);
    let bad = plain(r#"[2,"x","Heartbeat",{}]"#); // a charger must mask
    p.charger.write_all(&bad).unwrap();
    let back = handback(&engine);
    assert_eq!(back.why, Why::Message(CHARGER));
    assert_eq!(back.trailing[CHARGER], bad);
    assert!(back.readers[CHARGER].error().is_none());
}

#[test]
fn end_of_file_is_handed_back_after_what_came_before_it() {
    let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
    let mut p = adopt(&engine, 3, &[], [Vec::new(), Vec::new()]);
    let call = masked(r#"[2,"c1","Heartbeat",{}]"#);
    p.charger.write_all(&call).unwrap();
    p.charger.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_exact(&mut p.upstream, call.len()), call);
    let back = handback(&engine);
    assert_eq!(back.why, Why::Eof(CHARGER));
}

#[test]
fn bytes_read_behind_the_handshakes_go_first() {
    let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
    let early = masked(r#"[2,"d1","BootNotification",{}]"#);
    let mut p = adopt(&engine, 4, &[], [early.clone(), Vec::new()]);
    let next = masked(r#"[2,"d2","Heartbeat",{}]"#);
    p.charger.write_all(&next).unwrap();
    assert_eq!(
        read_exact(&mut p.upstream, early.len() + next.len()),
        [early, next].concat()
    );
}

#[test]
fn a_slow_reader_pauses_its_writer_and_a_release_returns_what_was_not_written() {
    let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
    let mut p = adopt(&engine, 5, &[], [Vec::new(), Vec::new()]);
    // The upstream never reads: once its socket is full the engine holds one chunk and stops
    // reading the charger, whose own writes then block.
    p.charger.set_nonblocking(true).unwrap();
    let frame = masked(&format!(
        r#"[2,"e","DataTransfer",{{"data":"{}"}}]"#,
        "x".repeat(8_000)
    ));
    let mut sent = 0usize;
    let mut stalled = 0;
    while stalled < 50 {
        match p.charger.write(&frame[sent % frame.len()..]) {
            Ok(n) => {
                sent += n;
                stalled = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                stalled += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent > 0);
    engine.release(5);
    let back = handback(&engine);
    assert_eq!(back.why, Why::Released);
    assert!(!back.unsent[UPSTREAM].is_empty());
    // Everything is accounted for: delivered + held + still unread in the charger's socket.
    let mut delivered = 0;
    p.upstream.set_nonblocking(true).unwrap();
    let mut buf = vec![0; 1 << 16];
    while let Ok(n) = p.upstream.read(&mut buf) {
        if n == 0 {
            break;
        }
        delivered += n;
    }
    let mut unread = back.trailing[CHARGER].len();
    let mut end = &p._ends[CHARGER];
    while let Ok(n) = end.read(&mut buf) {
        if n == 0 {
            break;
        }
        unread += n;
    }
    assert_eq!(delivered + back.unsent[UPSTREAM].len() + unread, sent);
}

#[test]
fn a_dropped_engine_hands_every_link_back() {
    let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
    let _p = adopt(&engine, 6, &[], [Vec::new(), Vec::new()]);
    let shared = Arc::clone(&engine.shared);
    drop(engine);
    let reports = std::mem::take(&mut lock(&shared.outgoing).reports);
    assert!(matches!(&reports[..], [Report::Ended(h)] if h.id == 6 && h.why == Why::Released));
}

#[test]
fn a_panic_serving_one_link_hands_it_back_and_the_others_go_on() {
    let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
    let mut victim = adopt(&engine, 10, &[], [Vec::new(), Vec::new()]);
    let mut other = adopt(&engine, 11, &[], [Vec::new(), Vec::new()]);
    victim.charger.write_all(PANIC).unwrap();
    let back = handback(&engine);
    assert_eq!((back.id, back.why), (10, Why::Panicked));
    let call = masked(r#"[2,"p","Heartbeat",{}]"#);
    other.charger.write_all(&call).unwrap();
    assert_eq!(read_exact(&mut other.upstream, call.len()), call);
}

#[test]
fn a_large_message_dribbled_in_goes_back_before_it_is_copied_per_chunk() {
    let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
    let mut p = adopt(&engine, 12, &[], [Vec::new(), Vec::new()]);
    let big = masked(&format!(
        r#"[2,"g","DataTransfer",{{"data":"{}"}}]"#,
        "y".repeat(40_000)
    ));
    let mut sent = 0;
    let back = loop {
        let piece = &big[sent..sent + 1000];
        p.charger.write_all(piece).unwrap();
        sent += piece.len();
        // each piece is read (and forwarded) before the next is written
        assert_eq!(read_exact(&mut p.upstream, piece.len()), piece);
        if sent > MAX_COPIED {
            p.charger.write_all(&big[sent..sent + 1000]).unwrap();
            break handback(&engine);
        }
    };
    assert_eq!(back.why, Why::Large(CHARGER));
    assert_eq!(back.trailing[CHARGER], &big[sent..sent + 1000]);
    assert!(back.readers[CHARGER].buffered() > MAX_COPIED);
}

#[test]
fn a_link_offered_to_a_stopped_engine_comes_back_unserved() {
    let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
    lock(&engine.shared.commands).queue.push(Command::Stop);
    let _ = engine.waker.wake();
    while engine.running() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (a, _b) = UnixStream::pair().unwrap();
    let refused = engine.adopt(Adopt {
        id: 13,
        fds: [a.as_raw_fd(), a.as_raw_fd()],
        readers: [FrameReader::new(true, 10), FrameReader::new(false, 10)],
        trailing: [Vec::new(), Vec::new()],
        pending: [Vec::new(), Vec::new()],
        tracked: Arc::new(HashSet::new()),
        keep_last_call: false,
        copy_charger: false,
        activity: Arc::new(AtomicU64::new(0)),
    });
    assert!(matches!(refused, Err(a) if a.id == 13));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Whatever the chunking, both directions arrive byte for byte, in order.
    #[test]
    fn any_chunking_arrives_unchanged(
        texts in prop::collection::vec("[a-z]{0,300}", 1..20),
        cuts in prop::collection::vec(1usize..700, 1..20),
    ) {
        let engine = Engine::start(BOUNDS.to_vec(), PACING).unwrap();
        let mut p = adopt(&engine, 9, &[], [Vec::new(), Vec::new()]);
        let up: Vec<u8> = texts.iter().flat_map(|t| masked(&format!(r#"[2,"{t}","A",{{}}]"#))).collect();
        let down: Vec<u8> = texts.iter().flat_map(|t| plain(&format!(r#"[3,"{t}",{{}}]"#))).collect();
        let (mut at_up, mut at_down, mut i) = (0, 0, 0);
        while at_up < up.len() || at_down < down.len() {
            let n = cuts[i % cuts.len()];
            i += 1;
            let end = (at_up + n).min(up.len());
            p.charger.write_all(&up[at_up..end]).unwrap();
            at_up = end;
            let end = (at_down + n).min(down.len());
            p.upstream.write_all(&down[at_down..end]).unwrap();
            at_down = end;
        }
        prop_assert_eq!(read_exact(&mut p.upstream, up.len()), up);
        prop_assert_eq!(read_exact(&mut p.charger, down.len()), down);
    }
}

#[test]
fn reports_taken_are_signalled_again_only_after_the_window() {
    let paced = |window| Pacing {
        window,
        counts_every: NEVER,
    };
    for (window, signalled_again) in [(NEVER, false), (Duration::from_millis(20), true)] {
        let engine = Engine::start(BOUNDS.to_vec(), paced(window)).unwrap();
        let mut p = adopt(&engine, 1, &["StartTransaction"], [Vec::new(), Vec::new()]);
        let call = masked(r#"[2,"a1","StartTransaction",{"meterStart":0}]"#);
        p.charger.write_all(&call).unwrap();
        read_exact(&mut p.upstream, call.len());
        assert!(
            wait_signalled(&engine),
            "the first batch is signalled at once"
        );
        assert_eq!(engine.take().0.len(), 1);

        p.charger.write_all(&call).unwrap();
        read_exact(&mut p.upstream, call.len());
        if signalled_again {
            assert!(
                wait_signalled(&engine),
                "signalled once the window has passed"
            );
        } else {
            // Within the window: the report waits for the caller, unsignalled.
            std::thread::sleep(Duration::from_millis(50));
            assert!(!signalled(&engine));
        }
        assert_eq!(engine.take().0.len(), 1);
    }
}

#[test]
fn counters_alone_are_signalled_after_counts_every_and_never_within_it() {
    for (counts_every, expected) in [(NEVER, false), (Duration::from_millis(20), true)] {
        let engine = Engine::start(
            BOUNDS.to_vec(),
            Pacing {
                window: Duration::ZERO,
                counts_every,
            },
        )
        .unwrap();
        assert_eq!(engine.take().0.len(), 0); // the pause runs from a take
        let mut p = adopt(&engine, 1, &[], [Vec::new(), Vec::new()]);
        let beat = masked(r#"[2,"h1","Heartbeat",{}]"#);
        p.charger.write_all(&beat).unwrap();
        read_exact(&mut p.upstream, beat.len());
        if expected {
            assert!(wait_signalled(&engine));
        } else {
            std::thread::sleep(Duration::from_millis(50));
            assert!(!signalled(&engine));
        }
        let (reports, [charger, _]) = engine.take();
        assert!(reports.is_empty());
        assert_eq!(charger.bytes, beat.len() as u64);
    }
}

#[test]
fn links_handed_back_as_the_engine_stops_are_signalled_within_any_window() {
    let mut engine = Engine::start(
        BOUNDS.to_vec(),
        Pacing {
            window: NEVER,
            counts_every: NEVER,
        },
    )
    .unwrap();
    let _p = adopt(&engine, 1, &[], [Vec::new(), Vec::new()]);
    assert_eq!(engine.take().0.len(), 0);
    engine.join(); // the loop ends, as it would if it failed
    assert!(signalled(&engine), "the hand-back is signalled");
    let (reports, _) = engine.take();
    assert!(matches!(reports.as_slice(), [Report::Ended(h)] if h.why == Why::Released));
}

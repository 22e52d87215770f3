"""The mirrors' decisions without sockets or clocks: copies, blocking, serialisation, ids, queues."""

from __future__ import annotations

import json
import random

import orjson
import pytest

from proxy.forward.mirror_core import FrameSplitter, MirrorCore, MirrorPolicy
from proxy.wire.codec import TEXT, FrameReader, Message, encode_frame, text_message

TRIGGER = {"requestedMessage": "StatusNotification"}


def policy(**kwargs: object) -> MirrorPolicy:
    values: dict[str, object] = {
        "allow": frozenset({"TriggerMessage", "GetConfiguration"}),
        "queue": 10,
        "overflow": "drop_oldest",
        "call_timeout": 30.0,
    }
    values.update(kwargs)
    return MirrorPolicy(**values)  # type: ignore[arg-type]


def core(*policies: MirrorPolicy) -> MirrorCore:
    return MirrorCore(list(policies or [policy()]), "mirror-test-")


def msg(*frame: object) -> Message:
    return text_message(json.dumps(list(frame)).encode())


def replies(c: MirrorCore, index: int = 0) -> list[list[object]]:
    return [orjson.loads(text) for text in c.queues[index].replies]


def send_out(c: MirrorCore) -> str:
    call = c.next_call()
    assert call is not None
    return call.charger_id


def test_every_charger_call_and_send_is_copied_as_received_and_answers_are_not() -> None:
    c = core(policy(), policy())
    call = b'[2, "1", "Heartbeat", {}]'
    send = b'[6,"2","NotifyPeriodicEventStream",{"id":1}]'
    for text in (call, send):
        verdict = c.from_charger(text_message(text))
        assert verdict.forward and verdict.queued == (0, 1) and verdict.dropped == ()
    assert c.from_charger(msg(3, "9", {})).forward
    for queue in c.queues:
        assert list(queue.copies) == [call, send]


def test_a_mirror_call_outside_the_allow_list_is_answered_by_the_proxy_and_never_sent() -> None:
    c = core()
    outcome = c.from_mirror(0, msg(2, "m1", "RemoteStartTransaction", {"idTag": "X"}), 0.0)
    assert outcome.kind == "blocked"
    assert replies(c) == [
        [4, "m1", "SecurityError", "RemoteStartTransaction from a mirror is not allowed", {}]
    ]
    assert c.next_call() is None


def test_a_mirror_send_is_blocked_without_an_answer() -> None:
    c = core()
    assert c.from_mirror(0, msg(6, "m1", "NotifyX", {}), 0.0).kind == "blocked"
    assert replies(c) == [] and c.next_call() is None


def test_an_allowed_call_goes_out_under_our_id_and_its_answer_back_under_the_mirrors() -> None:
    c = core()
    text = b'[2,"m1","TriggerMessage",{"requestedMessage": "StatusNotification"}]'
    assert c.from_mirror(0, text_message(text), 0.0).kind == "allowed"
    call = c.next_call()
    assert call is not None and call.charger_id.startswith("mirror-test-")
    sent = orjson.loads(call.text)
    assert sent == [2, call.charger_id, "TriggerMessage", TRIGGER]
    assert b'{"requestedMessage": "StatusNotification"}' in call.text  # the payload as sent
    verdict = c.from_charger(msg(3, call.charger_id, {"status": "Accepted"}))
    assert not verdict.forward and verdict.answered_mirror == 0
    assert replies(c) == [[3, "m1", {"status": "Accepted"}]]
    assert not c.primary_must_wait()


def test_a_mirror_call_waits_while_a_primary_call_is_unanswered() -> None:
    c = core()
    c.primary_sent(msg(2, "p1", "Reset", {"type": "Soft"}))
    c.from_mirror(0, msg(2, "m1", "TriggerMessage", TRIGGER), 0.0)
    assert c.next_call() is None
    assert c.from_charger(msg(3, "p1", {"status": "Accepted"})).forward
    assert c.next_call() is not None


def test_a_primary_call_waits_while_a_mirror_call_is_out() -> None:
    c = core()
    assert not c.primary_must_wait()
    c.from_mirror(0, msg(2, "m1", "TriggerMessage", TRIGGER), 0.0)
    assert not c.primary_must_wait()  # waiting, not out
    charger_id = send_out(c)
    assert c.primary_must_wait()
    c.from_charger(msg(4, charger_id, "NotImplemented", "", {}))
    assert not c.primary_must_wait()
    assert replies(c) == [[4, "m1", "NotImplemented", "", {}]]


def test_ids_that_collide_with_the_primarys_or_another_mirrors_reach_their_own_sender() -> None:
    c = core(policy(), policy())
    c.primary_sent(msg(2, "42", "GetConfiguration", {}))
    c.from_mirror(0, msg(2, "42", "GetConfiguration", {}), 0.0)
    c.from_mirror(1, msg(2, "42", "GetConfiguration", {}), 0.0)
    # the charger answers the primary's "42": the primary's, not a mirror's
    assert c.from_charger(msg(3, "42", {"configurationKey": []})).forward
    first = send_out(c)
    assert first != "42"
    assert not c.from_charger(msg(3, first, {"a": 0})).forward
    second = send_out(c)
    assert second not in ("42", first)
    assert not c.from_charger(msg(3, second, {"a": 1})).forward
    assert replies(c, 0) == [[3, "42", {"a": 0}]]
    assert replies(c, 1) == [[3, "42", {"a": 1}]]


def test_a_mirror_has_one_call_in_progress_at_a_time() -> None:
    c = core()
    assert c.from_mirror(0, msg(2, "m1", "TriggerMessage", TRIGGER), 0.0).kind == "allowed"
    assert c.from_mirror(0, msg(2, "m2", "TriggerMessage", TRIGGER), 0.0).kind == "busy"
    assert replies(c)[0][:3] == [4, "m2", "GenericError"]
    send_out(c)
    assert c.from_mirror(0, msg(2, "m3", "TriggerMessage", TRIGGER), 0.0).kind == "busy"


def test_a_call_out_too_long_is_answered_by_the_proxy_and_its_late_answer_dropped() -> None:
    c = core(policy(call_timeout=5.0))
    c.from_mirror(0, msg(2, "m1", "TriggerMessage", TRIGGER), 100.0)
    charger_id = send_out(c)
    assert c.next_deadline() == 105.0
    assert c.expire(104.9) == []
    assert c.expire(105.0) == [0]
    assert replies(c) == [[4, "m1", "GenericError", "the charger did not answer in time", {}]]
    assert not c.primary_must_wait() and c.next_deadline() == float("inf")
    late = c.from_charger(msg(3, charger_id, {"status": "Accepted"}))
    assert not late.forward and late.answered_mirror is None
    assert len(replies(c)) == 1


def test_a_call_that_waits_too_long_for_the_charger_times_out_unsent() -> None:
    c = core(policy(call_timeout=5.0))
    c.primary_sent(msg(2, "p1", "Reset", {"type": "Soft"}))
    c.from_mirror(0, msg(2, "m1", "TriggerMessage", TRIGGER), 0.0)
    assert c.expire(5.0) == [0]
    c.from_charger(msg(3, "p1", {}))
    assert c.next_call() is None


def test_a_primary_id_equal_to_a_timed_out_mirror_id_is_the_primarys() -> None:
    c = core(policy(call_timeout=1.0))
    c.from_mirror(0, msg(2, "m1", "TriggerMessage", TRIGGER), 0.0)
    charger_id = send_out(c)
    c.expire(1.0)
    c.primary_sent(msg(2, charger_id, "Reset", {"type": "Soft"}))
    assert c.from_charger(msg(3, charger_id, {})).forward


@pytest.mark.parametrize(
    ("overflow", "kept"), [("drop_oldest", [b"2", b"3"]), ("pause", [b"0", b"1"])]
)
def test_a_full_queue_drops_by_its_overflow_mode(overflow: str, kept: list[bytes]) -> None:
    c = core(policy(queue=2, overflow=overflow))
    verdicts = [c.from_charger(msg(2, str(i), "Heartbeat", {})) for i in range(4)]
    assert [v.dropped for v in verdicts] == [(), (), (0,), (0,)]
    assert all(v.forward for v in verdicts)
    assert [orjson.loads(t)[1].encode() for t in c.queues[0].copies] == kept
    assert len(c.queues[0].take(1)) == 1
    assert c.from_charger(msg(2, "4", "Heartbeat", {})).dropped == ()


def test_answers_to_copies_and_garbage_from_a_mirror_are_only_reported() -> None:
    c = core()
    assert c.from_mirror(0, msg(3, "1", {}), 0.0).kind == "answer_dropped"
    for text in (b"not json", b'{"a": 1}', b"[2]", b'[2,"x","TriggerMessage",[]]', b"[9,1]"):
        assert c.from_mirror(0, text_message(text), 0.0).kind == "invalid"
    assert replies(c) == [] and c.next_call() is None


def test_the_proxys_answers_go_to_a_mirror_before_the_copies() -> None:
    c = core()
    c.from_charger(msg(2, "1", "Heartbeat", {}))
    c.from_mirror(0, msg(2, "m1", "Reset", {}), 0.0)
    c.from_charger(msg(2, "2", "Heartbeat", {}))
    taken = [orjson.loads(t)[1] for t in c.queues[0].take(2)]
    assert taken == ["m1", "1"]
    assert [orjson.loads(t)[1] for t in c.queues[0].take(10)] == ["2"]
    assert c.queues[0].take(10) == []


def test_a_mirror_that_floods_blocked_calls_gets_a_bounded_number_of_answers() -> None:
    c = core()
    kinds = {c.from_mirror(0, msg(2, str(i), "Reset", {}), 0.0).kind for i in range(100)}
    assert kinds == {"blocked", "reply_dropped"}
    assert len(c.queues[0].replies) == 16


def test_a_lost_mirror_forgets_its_waiting_call_and_answers() -> None:
    c = core()
    c.from_mirror(0, msg(2, "m1", "Reset", {}), 0.0)
    c.primary_sent(msg(2, "p1", "Reset", {"type": "Soft"}))
    c.from_mirror(0, msg(2, "m2", "TriggerMessage", TRIGGER), 0.0)
    assert c.mirror_lost(0) == 1
    c.from_charger(msg(3, "p1", {}))
    assert c.next_call() is None and len(c.queues[0]) == 0


def test_the_splitter_gives_whole_frames_as_received_wherever_the_stream_is_cut() -> None:
    rng = random.Random(7)
    frames = [
        encode_frame(TEXT, b"x" * size, mask=True, fin=True) for size in (0, 1, 125, 126, 70000)
    ]
    stream = b"".join(frames)
    for _ in range(20):
        splitter = FrameSplitter(1 << 20)
        cuts = sorted(rng.sample(range(1, len(stream)), 8))
        got = []
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            got += splitter.feed(stream[start:end])
        assert got == frames
    reader = FrameReader(from_client=True)
    assert [m.data for m in reader.feed(got[3])] == [b"x" * 126]


def test_the_splitter_gives_up_on_a_frame_beyond_its_limit() -> None:
    splitter = FrameSplitter(100)
    head = encode_frame(TEXT, b"y" * 1000, mask=True)[:20]
    assert splitter.feed(head) == [head]
    assert splitter.broken
    assert splitter.feed(b"more") == [b"more"]
    splitter = FrameSplitter(100)
    frame = encode_frame(TEXT, b"z" * 10, mask=True)
    assert splitter.feed(frame + frame[:3]) == [frame]
    assert splitter.give_up() == frame[:3]
    assert splitter.feed(b"raw") == [b"raw"]

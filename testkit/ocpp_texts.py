"""OCPP-J texts as Hypothesis strategies, for the codec's tests: well-formed frames (with every
escaping, whitespace and lone surrogates), near misses, and short texts over the JSON alphabet.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Strings with the characters JSON handles specially, astral characters and lone surrogates
# (which json.dumps writes as \uXXXX escapes).
special_chars = st.sampled_from(list('"\\/\b\f\n\r\t\x00\x1f\x7f'))
json_chars = st.one_of(
    st.characters(codec="utf-8"),
    special_chars,
    st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
)
json_strings = st.one_of(st.text(max_size=8), st.text(json_chars, max_size=8))

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        json_strings,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(json_strings, children, max_size=4),
    ),
    max_leaves=10,
)


def to_json(draw: Any, value: Any) -> str:
    """Serialise with randomly chosen escaping and whitespace."""
    ensure_ascii = draw(st.booleans())
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", " :\n")]))
    indent = draw(st.sampled_from([None, None, 1, "\t"]))
    text = json.dumps(value, ensure_ascii=ensure_ascii, separators=separators, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate written raw: escape it instead
        text = json.dumps(value, ensure_ascii=True, separators=separators, indent=indent)
    return text


whitespace = st.text(st.sampled_from(" \t\r\n"), max_size=3)


@st.composite
def ocpp_texts(draw: Any) -> str:
    """A well-formed OCPP-J frame (its strings may still hold lone surrogates)."""
    message_type = draw(st.sampled_from([2, 3, 4]))
    elements: list[Any] = [message_type, draw(json_strings)]
    if message_type == 2:
        elements.append(draw(st.sampled_from(["BootNotification", "Heartbeat"]) | json_strings))
    elif message_type == 4:
        elements += [draw(json_strings), draw(json_strings)]
    elements.append(draw(json_values))
    parts = [to_json(draw, e) for e in elements]
    inner = ",".join(draw(whitespace) + p + draw(whitespace) for p in parts)
    text: str = draw(whitespace) + "[" + inner + "]" + draw(whitespace)
    return text


@st.composite
def near_ocpp_texts(draw: Any) -> str:
    """Texts that look like OCPP-J frames but may break it in one of many small ways."""
    first = draw(
        st.sampled_from(["2", "3", "4", "2.0", "02", '"2"', "-2", "5", "2e0", "1", "null"])
    )
    element = st.one_of(json_strings.map(json.dumps), json_values.map(json.dumps))
    rest = draw(st.lists(element, max_size=6))
    depth = draw(st.sampled_from([0, 0, 62, 63, 64, 65]))
    if depth:
        rest.append("[" * depth + "]" * depth)
    text = "[" + ",".join([first, *rest]) + "]"
    for _ in range(draw(st.integers(0, 2))):
        position = draw(st.integers(0, len(text)))
        mutation = draw(st.sampled_from(["insert", "delete", "truncate"]))
        if mutation == "insert":
            inserted = draw(st.sampled_from(list('[]{}",:\\ u0eE.-+\x0bNaN')))
            text = text[:position] + inserted + text[position:]
        elif mutation == "delete":
            text = text[:position] + text[position + 1 :]
        else:
            text = text[:position]
    return text


# Short texts over the JSON alphabet hit grammar corner cases far more often than random text.
grammar_texts = st.text(
    st.sampled_from(list('[]{}",:\\/ \t\nu0123456789abcdefEtrulsn.+-')), max_size=40
)

any_texts = st.one_of(ocpp_texts(), near_ocpp_texts(), grammar_texts, st.text(max_size=30))


def encode_text(text: str) -> bytes:
    # A raw lone surrogate can only reach the wire as invalid UTF-8 (CESU-style bytes).
    return text.encode("utf-8", "surrogatepass")

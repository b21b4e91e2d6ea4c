"""The expression builder (idios.expr): filter and literal outputs, refused keys and values."""

from __future__ import annotations

import json
import math

import pytest

from idios import expr
from idios.errors import Invalid

# expressions

TRICKY = [
    "",
    'a"b',
    "a'b",
    "a\\b",
    '\\"',
    '" or url != "',
    "line\nbreak\r\n",
    "tab\t",
    "caf\u00e9 \u732b \U0001f600",
    "\x00\x01\x1f\x7f",
    "%22%5C",
    "\\u0041",
    "\u2028\u2029\ufeff",
    "}{][)(",
]


def test_expression_outputs() -> None:
    assert expr.url_equals("https://x.test/a.jpg") == 'url == "https://x.test/a.jpg"'
    assert expr.url_in(["a", "b"]) == 'url in ["a", "b"]'
    assert expr.url_in([]) == "url in []"
    assert expr.url_after(None) == 'url != ""'
    assert expr.url_after("") == 'url != ""'
    assert expr.url_after("m") == 'url > "m"'
    assert expr.url_equals('a"b') == 'url == "a\\"b"'
    assert expr.metadata_filter(None) == ""
    assert expr.metadata_filter({}) == ""
    assert expr.metadata_filter({"tags": "letter"}) == 'metadata["tags"] == "letter"'
    assert (
        expr.metadata_filter({"n": 3, "ok": True, "no": False, "f": 1.5, "s": "x"})
        == 'metadata["n"] == 3 and metadata["ok"] == true and metadata["no"] == false and metadata["f"] == 1.5'
        ' and metadata["s"] == "x"'
    )
    assert expr.scalar_literal(-7) == "-7"
    assert expr.scalar_literal(1e-30) == "1e-30"


@pytest.mark.parametrize("bad", [{"": 1}, {1: 1}, {"k": [1]}, {"k": None}, {"k": {"a": 1}}, {"k": math.nan}])
def test_metadata_filter_rejects(bad: dict) -> None:
    with pytest.raises(Invalid) as caught:
        expr.metadata_filter(bad)
    assert caught.value.type == "bad_filter"


@pytest.mark.parametrize("text", TRICKY)
def test_string_literal_is_a_json_string(text: str) -> None:
    literal = expr.string_literal(text)
    assert literal.startswith('"') and literal.endswith('"')
    assert json.loads(literal) == text
    # No raw quote, backslash or line break can end the literal early.
    inner = literal[1:-1]
    assert "\n" not in inner and "\r" not in inner
    assert all(inner[i - 1] == "\\" for i, ch in enumerate(inner) if ch == '"')


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\udc80"])
def test_lone_surrogates_are_refused(text: str) -> None:
    for build in (expr.string_literal, expr.url_equals, lambda t: expr.url_in(["ok", t]), expr.url_after):
        with pytest.raises(Invalid) as caught:
            build(text)
        assert caught.value.type == "bad_text"
    with pytest.raises(Invalid):
        expr.metadata_filter({text: "v"})
    with pytest.raises(Invalid):
        expr.metadata_filter({"k": text})

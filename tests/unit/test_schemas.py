"""The API's request schemas: the metadata size limit decides as the exact JSON measure does."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _JSON_VALUES, max_size=6))
def test_metadata_limit_takes_the_same_decisions_as_measuring_json_dumps(value: dict) -> None:
    """The metadata limit skips the exact (slow) measure for small metadata: with a limit small
    enough that generated values land on both sides, every decision is the exact measure's."""
    from unittest import mock

    from idios.api import schemas

    limit = 48
    try:
        exact = len(json.dumps(value, ensure_ascii=False).encode("utf-8")) <= limit
    except (ValueError, UnicodeEncodeError):
        exact = False
    with mock.patch.object(schemas, "METADATA_MAX_BYTES", limit):
        try:
            accepted = schemas._metadata(value) is value
        except ValueError:
            accepted = False
    assert accepted == exact, value

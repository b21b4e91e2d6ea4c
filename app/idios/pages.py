"""Pages of urls and rows sized to fit in one broker message.

A worker's answer travels as one message, and RabbitMQ refuses messages over its
`max_message_size` (16 MiB by default in RabbitMQ 4): 12,000 vit_b32 rows are 33 MB, 10,000 urls
of 2,083 characters 20 MB. A page therefore holds as many of the rows asked for as fit in a byte
budget below `max_message_bytes`, and a caller continues after the last url it was given: a page
shorter than asked is not the end (an empty page is).

Sizes are counted as the envelope will encode them (`idios.transport.queues.encode`), so a reply
is under the budget whichever transport carries it. At least one row is always answered: the
largest row (a 2,083-character url, 65,535 bytes of metadata, 2,048 floats) is far below any budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:  # the API imports this module for `last_url`; it needs no Milvus client
    from idios.specs import ModelSpec
    from idios.store import Columns

# What a message holds besides the page: the envelope (`{"ok":true,"raw":true,"value":...}`), AMQP's
# frame headers and properties (a correlation id, a reply queue name): a few hundred bytes; the rest
# of the margin is room for whatever a broker or a later envelope adds.
MARGIN_FRACTION = 16
MIN_MARGIN = 64 * 1024
# The envelope around a page's value, counted against the page's limit: `{"ok":true,"raw":true,"value":`
# and `}` (32 bytes) or `{"ok":true,"value":` and `}` (20 bytes).
ENVELOPE = 64


def budget(max_message_bytes: int) -> int:
    """Bytes the message holding a page may take: `max_message_bytes` less a sixteenth (1 MiB of 16 MiB)."""
    return max_message_bytes - max(MIN_MARGIN, max_message_bytes // MARGIN_FRACTION)


# A row's JSON besides its embedding, in the common case (a url and a little metadata).
ROW_BYTES = 256


def rows_that_fit(spec: ModelSpec, limit: int) -> int:
    """About how many common rows fit in an answer of `limit` bytes: a page need not read more
    from the store (rows with much metadata are cut by their size anyway)."""
    return max(1, limit // (ROW_BYTES + spec.public_bytes))


def _rows(spec: ModelSpec, columns: Columns) -> Iterable[dict]:
    for url, vector, metadata in zip(columns.urls, columns.vectors, columns.metadata, strict=True):
        yield {"url": url, "metadata": metadata, "embedding": spec.to_public(vector)}


def json_rows(spec: ModelSpec, columns: Columns, limit: int) -> bytes:
    """The rows as one JSON array (what `POST /dump` answers), as many from the first as fit in an
    answer of `limit` bytes, at least one."""
    parts: list[bytes] = []
    size = ENVELOPE + 2  # [ and ]
    for row in _rows(spec, columns):
        part = orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)
        size += len(part) + (1 if parts else 0)
        if parts and size > limit:
            break
        parts.append(part)
    return b"[" + b",".join(parts) + b"]"


def json_lines(spec: ModelSpec, columns: Columns, limit: int) -> str:
    """The rows as JSON Lines text (a streamed dump's range), as many from the first as fit in an
    answer of `limit` bytes, where the text is itself encoded as a JSON string, at least one."""
    parts: list[bytes] = []  # four per line
    size = ENVELOPE + 2  # the string's quotes
    for url, vector, metadata in zip(columns.urls, columns.vectors, columns.metadata, strict=True):
        # The line orjson writes for {"url", "metadata", "embedding"}, written in parts: as a JSON
        # string each '"' and '\' of it gains a backslash (and the newline becomes '\n'; orjson has
        # escaped every other character JSON strings escape), and only the first part can hold any
        # but the key's two quotes. Counting them in the whole line would read the embedding's
        # floats again, a fifth of the encoding's time.
        head = orjson.dumps({"url": url, "metadata": metadata})
        public = spec.to_public(vector)
        embedding = orjson.dumps(public, option=orjson.OPT_SERIALIZE_NUMPY)
        quotes = 2 if isinstance(public, str) else 0  # a keypoints embedding is a base64 string
        size += len(head) + len(embedding) + 14 + head.count(b'"') + head.count(b"\\") + quotes + 2 + 1
        if parts and size > limit:
            break
        parts += (head[:-1], b',"embedding":', embedding, b"}\n")  # len(head) - 1 + 13 + len(embedding) + 2
    return b"".join(parts).decode()


def urls(values: list[str], limit: int) -> list[str]:
    """As many urls from the first as fit in an answer of `limit` bytes (a JSON array), at least one."""
    size = ENVELOPE + 2
    for count, url in enumerate(values):
        size += len(orjson.dumps(url)) + (1 if count else 0)
        if count and size > limit:
            return values[:count]
    return values


def last_url(lines: str) -> str | None:
    """The url of the last row of JSON Lines text; None for no rows."""
    end = lines.rstrip("\n")
    if not end:
        return None
    return orjson.loads(end[end.rfind("\n") + 1 :])["url"]

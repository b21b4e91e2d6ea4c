"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from idios import expr
from idios.errors import IdiosError
from idios.limits import METADATA_MAX_BYTES, URL_MAX_CHARS
from idios.netguard import validate_url

MAX_LIMIT = 1000
MAX_OFFSET = 10000
MAX_PAGE = 10000


def _url(value: str) -> str:
    try:
        return validate_url(value)
    except IdiosError as exc:
        raise ValueError(exc.msg) from None


# Metadata travels inside jobs and answers (a restore job's list of metadata, a search answer's hits),
# which orjson writes: it writes 254 levels of objects and arrays at most, and no integer beyond 64
# bits. Metadata must fit there with this many levels around it.
ORJSON_LEVELS = 254
ENCLOSING_LEVELS = 4


def _metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    enclosed: Any = value
    for _ in range(ENCLOSING_LEVELS):
        enclosed = [enclosed]
    try:
        written = orjson.dumps(enclosed)
    except orjson.JSONEncodeError:
        raise ValueError(
            f"metadata may nest at most {ORJSON_LEVELS - ENCLOSING_LEVELS} levels deep "
            "and hold integers of 64 bits at most"
        ) from None
    # The body parsers read NaN and Infinity, which orjson writes as null: refused, not altered.
    if b"null" in written and _holds_non_finite(value):
        raise ValueError("metadata numbers must be finite: JSON has no NaN or Infinity")
    compact = len(written) - 2 * ENCLOSING_LEVELS
    # json.dumps is slow (a fifth of a restore's cost on the API). Its separators (", ", ": ") and
    # exponents ("1e+100") add at most one byte per byte of orjson's compact form, so metadata whose
    # compact form is under half the limit needs no exact measure; the rest gets it.
    if 2 * compact <= METADATA_MAX_BYTES:
        return value
    try:
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    except (RecursionError, ValueError, TypeError, UnicodeEncodeError):
        raise ValueError("metadata must be a JSON object that can be serialised") from None
    if size > METADATA_MAX_BYTES:
        raise ValueError(f"metadata is {size} bytes once serialised (UTF-8); the limit is {METADATA_MAX_BYTES}")
    return value


def _holds_non_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


Url = Annotated[
    str, Field(min_length=1, max_length=URL_MAX_CHARS, examples=["https://example.com/cat.jpg"]), AfterValidator(_url)
]
Metadata = Annotated[dict[str, Any] | None, AfterValidator(_metadata)]
Cursor = Annotated[str | None, Field(max_length=URL_MAX_CHARS, description="Answer urls strictly after this one.")]
FilterValue = str | int | float | bool


def _filter(value: dict[str, FilterValue] | None) -> dict[str, FilterValue] | None:
    """Refused here as the store would refuse it (keys it cannot match, integers beyond int64)."""
    try:
        expr.metadata_filter(value)
    except IdiosError as exc:
        raise ValueError(exc.msg) from None
    return value


Filter = Annotated[dict[str, FilterValue] | None, AfterValidator(_filter)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddRequest(Strict):
    url: Url
    metadata: Metadata = Field(None, description="Any JSON object, up to 65,535 bytes serialised (UTF-8).")


class RestoreRow(Strict):
    url: Url
    metadata: Metadata = None
    embedding: list[float] | str = Field(
        description="The stored vector: floats, 0/1 bits for phash, or a base64 string of keypoints for copydetect."
    )


class BulkFailure(BaseModel):
    url: str
    error: str


class BulkResult(BaseModel):
    added: list[str]
    found: list[str] = Field(description="Urls already stored; left unchanged.")
    failed: list[BulkFailure]


FLIP = "Also search (compare) the mirrored image; a hit found that way says `flipped`."


class SearchOptions(Strict):
    limit: int = Field(10, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    min_similarity: float = Field(0.0, ge=0, le=100)
    filter: Filter = Field(
        None, description='Metadata equalities, e.g. {"tags": "letter"}.', examples=[{"tags": "letter"}]
    )
    flip: bool = Field(False, description=FLIP)


class SearchRequest(SearchOptions):
    url: Url | None = None
    text: str | None = Field(None, min_length=1, max_length=1000)
    image: str | None = Field(None, description="Image bytes, base64.")

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = [name for name in ("url", "text", "image") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of url, text or image")
        return self


Box = Annotated[list[float], Field(min_length=4, max_length=4, description="x0, y0, x1, y1: fractions of the image.")]


class MatchInfo(BaseModel):
    """Where two images show the same picture (copydetect)."""

    query_box: Box = Field(description="The shared region in the query (the first image), x0, y0, x1, y1.")
    target_box: Box = Field(description="The shared region in the hit (the second image), x0, y0, x1, y1.")
    query_overlap: float = Field(description="The share of the query's area the shared region covers, 0-1.")
    target_overlap: float = Field(description="The share of the hit's area the shared region covers, 0-1.")
    inliers: int = Field(description="Corners whose pairs agree on the placement.")


class SearchHit(BaseModel):
    url: str
    metadata: dict[str, Any]
    similarity: float = Field(description="0-100, 100 a perfect match.")
    flipped: bool = Field(False, description="Found by the mirrored query (`flip`).")
    match: MatchInfo | None = Field(None, description="Where the query matches the hit (copydetect).")


class QueryError(BaseModel):
    status: int = Field(description="The HTTP status this query alone would have been answered with.")
    type: str
    msg: str


class BulkSearchAnswer(BaseModel):
    """One query's answer in a search_bulk: its hits, or its error."""

    hits: list[SearchHit] | None = None
    error: QueryError | None = None


class CompareRequest(Strict):
    """Each side is a url or an image sent as base64."""

    url: Url | None = None
    other: Url | None = None
    image: str | None = Field(None, description="The first image's bytes, base64, instead of `url`.")
    other_image: str | None = Field(None, description="The second image's bytes, base64, instead of `other`.")
    flip: bool = Field(False, description="Also compare the first image mirrored; the better counts.")
    details: bool = Field(False, description="Answer {similarity, match, flipped} instead of the similarity alone.")

    @model_validator(mode="after")
    def _two_images(self) -> CompareRequest:
        for first, second in (("url", "image"), ("other", "other_image")):
            if (getattr(self, first) is None) == (getattr(self, second) is None):
                raise ValueError(f"give exactly one of {first} or {second}")
        return self


class Comparison(BaseModel):
    similarity: float = Field(description="0-100, 100 a perfect match.")
    match: MatchInfo | None = Field(None, description="Where the images match (copydetect).")
    flipped: bool = Field(False, description="The first image matched best mirrored (`flip`).")


class PageRequest(Strict):
    cursor: Cursor = None
    limit: int = Field(1000, ge=1, le=MAX_PAGE)


class DuplicatesRequest(Strict):
    cursor: Cursor = None
    limit: int = Field(100, ge=1, le=MAX_LIMIT, description="Stored urls examined by this page.")
    min_similarity: float | None = Field(
        None, ge=0, le=100, description="Similarity from which two images are copies; default: the model's own."
    )
    max_group: int = Field(20, ge=2, le=100, description="Most urls in one group.")


class DuplicateGroup(BaseModel):
    urls: list[str] = Field(description="Copies of each other, in url order; the first is where the walk found them.")
    similarity: list[list[float]] = Field(description="The similarity of urls[i] and urls[j], 0-100.")


class DuplicatesPage(BaseModel):
    groups: list[DuplicateGroup]
    cursor: str | None = Field(description="The last url examined: the next page's cursor. null: the walk is done.")
    examined: int = Field(description="Stored urls this page examined.")


class DumpRow(BaseModel):
    url: str
    metadata: dict[str, Any]
    embedding: list[float] | str


class RemoveRequest(Strict):
    url: str = Field(min_length=1, max_length=URL_MAX_CHARS)


class ModelInfo(BaseModel):
    name: str
    dimension: int
    metric: str
    text: bool = Field(description="Whether the model can be searched by text.")
    description: str
    status: str = Field(description="ready, loading or unavailable")
    reason: str = ""


class ErrorItem(BaseModel):
    msg: str = Field(description="What went wrong, for a person.")
    type: str = Field(description="What went wrong, for a program.")


class ErrorBody(BaseModel):
    detail: list[ErrorItem]

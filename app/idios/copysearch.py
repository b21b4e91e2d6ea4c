"""Copy detection's search (doc/copydetect.md): the query's corners find their nearest stored corners
in Milvus, the images those belong to are ranked by how many query corners found one of theirs and
by how many of those pairs agree on a placement, and the best candidates are checked against all
their corners (`keypoints.best_match`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from idios import keypoint_data, keypoints
from idios.corner_store import Neighbours
from idios.keypoint_data import Keypoints, Match
from idios.specs import ModelSpec
from idios.store import Store

# The first corners of each analysis of the query (a spread subset: `keypoints._spread`) vote, so
# many of each by how many analyses the query has (`keypoints.QUERY_ANALYSES`, smallest first: a
# small crop has only the smallest, whose corners all vote; a stored image's one analysis is at 512).
# Each finds its nearest stored corners within VOTE_DISTANCE bits of 256 (unrelated ORB descriptors
# differ in about 128), probing PROBES lists of the inverted file. Milvus's time follows the count
# of voters. All the query's corners take part in the check of the candidates.
VOTERS: dict[int, tuple[int, ...]] = {1: (192,), 2: (96, 96), 3: (48, 64, 96)}
NEIGHBOURS = 4
PROBES = 2
VOTE_DISTANCE = 64
# Candidates whose voting pairs are tried for a placement, best voted first, each analysis with up
# to PLACEMENT_ATTEMPTS samples of RANSAC: the original of a copy ranks among the first few, and its
# pairs mostly agree (a few dozen samples find the placement). The 2,000 of the check would cost
# the pairs of the unrelated candidates, which agree on nothing, 0.3 ms each.
PLACED = 48
PLACEMENT_ATTEMPTS = 200
# Candidates checked against all their corners (each check reads 256 corners from Milvus and takes
# a few milliseconds): those whose voting pairs agree on a placement, as many as the search asks for
# and at most MAX_CHECKED, and the best voted of the others up to MIN_CHECKED in all (the placement
# of the voting pairs alone can miss a copy whose corners Milvus's probes missed).
MIN_CHECKED = 2
MAX_CHECKED = 100
# A picture stored under many urls has the same corners under each: the vote's nearest corners are a
# few of them, always the same few. Every url with the keypoints of a hit is a hit too (`Store.twins`).


@dataclass(frozen=True)
class CopyHit:
    url: str
    metadata: dict[str, Any]
    match: Match


def search(store: Store, spec: ModelSpec, query: list[Keypoints], *, count: int, filter: str = "") -> list[CopyHit]:
    """Up to `count` stored images sharing a picture with the query (its analyses), most agreeing
    pairs first; those whose metadata fails `filter` are left out."""
    counts = VOTERS.get(len(query), VOTERS[max(VOTERS)])
    voters = [_voters(analysis, count) for analysis, count in zip(query, counts, strict=False)]
    if not any(len(analysis) for analysis in voters):
        return []
    descriptors = np.concatenate([analysis.descriptors for analysis in voters])
    near = store.nearest_corners(spec, descriptors, neighbours=NEIGHBOURS, probes=PROBES, within=VOTE_DISTANCE)
    ranked = checked(rank(voters, near), count)
    found = store.candidates(spec, ranked, filter)
    hits: list[CopyHit] = []
    matches: dict[int, Match] = {}  # the first match of each fingerprint
    for image in ranked:
        if image in found:
            row, target = found[image]
            match = keypoints.best_match(query, target)
            if match is not None:
                hits.append(CopyHit(url=row.url, metadata=row.metadata, match=match))
                matches.setdefault(row.fingerprint, match)
    seen = {hit.url for hit in hits}
    for twin in store.twins(spec, list(matches), count + len(hits), filter):
        if twin.url not in seen:
            hits.append(CopyHit(url=twin.url, metadata=twin.metadata, match=matches[twin.fingerprint]))
            seen.add(twin.url)
    hits.sort(key=lambda hit: (-hit.match.inliers, hit.url))
    return hits[:count]


def _voters(analysis: Keypoints, count: int) -> Keypoints:
    return Keypoints(analysis.points[:count], analysis.descriptors[:count], analysis.width, analysis.height)


def rank(query: list[Keypoints], near: Neighbours) -> list[tuple[int, int]]:
    """Candidate images with how many of their voting pairs agree on a placement (of the `PLACED`
    images most voted for; 0 for the others), best first: by those pairs, then by votes (query
    corners that found one of the image's corners)."""
    if not len(near.image):
        return []
    images, votes = _votes(near)
    order = np.lexsort((images, -votes))  # most votes first, ties by id: the same answer every time
    placed = {int(images[i]): _placed(query, near, int(images[i])) for i in order[:PLACED]}
    return sorted(((int(images[i]), placed.get(int(images[i]), 0)) for i in order), key=lambda found: -found[1])


def checked(ranked: list[tuple[int, int]], count: int) -> list[int]:
    """The candidates to check, in rank order: the placed ones (`count` of them, at most
    MAX_CHECKED), and the next ones up to MIN_CHECKED candidates in all."""
    placed = sum(1 for _, agreeing in ranked if agreeing)
    return [image for image, _ in ranked[: max(min(placed, count, MAX_CHECKED), MIN_CHECKED)]]


def _votes(near: Neighbours) -> tuple[np.ndarray, np.ndarray]:
    """Each image found, and how many distinct query corners found one of its corners."""
    pairs = np.unique(np.stack([near.image, near.query], axis=1), axis=0)
    return np.unique(pairs[:, 0], return_counts=True)


def _placed(query: list[Keypoints], near: Neighbours, image: int) -> int:
    """Of one image's voting pairs, the most that agree on one placement of one of the query's analyses."""
    mine = near.image == image
    corner = near.query[mine]
    destination = keypoint_data.pixels_of(near.position[mine])
    best, first = 0, 0
    for analysis in query:
        last = first + len(analysis)
        inside = (corner >= first) & (corner < last)
        if inside.sum() >= 3:
            source = analysis.pixels()[corner[inside] - first]
            found = keypoints.placement(source, destination[inside], attempts=PLACEMENT_ATTEMPTS)
            best = max(best, found[1] if found else 0)
        first = last
    return best

"""Property-based API testing with schemathesis against the live schema of a real `idios serve`.

Every operation of `/openapi.json` is called with generated requests (valid and invalid ones);
no answer may be a server error, and every answer must fit the documented schema. `vit_l14` and
`resnet50` are not loaded by the stack, so their requests may answer 503 (documented), nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.imageserver import ImageServer
from tests.support.photos import jpeg
from tests.support.stacks import Stack, start_serve

LOADED = ("vit_b32", "phash")
NOT_LOADED = ("vit_l14", "resnet50")
MODELS = st.sampled_from([*LOADED, *NOT_LOADED, "nope"])
CHECKS = [response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def serve(milvus_uri: str, images: ImageServer, artifacts: Path) -> Iterator[Stack]:
    log_dir = artifacts / "test_schemathesis"
    log_dir.mkdir(exist_ok=True)
    # Short deadlines: a generated request must never keep the suite waiting long.
    stack = start_serve(milvus_uri, log_dir, IDIOS_DOWNLOAD_TIMEOUT="5", IDIOS_MAX_BULK_ITEMS="20")
    yield stack
    stack.stop()
    for process in stack.processes:
        assert "Traceback" not in process.log(), f"{process.name} logged a traceback:\n{process.log()[-4000:]}"


@pytest.fixture(scope="module")
def live_schema(serve: Stack, images: ImageServer) -> schemathesis.BaseSchema:
    images.add("/st/photo.jpg", jpeg("chelsea"))
    return schemathesis.openapi.from_url(f"{serve.url}/openapi.json")


def documented_operations() -> list[tuple[str, str]]:
    """(method, path) of every operation in the checked-in reference (tests/unit/test_docs.py keeps it current)."""
    document = yaml.safe_load((Path(__file__).resolve().parents[2] / "doc" / "openapi.yaml").read_text())
    return [(method.upper(), path) for path, methods in document["paths"].items() for method in methods]


OPERATIONS = documented_operations()
SLOW = ("/models/{model}/add_bulk", "/models/{model}/restore")


def run_case(case: schemathesis.Case, serve: Stack) -> None:
    response = case.call(base_url=serve.url, timeout=60)
    model = (case.path_parameters or {}).get("model")
    if response.status_code == 503 and model in NOT_LOADED:
        assert response.json()["detail"][0]["type"], response.text
    else:
        case.validate_response(response, checks=[not_a_server_error])
    case.validate_response(response, checks=CHECKS)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_error_and_documented_answers(
    live_schema: schemathesis.BaseSchema, serve: Stack, method: str, path: str, mode: GenerationMode
) -> None:
    operation = live_schema[path][method]
    if "{model}" in path:
        strategy = MODELS.flatmap(lambda model: operation.as_strategy(mode, path_parameters={"model": model}))
    else:
        strategy = operation.as_strategy(mode)
    examples = 8 if path in SLOW else 25

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    def check(case: schemathesis.Case) -> None:
        run_case(case, serve)

    check()


def test_worker_alive_after_fuzzing(serve: Stack) -> None:
    assert requests.get(f"{serve.url}/ping", params={"rpc": "true"}, timeout=60).json() == "pong"
    assert all(process.alive() for process in serve.processes)

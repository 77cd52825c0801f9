"""Schemathesis against the live app: requests generated from GET /api/v1/openapi.json (valid ones, and ones
that break the schema), sent over real HTTP with a valid API key; every response must not be a 5xx and must
conform to the document (status code, content type, headers, body schema). OpenAPI Specification 3.1.0 is
the contract here: the document says what each operation answers.

One run (bounded: `EXAMPLES` per operation and mode, derandomized so that it is the same run every time)
is shared by the tests below through a module fixture. Failures are grouped by operation and check, so
one run reports every distinct problem at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.control.api_helpers import Rest, ok
from tests.helpers import RoostThread, roost_document
from tests.tenant_helpers import make_tenant

# At most this many examples per operation and mode, spread over a time budget for the whole run (generating
# a case costs schemathesis ~50-80 ms of CPU here, far more than the request): with the defaults each
# operation gets 2-5 per mode. ROOST_FUZZ_EXAMPLES=50 ROOST_FUZZ_SECONDS=600 makes a deep run.
EXAMPLES = int(os.environ.get("ROOST_FUZZ_EXAMPLES", "20"))
BUDGET_SECONDS = float(os.environ.get("ROOST_FUZZ_SECONDS", "15"))

# Operations a generated request must not reach: the live stream never ends by itself, and deactivating or
# deleting the run's own key (ids are small integers) would turn the rest of the run into 401s; those two run
# last instead.
SKIPPED = {("GET", "/api/v1/live")}
LAST = {("POST", "/api/v1/api-keys/{key_id}/deactivate"), ("DELETE", "/api/v1/api-keys/{key_id}")}

POSITIVE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
                   response_headers_conformance, response_schema_conformance]
# Not `negative_data_rejection`: it counts an unknown query parameter as invalid data the API must refuse,
# while ignoring one is ordinary HTTP practice (the bodies' unknown fields are refused: test_api_v1.py).
NEGATIVE_CHECKS = POSITIVE_CHECKS


@dataclass
class Run:
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (operation, mode, title) -> detail
    calls: dict[str, int] = field(default_factory=dict)
    operations: set[str] = field(default_factory=set)
    with_inputs: set[str] = field(default_factory=set)  # operations with parameters or a request body
    seconds: float = 0.0


def _run(roost: RoostThread, key: str) -> Run:
    base = f"http://127.0.0.1:{roost.http_port}"
    with requests.Session() as session:
        document = session.get(f"{base}/api/v1/openapi.json", timeout=5).json()
        schema = schemathesis.openapi.from_dict(document)
        operations = [result.ok() for result in schema.get_all_operations()]
        operations = [op for op in operations if (op.method.upper(), op.path) not in SKIPPED]
        operations.sort(key=lambda op: (op.method.upper(), op.path) in LAST)
        run = Run()
        run.operations = {op.label for op in operations}
        run.with_inputs = {
            op.label for op in operations
            if document["paths"][op.path][op.method.lower()].keys() & {"parameters", "requestBody"}
        }
        start = time.monotonic()
        plan = [(op, mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) for op in operations]
        for index, (operation, mode) in enumerate(plan):
            label = operation.label
            elapsed = time.monotonic() - start
            done = sum(run.calls.values())
            per_case = elapsed / done if done else 0.08
            share = (BUDGET_SECONDS - elapsed) / (len(plan) - index)
            examples = max(2, min(EXAMPLES, int(share / per_case)))
            checks = POSITIVE_CHECKS if mode is GenerationMode.POSITIVE else NEGATIVE_CHECKS

            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            @given(case=operation.as_strategy(generation_mode=mode))
            def test(case: Any) -> None:
                run.calls[label] = run.calls.get(label, 0) + 1
                response = case.call(base_url=base, session=session, headers={"Authorization": f"Bearer {key}"},
                                     timeout=5)
                try:
                    case.validate_response(response, checks=checks)
                except (AssertionError, FailureGroup) as exc:  # one Failure, or a group of them
                    for failure in getattr(exc, "exceptions", [exc]):
                        title = getattr(failure, "title", type(failure).__name__)
                        detail = f"{title}: {getattr(failure, 'message', failure)}\n{case.as_curl_command()}"
                        run.failures.setdefault((label, mode.value, str(title)), detail[:1500])

            try:
                test()
            except Exception as exc:  # hypothesis could not generate (e.g. nothing to negate): note, go on
                if type(exc).__name__ != "Unsatisfiable":
                    run.failures.setdefault((label, mode.value, type(exc).__name__), repr(exc)[:500])
        run.seconds = time.monotonic() - start
        return run


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One bounded run against a Roost with an enterprise (unlimited) tenant that owns a project, topic and
    device, so generated ids sometimes name real resources."""
    roost = RoostThread(roost_document(tmp_path_factory.mktemp("fuzz"), allow_anonymous=False)).start()
    try:
        tenant = make_tenant(roost, "fuzzer", plan="enterprise")
        key = roost.run(tenant.services.api_keys.create(tenant.user, "fuzz")).key
        pool = Rest(roost)
        api = pool.api(key)
        project = api.create_project("fuzz")
        api.create_topic(project["id"], "fuzz/topic")
        api.create_device(project["id"], "fuzz-device")
        ok(api.post("/v1/mqtt"), 201)
        pool.close()
        yield _run(roost, key)
    finally:
        roost.stop()


def _report(items: dict[Any, str]) -> str:
    return "\n\n".join(f"{key}:\n{detail}" for key, detail in sorted(items.items()))


def test_every_operation_was_exercised(fuzz: Run) -> None:
    """The run reached every operation of the document (but the skipped stream), within its time budget;
    an operation with parameters or a body several times."""
    assert set(fuzz.calls) == fuzz.operations, sorted(fuzz.operations - set(fuzz.calls))
    assert all(fuzz.calls[label] >= 3 for label in fuzz.with_inputs), fuzz.calls
    assert fuzz.seconds < BUDGET_SECONDS + 20


def test_no_failures(fuzz: Run) -> None:
    """No 5xx, and every response conforms to the OpenAPI document, for valid and invalid generated
    requests."""
    assert fuzz.failures == {}, _report(fuzz.failures)



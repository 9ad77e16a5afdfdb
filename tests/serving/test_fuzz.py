"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis, on hypothesis): valid and
invalid bodies for every operation; no answer is a 5xx, and every answer (status, content type,
body) is one the schema documents. In the slow suite, with a bounded number of examples."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from seq2seq.serving.app import ServeSettings, create_app
from seq2seq.serving.models import load_models
from tests.serving.model_dirs import build_model_dirs

EXAMPLES_PER_OPERATION = 100


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory):
    dirs = build_model_dirs(tmp_path_factory.mktemp("fuzz"))
    models = load_models([(None, str(path)) for path in dirs.values()], device="cpu")
    # Small limits keep each example quick: a generated beam of 16 over 64 texts would be slow,
    # not wrong. max_queue is far above the one request at a time the fuzzer sends.
    app = create_app(models, ServeSettings(max_texts=4, max_text_chars=100, max_beam=4, max_generate_chars=50,
                                           max_samples=2, max_forecast_values=200, max_horizon=20,
                                           timeout_s=20))
    yield app
    app.state.server.close()


@pytest.fixture(scope="module")
def api_schema(fuzzed_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


# Named here rather than through schemathesis's pytest plugin (its lazy fixture loader does not
# run on pytest 9); the first test keeps this list equal to the schema's operations.
OPERATIONS = ["GET /health", "GET /models", "POST /translate", "POST /generate", "POST /generate/stream",
              "POST /classify", "POST /forecast"]


def operations(api_schema) -> dict[str, object]:
    found = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        found[f"{operation.method.upper()} {operation.path}"] = operation
    return found


@pytest.mark.slow
def test_every_operation_of_the_schema_is_fuzzed(api_schema):
    assert sorted(operations(api_schema)) == sorted(OPERATIONS)


@pytest.mark.slow
@pytest.mark.parametrize("label, mode", [(label, mode) for label in OPERATIONS for mode in GenerationMode
                                         if label.startswith("POST") or mode is GenerationMode.POSITIVE])
def test_the_api_answers_every_generated_request_as_its_schema_says(api_schema, label, mode):
    """Positive: bodies the schema allows; negative (operations with a body, the GETs take
    nothing to get wrong): bodies it does not allow, each of which must be a documented 4xx."""
    operation = operations(api_schema)[label]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    def answers_as_documented(case) -> None:
        # Every check but one: "a schema-valid body is accepted" cannot hold for limits that are
        # the server's settings or the model's (max_texts, a non-empty text list, max_chars),
        # which the schema does not state; those answers are documented 422s, checked as such.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    answers_as_documented()

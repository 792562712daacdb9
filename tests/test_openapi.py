"""The OpenAPI document against the running gateway: schemathesis generates requests for every
operation (valid and invalid) and checks each answer against what the document says.

No answer may be a server error, and every error is ``application/problem+json`` as documented.
The example count is bounded (``GATEWAY_TEST_SOAK`` multiplies it in ``make soak``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.conftest import SOAK, RunningGateway

EXAMPLES = 25 * SOAK


@pytest.fixture
def running(serve: Callable[..., RunningGateway]) -> RunningGateway:
    return serve()


@pytest.mark.soak
def test_every_answer_is_as_documented(running: RunningGateway) -> None:
    # schemathesis' pytest plugin (``from_fixture``) does not run under pytest 9: the
    # operations' strategies are driven here with Hypothesis directly.
    api: Any = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
    # A stream never ends on its own: its answers are tested over real sockets elsewhere.
    api = api.exclude(path_regex=r"/stream$")
    headers = {"Authorization": f"Bearer {running.token('globex')}"}
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 7

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def answers_as_documented(case: Any) -> None:
            case.call_and_validate(
                headers=headers if case.path.startswith("/v1") else None,
                # A time or cursor can be of the documented form yet refused (February 30th,
                # 1960, an edited cursor): a 400 there is right, not a rejected valid request.
                excluded_checks=[positive_data_acceptance],
            )

        answers_as_documented()


def test_the_document_has_no_422_and_problem_details_for_errors(running: RunningGateway) -> None:
    import httpx

    document = httpx.get(f"{running.url}/openapi.json").json()
    for path, operations in document["paths"].items():
        assert not path.startswith("/legal")
        for operation in operations.values():
            assert "422" not in operation["responses"], path
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], path

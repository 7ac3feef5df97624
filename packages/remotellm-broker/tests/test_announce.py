"""Bounds on model announcements and reported usage (``announce``)."""

from __future__ import annotations

import pytest

from remotellm_broker.announce import (
    MAX_CONTEXT_LENGTH,
    MAX_MODEL_ID,
    MAX_OWNED_BY,
    MAX_REPORTED_TOKENS,
    Announcements,
    checked_usage,
)
from remotellm_protocol import ModelInfo, Usage


def test_the_rate_is_a_bucket_per_token_refilled_over_a_minute() -> None:
    now = [0.0]
    announcements = Announcements(max_models=10, per_minute=3, clock=lambda: now[0])
    assert [announcements.allow("t") for _ in range(4)] == [True, True, True, False]
    assert announcements.allow("other")
    now[0] += 20.0  # one announcement back every 20 s
    assert announcements.allow("t")
    assert not announcements.allow("t")


def test_a_list_keeps_its_first_max_models_acceptable_entries() -> None:
    announcements = Announcements(max_models=2, per_minute=1)
    models = [ModelInfo(id=""), ModelInfo(id="a"), ModelInfo(id="b"), ModelInfo(id="c")]
    assert announcements.bounded(models, connector="x") == models[1:3]


@pytest.mark.parametrize(
    "model",
    [
        ModelInfo(id="x" * (MAX_MODEL_ID + 1)),
        ModelInfo(id="tab\tid"),
        ModelInfo(id="a", owned_by="o" * (MAX_OWNED_BY + 1)),
        ModelInfo(id="a", owned_by="new\nline"),
        ModelInfo(id="a", context_length=0),
        ModelInfo(id="a", context_length=MAX_CONTEXT_LENGTH + 1),
    ],
)
def test_unbounded_entries_are_left_out(model: ModelInfo) -> None:
    assert Announcements(max_models=5, per_minute=1).bounded([model], connector="x") == []


def test_entries_at_the_bounds_are_kept() -> None:
    model = ModelInfo(
        id="x" * MAX_MODEL_ID, owned_by="o" * MAX_OWNED_BY, context_length=MAX_CONTEXT_LENGTH
    )
    assert Announcements(max_models=1, per_minute=1).bounded([model], connector="x") == [model]


@pytest.mark.parametrize(
    "usage",
    [
        Usage(prompt_tokens=-1),
        Usage(completion_tokens=-1),
        Usage(total_tokens=-1),
        Usage(prompt_tokens=MAX_REPORTED_TOKENS + 1),
        Usage(total_tokens=2**64 - 1),
    ],
)
def test_implausible_usage_is_dropped(usage: Usage) -> None:
    assert checked_usage(usage, connector="c", request_id="r") is None


def test_plausible_usage_and_no_usage_pass_as_they_are() -> None:
    usage = Usage(prompt_tokens=0, completion_tokens=MAX_REPORTED_TOKENS, total_tokens=5)
    assert checked_usage(usage, connector="c", request_id="r") is usage
    assert checked_usage(None, connector=None, request_id="r") is None

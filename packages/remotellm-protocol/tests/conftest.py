"""Shared Hypothesis strategies: every frame and value type is registered, so a test asks
for ``st.from_type(Data)`` or ``st.from_type(Frame)`` and gets well-typed values that msgpack
can carry, optional fields sometimes None and sometimes set. Their values are arbitrary: the
sessions must reject the nonsensical ones with a protocol error, and nothing else."""

import os

import hypothesis.strategies as st
from hypothesis import settings

from remotellm_protocol import (
    Body,
    Cancel,
    Credit,
    Data,
    End,
    Ended,
    GoAway,
    Head,
    HeldStream,
    Hello,
    ModelInfo,
    Models,
    Open,
    Principal,
    ResumedStream,
    StreamError,
    Usage,
    Welcome,
)

# Tests must be deterministic (the same examples on every run, no .hypothesis/ database in
# the tree) and quick on a shared two-core machine. HYPOTHESIS_PROFILE=deep explores more.
settings.register_profile(
    "remotellm-protocol", max_examples=60, deadline=None, derandomize=True, database=None
)
settings.register_profile("deep", max_examples=2000, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "remotellm-protocol"))

#: Integers msgpack can carry: int64 and uint64.
wire_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
small_ints = st.integers(min_value=0, max_value=2**31)
texts = st.text(max_size=40)
floats = st.floats(allow_nan=False)
headers = st.lists(st.tuples(texts, texts), max_size=4)


def _maybe(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | strategy


st.register_type_strategy(
    ModelInfo,
    st.builds(
        ModelInfo,
        id=texts,
        owned_by=_maybe(texts),
        context_length=_maybe(wire_ints),
        endpoints=_maybe(st.lists(texts, max_size=4)),
    ),
)
st.register_type_strategy(
    Principal, st.builds(Principal, user_id=texts, key_id=texts, name=_maybe(texts))
)
st.register_type_strategy(
    Usage,
    st.builds(Usage, prompt_tokens=wire_ints, completion_tokens=wire_ints, total_tokens=wire_ints),
)
st.register_type_strategy(
    StreamError,
    st.builds(StreamError, code=wire_ints, message=texts, retry_after=_maybe(floats)),
)
st.register_type_strategy(
    HeldStream, st.builds(HeldStream, stream=wire_ints, body=wire_ints, body_done=st.booleans())
)
st.register_type_strategy(
    ResumedStream,
    st.builds(
        ResumedStream,
        stream=wire_ints,
        received=wire_ints,
        delivered=wire_ints,
        head=st.booleans(),
    ),
)
st.register_type_strategy(Ended, st.builds(Ended, stream=wire_ints))
st.register_type_strategy(
    Hello,
    st.builds(
        Hello,
        name=texts,
        version=texts,
        models=st.lists(st.from_type(ModelInfo), max_size=3),
        max_streams=wire_ints,
        resume_token=_maybe(texts),
        resumable=st.booleans(),
        streams=st.lists(st.from_type(HeldStream), max_size=3),
    ),
)
st.register_type_strategy(
    Welcome,
    st.builds(
        Welcome,
        session_id=texts,
        max_frame_bytes=wire_ints,
        initial_window=wire_ints,
        heartbeat_s=floats,
        resume_token=_maybe(texts),
        resume_window_s=floats,
        streams=st.lists(st.from_type(ResumedStream), max_size=3),
    ),
)
st.register_type_strategy(
    Models, st.builds(Models, models=st.lists(st.from_type(ModelInfo), max_size=3))
)
st.register_type_strategy(
    Open,
    st.builds(
        Open,
        stream=wire_ints,
        correlation_id=texts,
        method=texts,
        path=texts,
        principal=st.from_type(Principal),
        headers=headers,
        deadline_ms=_maybe(wire_ints),
        body=st.binary(max_size=64),
        more_body=st.booleans(),
    ),
)
st.register_type_strategy(
    Body, st.builds(Body, stream=wire_ints, chunk=st.binary(max_size=64), last=st.booleans())
)
st.register_type_strategy(
    Head, st.builds(Head, stream=wire_ints, status=wire_ints, headers=headers)
)
st.register_type_strategy(Data, st.builds(Data, stream=wire_ints, chunk=st.binary(max_size=64)))
st.register_type_strategy(
    End,
    st.builds(
        End,
        stream=wire_ints,
        usage=_maybe(st.from_type(Usage)),
        error=_maybe(st.from_type(StreamError)),
    ),
)
st.register_type_strategy(Credit, st.builds(Credit, stream=wire_ints, delivered=wire_ints))
st.register_type_strategy(Cancel, st.builds(Cancel, stream=wire_ints, reason=wire_ints))
st.register_type_strategy(GoAway, st.builds(GoAway, reason=texts))

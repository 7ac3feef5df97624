"""The dispatcher on its own: a real session and upstream, frames captured instead of a socket."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from remotellm_connector.demo_llm import DemoLLMServer
from remotellm_connector.dispatch import Abort, Dispatcher
from remotellm_connector.metrics import Metrics
from remotellm_connector.policy import Policy
from remotellm_connector.upstream import Upstream
from remotellm_protocol import (
    BODY_CHUNK_BYTES,
    MAX_REQUEST_BODY_BYTES,
    Body,
    Cancel,
    CancelReason,
    ConnectorSession,
    Credit,
    Data,
    End,
    ErrorCode,
    Frame,
    Head,
    Hello,
    Open,
    Principal,
    Welcome,
    encode,
)

WHO = Principal(user_id="local:alice", key_id="k1")
CHAT: dict[str, Any] = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Rig:
    session: ConnectorSession
    dispatcher: Dispatcher
    policy: Policy
    sent: list[Frame] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Cleared: every ``end`` waits in "the socket" (a full write buffer) until it is set.
    end_flushed: asyncio.Event = field(default_factory=asyncio.Event)
    next_id: int = 1

    def receive(self, frame: Frame) -> None:
        """Deliver a broker frame as the receive loop would."""
        self.dispatcher.handle(self.session.receive(encode(frame)))

    def open(self, body: bytes | dict[str, Any] = b"", **kw: Any) -> int:
        raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
        sid, self.next_id = self.next_id, self.next_id + 1
        kw.setdefault("path", "/v1/chat/completions")
        kw.setdefault("body", raw)
        self.receive(Open(stream=sid, correlation_id=f"c{sid}", method="POST", principal=WHO, **kw))
        return sid

    def frames(self, sid: int) -> list[Frame]:
        return [f for f in self.sent if getattr(f, "stream", None) == sid]

    async def wait(self, predicate: Any, within: float = 5.0) -> None:
        """Return once ``predicate()`` holds (checked after every frame sent)."""
        async with asyncio.timeout(within):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def end(self, sid: int, within: float = 5.0) -> End:
        await self.wait(lambda: any(isinstance(f, End) for f in self.frames(sid)), within)
        end = self.frames(sid)[-1]
        assert isinstance(end, End)
        return end


def handshaken(window: int, max_frame_bytes: int) -> ConnectorSession:
    session = ConnectorSession()
    session.send(Hello(name="t", version="0", max_streams=8))
    welcome = Welcome(
        session_id="s",
        max_frame_bytes=max_frame_bytes,
        initial_window=window,
        heartbeat_s=5,
    )
    session.receive(encode(welcome))
    return session


@pytest.fixture
async def rig_factory(demo: DemoLLMServer) -> AsyncIterator[Any]:
    async with Upstream(demo.url, read_timeout=5) as upstream, asyncio.TaskGroup() as tg:
        rigs: list[Rig] = []

        def make(
            *,
            window: int = 256 * 1024,
            max_frame_bytes: int = 1 << 20,
            policy: Policy | None = None,
        ) -> Rig:
            session = handshaken(window, max_frame_bytes)
            sent: list[Frame] = []
            changed = asyncio.Event()
            end_flushed = asyncio.Event()
            end_flushed.set()

            async def send(frame: Frame) -> None:
                session.send(frame)  # the session checks every frame we emit
                sent.append(frame)
                changed.set()
                if isinstance(frame, End):
                    await end_flushed.wait()

            policy = policy or Policy()
            dispatcher = Dispatcher(
                session=session,
                send=send,
                upstream=upstream,
                policy=policy,
                metrics=Metrics(),
                task_group=tg,
            )
            rig = Rig(session, dispatcher, policy, sent, changed, end_flushed)
            rigs.append(rig)
            return rig

        yield make
        for rig in rigs:
            rig.dispatcher.abort_all(Abort.RELAY_LOST)


async def test_response_is_split_to_fit_the_frame_limit(rig_factory: Any) -> None:
    rig: Rig = rig_factory(max_frame_bytes=1024)
    sid = rig.open({**CHAT, "x_response_bytes": 20_000})
    end = await rig.end(sid)
    assert end.error is None
    data = [f for f in rig.frames(sid) if isinstance(f, Data)]
    assert sum(len(f.chunk) for f in data) == 20_000
    assert max(len(f.chunk) for f in data) <= rig.session.max_data_chunk


async def test_data_waits_for_credit_and_never_exceeds_the_window(
    rig_factory: Any, demo: DemoLLMServer
) -> None:
    rig: Rig = rig_factory(window=4096)
    sid = rig.open({**CHAT, "x_response_bytes": 50_000})
    await asyncio.sleep(0.2)
    seen = rig.frames(sid)
    sent = sum(len(f.chunk) for f in seen if isinstance(f, Data))
    assert sent == 4096
    while not any(isinstance(f, End) for f in rig.frames(sid)):
        total = sum(len(f.chunk) for f in rig.frames(sid) if isinstance(f, Data))
        assert total - rig.session.streams[sid].credited <= 4096
        rig.receive(Credit(stream=sid, delivered=total))  # the client read everything
        count = len(seen)
        await rig.wait(lambda: len(rig.frames(sid)) > count, within=5)  # noqa: B023
        seen = rig.frames(sid)
    assert (await rig.end(sid)).error is None


async def test_open_after_our_goaway_is_answered_going_away_without_asking_the_llm(
    rig_factory: Any, demo: DemoLLMServer
) -> None:
    rig: Rig = rig_factory()
    rig.dispatcher.draining = True
    sid = rig.open(CHAT)
    end = await rig.end(sid)
    assert end.error is not None
    assert end.error.code == ErrorCode.GOING_AWAY
    assert demo.stats.requests["/v1/chat/completions"] == 0


async def test_policy_refusal_ends_the_stream_and_frees_nothing_it_did_not_take(
    rig_factory: Any,
) -> None:
    rig: Rig = rig_factory(policy=Policy(allowed_users=["gitlab:99"]))
    end = await rig.end(rig.open(CHAT))
    assert end.error is not None
    assert end.error.code == ErrorCode.POLICY_DENIED
    await rig.dispatcher.wait_idle()
    assert rig.policy.active == 0


async def test_rate_limit_refusal_carries_retry_after(rig_factory: Any) -> None:
    rig: Rig = rig_factory(policy=Policy(rpm=1, burst=1))
    assert (await rig.end(rig.open(CHAT))).error is None
    end = await rig.end(rig.open(CHAT))
    assert end.error is not None
    assert end.error.code == ErrorCode.RATE_LIMITED
    assert end.error.retry_after is not None
    assert end.error.retry_after > 50


async def test_cancel_that_arrives_with_the_open_never_reaches_the_llm(
    rig_factory: Any, demo: DemoLLMServer
) -> None:
    rig: Rig = rig_factory()
    sid = rig.open(CHAT)
    rig.receive(Cancel(stream=sid, reason=CancelReason.CLIENT_GONE))
    end = await rig.end(sid)
    assert end.error is not None
    assert end.error.code == ErrorCode.CANCELLED
    assert demo.stats.requests["/v1/chat/completions"] == 0
    await rig.dispatcher.wait_idle()
    assert rig.policy.active == 0
    assert rig.dispatcher.streams == {}


async def test_deadline_before_the_head_is_upstream_timeout(rig_factory: Any) -> None:
    rig: Rig = rig_factory()
    end = await rig.end(rig.open({**CHAT, "x_ttft_ms": 5000}, deadline_ms=100))
    assert end.error is not None
    assert end.error.code == ErrorCode.UPSTREAM_TIMEOUT


async def test_deadline_after_the_head_is_an_interruption(rig_factory: Any) -> None:
    rig: Rig = rig_factory()
    sid = rig.open({**CHAT, "stream": True, "max_tokens": 1000, "x_gap_ms": 20}, deadline_ms=200)
    end = await rig.end(sid)
    assert isinstance(rig.frames(sid)[0], Head)
    assert end.error is not None
    assert end.error.code == ErrorCode.UPSTREAM_INTERRUPTED


async def test_llm_error_status_is_relayed_as_an_answer_not_a_failure(rig_factory: Any) -> None:
    rig: Rig = rig_factory()
    sid = rig.open({**CHAT, "x_status": 429, "x_retry_after": 3})
    end = await rig.end(sid)
    head = rig.frames(sid)[0]
    assert isinstance(head, Head)
    assert head.status == 429
    assert end.error is None
    body = b"".join(f.chunk for f in rig.frames(sid) if isinstance(f, Data))
    assert msgspec.json.decode(body)["error"]["message"]


async def test_llm_dying_mid_stream_ends_with_upstream_interrupted(rig_factory: Any) -> None:
    rig: Rig = rig_factory()
    sid = rig.open({**CHAT, "stream": True, "x_fail_after": 3})
    end = await rig.end(sid)
    assert any(isinstance(f, Data) for f in rig.frames(sid))
    assert end.error is not None
    assert end.error.code == ErrorCode.UPSTREAM_INTERRUPTED


async def test_body_over_the_limit_is_refused_before_it_all_arrived(
    rig_factory: Any, demo: DemoLLMServer
) -> None:
    rig: Rig = rig_factory()
    piece = b"x" * BODY_CHUNK_BYTES
    sid = rig.open(piece, more_body=True)
    for _ in range(MAX_REQUEST_BODY_BYTES // BODY_CHUNK_BYTES):
        rig.receive(Body(stream=sid, chunk=piece))
    end = await rig.end(sid)
    assert end.error is not None
    assert end.error.code == ErrorCode.BAD_REQUEST
    rig.receive(Body(stream=sid, chunk=b"", last=True))  # crossing frames are dropped
    assert demo.stats.requests["/v1/chat/completions"] == 0


async def test_relay_lost_stops_streams_without_sending_anything(
    rig_factory: Any, demo: DemoLLMServer
) -> None:
    rig: Rig = rig_factory()
    sid = rig.open({**CHAT, "stream": True, "max_tokens": 1000, "x_gap_ms": 20})
    await rig.wait(lambda: any(isinstance(f, Data) for f in rig.frames(sid)))
    rig.dispatcher.abort_all(Abort.RELAY_LOST)
    async with asyncio.timeout(5):
        await rig.dispatcher.wait_idle()
        await demo.stats.wait_until(lambda s: len(s.disconnects) == 1)
    assert not any(isinstance(f, End) for f in rig.frames(sid))


async def test_cancel_crossing_our_end_on_the_wire_is_dropped(rig_factory: Any) -> None:
    rig: Rig = rig_factory()
    rig.end_flushed.clear()  # the end is written but the socket is still draining
    sid = rig.open(CHAT)
    await rig.end(sid)
    rig.receive(Cancel(stream=sid, reason=CancelReason.CLIENT_GONE))  # legal: it crossed
    rig.end_flushed.set()
    await rig.dispatcher.wait_idle()
    assert [type(f) for f in rig.frames(sid)].count(End) == 1
    assert rig.policy.active == 0

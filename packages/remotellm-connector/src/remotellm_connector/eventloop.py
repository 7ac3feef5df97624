"""Which asyncio event loop the service runs on: uvloop where it is installed, else asyncio's.

``event_loop`` (``--event-loop``, ``REMOTELLM_CONNECTOR_EVENT_LOOP``, YAML ``event_loop``):

- ``auto`` (default): uvloop when the ``[uvloop]`` extra is installed (about a fifth less
  CPU per relayed token in an earlier bench run), asyncio's own loop otherwise;
- ``asyncio``: always asyncio's loop (the opt-out);
- ``uvloop``: uvloop or a start-up error saying how to install it.

The choice is logged once at start-up (``event_loop_selected``).
"""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["EventLoopChoice", "EventLoopError", "pick_loop", "run"]

T = TypeVar("T")
EventLoopChoice = Literal["auto", "asyncio", "uvloop"]

_INSTALL = "pip install 'remotellm-connector[uvloop]'"


class EventLoopError(Exception):
    """``uvloop`` was asked for and cannot be imported; the message says how to install it."""


def pick_loop(
    choice: EventLoopChoice,
) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str | None]:
    """The loop factory (None: asyncio's default) and, if uvloop is not used, why."""
    if choice == "asyncio":
        return None, "event_loop = asyncio"
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise EventLoopError(
                f"event_loop = uvloop but uvloop cannot be imported ({exc}): "
                f"{_INSTALL}, or use event_loop = auto"
            ) from None
        return None, f"uvloop not installed ({_INSTALL})"
    return uvloop.new_event_loop, None


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice, log: Any) -> T:
    """``asyncio.run(main)`` on the chosen loop; its first act logs the loop it really runs on."""
    try:
        factory, why = pick_loop(choice)
    except EventLoopError:
        main.close()
        raise

    async def reported() -> T:
        running = type(asyncio.get_running_loop())
        name = "uvloop" if running.__module__.startswith("uvloop") else "asyncio"
        fields = {"event_loop": name, "setting": choice} | ({"why": why} if why else {})
        log.info("event_loop_selected", **fields)
        return await main

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(reported())

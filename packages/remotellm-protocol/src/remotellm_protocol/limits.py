"""Default limits of wire version 1. The broker announces the ones in force in ``welcome``."""

__all__ = [
    "BODY_CHUNK_BYTES",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_RESUME_WINDOW_S",
    "DEFAULT_STREAM_WINDOW",
    "HELLO_MAX_FRAME_BYTES",
    "MAX_NESTING_DEPTH",
    "MIN_MAX_FRAME_BYTES",
    "MAX_REQUEST_BODY_BYTES",
    "MAX_STREAM_ID",
]

#: Largest encoded frame either side accepts unless ``welcome`` says otherwise. Large request
#: bodies are split into ``body`` frames and large responses into ``data`` frames, so one frame
#: never holds the socket for long and other streams interleave.
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024

#: The smallest ``welcome.max_frame_bytes`` a connector accepts: below it not even a ``head``
#: with a few headers would fit.
MIN_MAX_FRAME_BYTES = 1024

#: Deepest nesting of msgpack maps and arrays a frame may have; the frame's own map is level 1.
#: Frames of wire version 1 need 3 levels (``hello.models[i]``, ``open.headers[i]``); the rest is
#: room for future fields. ``decode`` enforces it exactly, so what is accepted is the same on
#: every interpreter instead of depending on its recursion limit.
MAX_NESTING_DEPTH = 32

#: Largest frame accepted before the handshake (``hello`` with a long model list).
HELLO_MAX_FRAME_BYTES = DEFAULT_MAX_FRAME_BYTES

#: How many unacknowledged response bytes a connector may have in flight per stream.
DEFAULT_STREAM_WINDOW = 256 * 1024

#: Size of the request-body pieces a broker sends (one in ``open``, the rest in ``body``).
BODY_CHUNK_BYTES = 256 * 1024

#: Default cap on one request body (the broker's 413 limit).
MAX_REQUEST_BODY_BYTES = 16 * 1024 * 1024

#: WebSocket ping period the broker suggests in ``welcome``.
DEFAULT_HEARTBEAT_S = 5.0

#: How long the reference broker keeps a dropped connection's streams for a resume
#: (``welcome.resume_window_s``): longer than a Wi-Fi roam or a NAT rebinding, and than the
#: 15 s a connector takes to notice a silently dead link.
DEFAULT_RESUME_WINDOW_S = 30.0

#: Largest stream id: ids are positive and fit a signed 64-bit integer in every language.
MAX_STREAM_ID = 2**63 - 1

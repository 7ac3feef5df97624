"""remotellm-protocol: the sans-I/O relay protocol between remotellm connectors and brokers.

Frames (``frames``), their msgpack codec (``encode``/``decode``), wire codes (``codes``), the
exception tree (``errors``), per-stream and per-connection state machines (``streams``,
``session``) and version negotiation (``versions``). See docs/protocol.md for the spec.
"""

from remotellm_protocol.__about__ import __version__
from remotellm_protocol.broker_session import BrokerSession
from remotellm_protocol.codec import decode, encode
from remotellm_protocol.codes import CancelReason, CloseCode, ErrorCode
from remotellm_protocol.connector_session import ConnectorSession
from remotellm_protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from remotellm_protocol.frames import (
    FRAME_TYPES,
    Body,
    Cancel,
    Credit,
    Data,
    End,
    Ended,
    Frame,
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
from remotellm_protocol.limits import (
    BODY_CHUNK_BYTES,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_RESUME_WINDOW_S,
    DEFAULT_STREAM_WINDOW,
    MAX_NESTING_DEPTH,
    MAX_REQUEST_BODY_BYTES,
    MAX_STREAM_ID,
    MIN_MAX_FRAME_BYTES,
)
from remotellm_protocol.resume import Suspended
from remotellm_protocol.session import RESPONSE_STATUSES, SessionState
from remotellm_protocol.streams import StreamState
from remotellm_protocol.versions import (
    SUBPROTOCOLS,
    SUPPORTED_VERSIONS,
    choose_subprotocol,
    parse_subprotocol,
    subprotocol,
)

__all__ = [
    "BODY_CHUNK_BYTES",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_RESUME_WINDOW_S",
    "DEFAULT_STREAM_WINDOW",
    "FRAME_TYPES",
    "MAX_NESTING_DEPTH",
    "MAX_REQUEST_BODY_BYTES",
    "MAX_STREAM_ID",
    "MIN_MAX_FRAME_BYTES",
    "RESPONSE_STATUSES",
    "SUBPROTOCOLS",
    "SUPPORTED_VERSIONS",
    "Body",
    "BrokerSession",
    "Cancel",
    "CancelReason",
    "CloseCode",
    "ConnectorSession",
    "Credit",
    "Data",
    "End",
    "Ended",
    "ErrorCode",
    "Frame",
    "GoAway",
    "Head",
    "HeldStream",
    "Hello",
    "LocalProtocolError",
    "ModelInfo",
    "Models",
    "Open",
    "Principal",
    "ProtocolError",
    "RemoteProtocolError",
    "ResumedStream",
    "SessionState",
    "StreamError",
    "StreamState",
    "Suspended",
    "Usage",
    "Welcome",
    "__version__",
    "choose_subprotocol",
    "decode",
    "encode",
    "parse_subprotocol",
    "subprotocol",
]

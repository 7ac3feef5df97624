from remotellm_protocol import (
    BODY_CHUNK_BYTES,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_STREAM_WINDOW,
    MAX_NESTING_DEPTH,
    MAX_REQUEST_BODY_BYTES,
    MAX_STREAM_ID,
    MIN_MAX_FRAME_BYTES,
)
from remotellm_protocol.limits import HELLO_MAX_FRAME_BYTES
from remotellm_protocol.session import DATA_FRAME_OVERHEAD


def test_the_defaults_of_wire_version_1() -> None:
    assert DEFAULT_MAX_FRAME_BYTES == HELLO_MAX_FRAME_BYTES == 1024 * 1024
    assert DEFAULT_STREAM_WINDOW == BODY_CHUNK_BYTES == 256 * 1024
    assert MAX_REQUEST_BODY_BYTES == 16 * 1024 * 1024
    assert MAX_NESTING_DEPTH == 32
    assert DEFAULT_HEARTBEAT_S == 5.0
    assert MAX_STREAM_ID == 2**63 - 1


def test_a_body_chunk_leaves_room_in_a_frame_for_the_open_around_it() -> None:
    assert BODY_CHUNK_BYTES + 64 * 1024 <= DEFAULT_MAX_FRAME_BYTES


def test_the_smallest_frame_limit_still_carries_data() -> None:
    assert MIN_MAX_FRAME_BYTES - DATA_FRAME_OVERHEAD > 0


def test_a_maximal_request_body_takes_a_bounded_number_of_frames() -> None:
    assert MAX_REQUEST_BODY_BYTES // BODY_CHUNK_BYTES == 64

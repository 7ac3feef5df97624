"""Usage is read from the passing bytes; the usage-only chunk goes when the client never asked."""

import pytest

from remotellm_connector.forward import UsageMode
from remotellm_connector.usage import UsageTap, parse_usage
from remotellm_protocol import Usage

TOKEN_EVENT = b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
USAGE_EVENT = (
    b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,'
    b'"total_tokens":12,"prompt_tokens_details":{"cached_tokens":0}}}\n\n'
)
DONE = b"data: [DONE]\n\n"
STREAM = TOKEN_EVENT * 3 + USAGE_EVENT + DONE


def run(tap: UsageTap, pieces: list[bytes]) -> bytes:
    out = b"".join(tap.feed(p) for p in pieces)
    return out + tap.finish()


def split_every(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


def test_parse_usage_reads_the_last_usage_object() -> None:
    assert parse_usage(STREAM) == Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12)
    assert parse_usage(b'{"usage": {"prompt_tokens": 3, "total_tokens": 3}}') == Usage(
        prompt_tokens=3, completion_tokens=0, total_tokens=3
    )
    assert parse_usage(TOKEN_EVENT) is None
    assert parse_usage(b'{"usage":{"prompt_tokens":5') is None  # cut off
    assert parse_usage(b'{"usage":{}}') is None


def test_usage_text_inside_content_is_not_mistaken_for_usage() -> None:
    event = b'data: {"choices":[{"delta":{"content":"\\"usage\\": {\\"total_tokens\\": 9}"}}]}\n\n'
    assert parse_usage(event) is None


def test_sniff_forwards_every_chunk_at_once_and_unchanged() -> None:
    tap = UsageTap(UsageMode.SNIFF)
    for piece in split_every(STREAM, 7):
        assert tap.feed(piece) == piece
    assert tap.finish() == b""
    assert tap.usage == Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12)


def test_sniff_reads_usage_at_the_end_of_a_long_body() -> None:
    tap = UsageTap(UsageMode.SNIFF)
    run(tap, [b'{"choices":[{"text":"' + b"x" * 100_000 + b'"}],', b'"usage":{"total_tokens":4}}'])
    assert tap.usage == Usage(total_tokens=4)


@pytest.mark.parametrize("size", [1, 5, 13, 64, 1000, len(STREAM)])
def test_strip_removes_only_the_usage_chunk_however_the_bytes_are_cut(size: int) -> None:
    tap = UsageTap(UsageMode.STRIP)
    assert run(tap, split_every(STREAM, size)) == TOKEN_EVENT * 3 + DONE
    assert tap.usage == Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12)


def test_strip_forwards_whole_events_as_soon_as_they_are_complete() -> None:
    tap = UsageTap(UsageMode.STRIP)
    assert tap.feed(TOKEN_EVENT[:10]) == b""
    assert tap.feed(TOKEN_EVENT[10:] + TOKEN_EVENT[:5]) == TOKEN_EVENT
    assert tap.finish() == TOKEN_EVENT[:5]


def test_strip_handles_crlf_events_and_spaced_json() -> None:
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}\r\n\r\n'
    token = b'data: {"choices": [{"delta": {}}]}\r\n\r\n'
    tap = UsageTap(UsageMode.STRIP)
    assert run(tap, [token + usage + b"data: [DONE]\r\n\r\n"]) == token + b"data: [DONE]\r\n\r\n"
    assert tap.usage == Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)


def test_strip_keeps_an_empty_choices_event_that_has_no_usage() -> None:
    event = b'data: {"choices":[],"usage":null}\n\n'
    tap = UsageTap(UsageMode.STRIP)
    assert run(tap, [event]) == event


def test_strip_without_a_usage_chunk_still_finds_usage_in_the_last_chunk() -> None:
    last = b'data: {"choices":[{"finish_reason":"stop"}],"usage":{"completion_tokens":2}}\n\n'
    tap = UsageTap(UsageMode.STRIP)
    assert run(tap, [TOKEN_EVENT, last, DONE]) == TOKEN_EVENT + last + DONE
    assert tap.usage == Usage(prompt_tokens=0, completion_tokens=2, total_tokens=2)


def test_none_mode_passes_bytes_and_reports_nothing() -> None:
    tap = UsageTap(UsageMode.NONE)
    assert run(tap, [STREAM]) == STREAM
    assert tap.usage is None


RESPONSES_STREAM = (
    b'event: response.created\ndata: {"type":"response.created","response":{"id":"r",'
    b'"usage":null}}\n\n'
    + b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
    b'"delta":"hi"}\n\n'
    * 300
    + b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"r",'
    b'"usage":{"input_tokens":11,"input_tokens_details":{"cached_tokens":4},'
    b'"output_tokens":300,"output_tokens_details":{"reasoning_tokens":0},'
    b'"total_tokens":311}}}\n\n'
)
ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","usage":'
    b'{"input_tokens":25,"cache_read_input_tokens":3,"output_tokens":1}}}\n\n'
    + b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
    * 300
    + b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
    b'"end_turn"},"usage":{"output_tokens":300}}\n\n'
    + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def test_responses_usage_is_read_from_response_completed() -> None:
    tap = UsageTap(UsageMode.SNIFF)
    assert run(tap, split_every(RESPONSES_STREAM, 700)) == RESPONSES_STREAM
    assert tap.usage == Usage(prompt_tokens=11, completion_tokens=300, total_tokens=311)


def test_anthropic_stream_usage_takes_input_tokens_from_message_start() -> None:
    tap = UsageTap(UsageMode.SNIFF)
    assert run(tap, split_every(ANTHROPIC_STREAM, 500)) == ANTHROPIC_STREAM
    assert tap.usage == Usage(prompt_tokens=25, completion_tokens=300, total_tokens=325)


def test_anthropic_usage_with_both_counts_at_the_end_uses_the_end() -> None:
    body = b'{"id":"m","type":"message","usage":{"input_tokens":9,"output_tokens":4}}'
    tap = UsageTap(UsageMode.SNIFF)
    run(tap, [body])
    assert tap.usage == Usage(prompt_tokens=9, completion_tokens=4, total_tokens=13)


def test_count_tokens_answers_carry_no_usage() -> None:
    tap = UsageTap(UsageMode.SNIFF)
    run(tap, [b'{"input_tokens":12}'])
    assert tap.usage is None

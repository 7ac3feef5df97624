"""The bytes of docs/protocol.md's worked exchange are what the reference encoder writes."""

import re
from pathlib import Path

from remotellm_protocol import FRAME_TYPES, decode, encode

SPEC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
HEX_LINE = re.compile(r"^(?:[CB]→[CB] \w+\s+| {13})((?:[0-9a-f]{2} ?)+)$")


def worked_messages() -> dict[str, bytes]:
    """``direction tag`` -> the message, from the hex lines of the worked exchange."""
    text = SPEC.read_text(encoding="utf-8").split("## A worked exchange", 1)[1]
    messages: dict[str, bytearray] = {}
    label = ""
    for line in text.splitlines():
        match = HEX_LINE.match(line)
        if match is None:
            continue
        if not line.startswith(" "):
            label = " ".join(line.split()[:2])
            messages[label] = bytearray()
        messages[label] += bytes.fromhex(match.group(1))
    return {k: bytes(v) for k, v in messages.items()}


def test_every_message_of_the_worked_exchange_is_canonical() -> None:
    messages = worked_messages()
    assert list(messages) == [
        "C→B hello",
        "B→C welcome",
        "B→C open",
        "C→B head",
        "C→B data",
        "B→C credit",
        "C→B end",
    ]
    tags = {t.__struct_config__.tag for t in FRAME_TYPES}
    for label, message in messages.items():
        frame = decode(message)
        assert frame.__struct_config__.tag == label.split()[1] in tags
        assert encode(frame) == message, f"{label}: stale bytes in docs/protocol.md"

"""The library against every conformance vector, and the vectors against their generator."""

import runpy
import tomllib
from pathlib import Path
from typing import Literal, TypeVar

import msgspec
import pytest

from remotellm_protocol import (
    FRAME_TYPES,
    BrokerSession,
    ConnectorSession,
    Frame,
    RemoteProtocolError,
    decode,
    encode,
)
from remotellm_protocol.testing import vectors_path

VECTORS = vectors_path()
PACKAGE = Path(__file__).resolve().parents[1]


class Valid(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str
    frame: Frame
    msgpack_hex: str
    canonical: bool


class Invalid(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str
    msgpack_hex: str
    max_frame_bytes: int
    close_code: int


class Step(msgspec.Struct, forbid_unknown_fields=True):
    action: Literal["send", "receive"]
    frame: Frame
    msgpack_hex: str
    expect: Literal["accept", "reject"]


class Sequence(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str
    role: Literal["connector", "broker"]
    steps: list[Step]


def files(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).glob("*.json"))


T = TypeVar("T", Valid, Invalid, Sequence)


def load(path: Path, kind: type[T]) -> T:
    vector = msgspec.json.decode(path.read_bytes(), type=kind)
    assert path.stem in (vector.name, f"connector-{vector.name}", f"broker-{vector.name}")
    return vector


@pytest.mark.parametrize("path", files("valid"), ids=lambda p: p.stem)
def test_valid_vectors_decode_to_their_frame(path: Path) -> None:
    vector = load(path, Valid)
    data = bytes.fromhex(vector.msgpack_hex)
    assert decode(data) == vector.frame
    assert (encode(vector.frame) == data) is vector.canonical


@pytest.mark.parametrize("path", files("invalid"), ids=lambda p: p.stem)
def test_invalid_vectors_are_rejected_with_their_close_code(path: Path) -> None:
    vector = load(path, Invalid)
    with pytest.raises(RemoteProtocolError) as info:
        decode(bytes.fromhex(vector.msgpack_hex), max_size=vector.max_frame_bytes)
    assert info.value.close_code == vector.close_code


@pytest.mark.parametrize("path", files("sequences"), ids=lambda p: p.stem)
def test_sequence_vectors_are_accepted_up_to_the_step_that_must_be_rejected(path: Path) -> None:
    vector = load(path, Sequence)
    session = ConnectorSession() if vector.role == "connector" else BrokerSession()
    assert [s.expect for s in vector.steps[:-1]] == ["accept"] * (len(vector.steps) - 1)
    last = vector.steps[-1]
    assert last.expect == "accept" or last.action == "receive"
    assert (last.expect == "accept") is vector.name.startswith("accept-")
    for step in vector.steps:
        data = bytes.fromhex(step.msgpack_hex)
        assert decode(data) == step.frame
        if step.action == "send":
            assert session.send(step.frame) == data
        elif step.expect == "accept":
            assert session.receive(data) == step.frame
        else:
            with pytest.raises(RemoteProtocolError) as info:
                session.receive(data)
            assert info.value.close_code == 1002


def test_every_frame_type_has_valid_vectors() -> None:
    tags = {load(p, Valid).frame.__struct_config__.tag for p in files("valid")}
    assert tags == {t.__struct_config__.tag for t in FRAME_TYPES}


def test_the_vectors_cover_what_the_specification_promises() -> None:
    invalid = {p.stem for p in files("invalid")}
    for needed in ("truncated-", "unknown-tag", "chunk-as-str", "bin32-claims-4-gib", "nested-"):
        assert any(name.startswith(needed) for name in invalid), needed
    sequences = {p.stem for p in files("sequences")}
    for needed in (
        "broker-data-for-unknown-stream",
        "broker-duplicate-end",
        "broker-data-beyond-window",
        "broker-data-before-head",
        "connector-open-reusing-id",
    ):
        assert needed in sequences


def test_the_committed_vectors_are_what_the_generator_writes(tmp_path: Path) -> None:
    generator = runpy.run_path(str(VECTORS / "generate.py"), run_name="vectors")
    generator["generate"](tmp_path)
    written = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.json")}
    committed = {p.relative_to(VECTORS): p.read_bytes() for p in VECTORS.rglob("*.json")}
    assert written.keys() == committed.keys()
    stale = [str(path) for path in written if written[path] != committed[path]]
    assert not stale, "run: python packages/remotellm-protocol/vectors/generate.py"


def test_the_wheel_ships_the_vectors_inside_the_package() -> None:
    config = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    force_include = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert force_include == {"vectors": "remotellm_protocol/vectors"}
    assert "vectors" in config["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]

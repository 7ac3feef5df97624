"""The dependency boundary: installing the protocol and the connector never pulls in the
broker's portal stack, and the protocol itself needs msgspec alone.

Closures come from the installed distributions' metadata (``importlib.metadata``), with
environment markers evaluated as pip would for a plain install (no extras). The connector's
``pyproject.toml`` is read too when the repository is around: its metadata may be missing
(the protocol tested alone) or older than the file (an editable install not yet refreshed).
"""

import importlib.metadata as metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PORTAL_STACK = {"authlib", "aiohttp-session", "cryptography", "jinja2"}
CONNECTOR_PYPROJECT = Path(__file__).resolve().parents[2] / "remotellm-connector/pyproject.toml"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wanted(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or {""})


def closure(roots: list[Requirement]) -> set[str]:
    """Every distribution a plain install of ``roots`` brings in (uninstalled ones included
    by name, since their own requirements cannot be read)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(normalize(r.name), frozenset(r.extras)) for r in roots]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if wanted(requirement, extras):
                todo.append((normalize(requirement.name), frozenset(requirement.extras)))
    return {name for name, _ in seen}


def installed_requirements(distribution: str) -> list[Requirement]:
    try:
        return [Requirement(line) for line in metadata.distribution(distribution).requires or []]
    except metadata.PackageNotFoundError:
        return []


def connector_roots() -> list[Requirement]:
    roots = [Requirement("remotellm-protocol"), *installed_requirements("remotellm-connector")]
    if CONNECTOR_PYPROJECT.is_file():
        project = tomllib.loads(CONNECTOR_PYPROJECT.read_text())["project"]
        roots += [Requirement(line) for line in project["dependencies"]]
    return [r for r in roots if wanted(r, frozenset())]


def test_the_protocol_needs_msgspec_alone() -> None:
    assert closure([Requirement("remotellm-protocol")]) == {"remotellm-protocol", "msgspec"}


def test_the_protocol_and_the_connector_bring_in_no_portal_stack() -> None:
    everything = closure(connector_roots())
    assert "msgspec" in everything
    assert not everything & PORTAL_STACK, sorted(everything & PORTAL_STACK)


def test_the_connector_is_checked_from_its_metadata_or_its_pyproject() -> None:
    roots = {normalize(r.name) for r in connector_roots()}
    here = bool(installed_requirements("remotellm-connector")) or CONNECTOR_PYPROJECT.is_file()
    # Outside the monorepo, with no connector installed, there is nothing more to check.
    assert ("websockets" in roots) is here


def test_the_closure_follows_extras_and_markers() -> None:
    # coverage[toml] needs tomli only on Python < 3.11: never here (requires-python >= 3.11).
    assert "tomli" not in closure([Requirement("coverage[toml]")])
    assert closure([Requirement("no-such-distribution-xyz")]) == {"no-such-distribution-xyz"}
    assert not wanted(Requirement("pytest; extra == 'test'"), frozenset())
    assert wanted(Requirement("pytest; extra == 'test'"), frozenset({"test"}))


def test_importing_the_protocol_loads_no_event_loop_and_no_network_code() -> None:
    probe = (
        "import sys, remotellm_protocol, remotellm_protocol.testing\n"
        "banned = {'asyncio', 'aiohttp', 'websockets', 'trio', 'anyio', 'socket', 'ssl'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in banned))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"

"""The generated reference pages (docs/reference/) are what the code says today.

``docs/gen_reference.py`` writes the configuration, CLI and metrics pages from the settings
types, the click commands and the Prometheus registries; ``hatch run docs:build`` runs it. This
test fails when a commit changes a setting, a flag, a command or a metric without regenerating
the pages, so the reference cannot drift from the code. Fix: ``python docs/gen_reference.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from harness.modes import E2E_ROOT
from remotellm_broker.config import BrokerSettings, env_name
from remotellm_connector.config import ENV_PREFIX as CONNECTOR_ENV
from remotellm_connector.config import ConnectorSettings

REPO = E2E_ROOT.parent
GENERATOR = REPO / "docs" / "gen_reference.py"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_reference", module)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
PAGES: dict[Path, str] = gen.render()


@pytest.mark.parametrize("path", sorted(PAGES), ids=lambda p: p.name)
def test_the_committed_reference_page_is_what_the_generator_writes(path: Path) -> None:
    assert path.is_file(), f"{path.relative_to(REPO)} is missing: run python docs/gen_reference.py"
    committed = path.read_text(encoding="utf-8")
    assert committed == PAGES[path], (
        f"{path.relative_to(REPO)} is stale: the code changed since it was generated. "
        "Run: python docs/gen_reference.py"
    )


def _page(name: str) -> str:
    return PAGES[gen.REFERENCE / name]


def test_every_setting_of_both_services_is_listed_with_its_environment_variable() -> None:
    page = _page("configuration.md")
    for field in msgspec.structs.fields(BrokerSettings):
        assert f"| `{field.name}`" in page
        assert f"`{env_name(field.name)}`" in page
    for field in msgspec.structs.fields(ConnectorSettings):
        assert f"| `{field.name}`" in page
        assert f"`{CONNECTOR_ENV}{field.name.upper()}`" in page


def test_secrets_are_documented_as_secrets_and_never_as_flags() -> None:
    rows = [line for line in _page("configuration.md").splitlines() if "**secret**" in line]
    names = {row.split("`")[1] for row in rows}
    assert {"api_keys", "connector_tokens", "session_secret", "gitlab_client_secret"} <= names
    assert {"token", "llm_api_key"} <= names
    for row in rows:
        assert row.split(" | ")[2] == "—", f"a secret shows a flag: {row}"


def test_every_command_of_both_console_scripts_has_its_help() -> None:
    page = _page("cli.md")
    for heading in (
        "## remotellm-broker",
        "### remotellm-broker serve",
        "### remotellm-broker users add",
        "### remotellm-broker tokens create",
        "## remotellm-connector",
        "### remotellm-connector run",
        "### remotellm-connector check",
    ):
        assert f"\n{heading}\n" in page
    assert "Usage: remotellm-connector run [OPTIONS]" in page
    assert "--broker-url" in page


def test_every_metric_of_both_registries_is_listed() -> None:
    from remotellm_broker.metrics import Metrics as BrokerMetrics
    from remotellm_connector.metrics import Metrics as ConnectorMetrics

    page = _page("metrics.md")
    for registry in (BrokerMetrics().registry, ConnectorMetrics().registry):
        for family in registry.collect():
            assert f"`{family.name}" in page, family.name
    assert "| `remotellm_broker_requests_total` | counter | `model`, `status` |" in page


def test_the_check_mode_names_a_stale_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen, "REFERENCE", tmp_path)
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cli.md",
        "configuration.md",
        "metrics.md",
    ]
    assert gen.main(["--check"]) == 0

#!/usr/bin/env bash
# The whole test suite: every package, the e2e suite with the real llama.cpp server, and the
# browser run of the portal. This is the README's test command (hatch run test:all) and what
# .ci/run executes on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

# --fast (hatch run test:fast): the quick loop, without slow suites, the browser, llama.cpp and
# the Node clients (their npm ci). tests-e2e/test_suite_config.py checks this selection.
FAST_MARKERS="not slow and not browser and not llama and not node and not clients"
fast=0
if [ "${1:-}" = "--fast" ]; then
  fast=1
  shift
  set -- -m "$FAST_MARKERS" "$@"
else
  bash scripts/ensure-system-deps.sh
fi

# Every part runs even when an earlier one failed, so one run shows every failure; the exit
# status is non-zero if any part failed.
failed=()
part() {
  local name=$1
  shift
  echo "== $name"
  if ! "$@"; then
    failed+=("$name")
  fi
}

protocol_tests() {
  coverage run --rcfile=packages/remotellm-protocol/pyproject.toml -m pytest \
    -c packages/remotellm-protocol/pyproject.toml --rootdir=packages/remotellm-protocol \
    -p no:cacheprovider packages/remotellm-protocol/tests "$@" &&
    coverage report --rcfile=packages/remotellm-protocol/pyproject.toml
}
part "remotellm-protocol (100% branch coverage required)" protocol_tests "$@"

for pkg in connector broker; do
  if compgen -G "packages/remotellm-$pkg/tests/test_*.py" >/dev/null; then
    part "remotellm-$pkg" pytest -c "packages/remotellm-$pkg/pyproject.toml" --rootdir="packages/remotellm-$pkg" \
      -p no:cacheprovider "packages/remotellm-$pkg/tests" "$@"
  fi
done

if compgen -G "tests-e2e/test_*.py" >/dev/null; then
  # The real llama.cpp server is built once (~7 min on 2 cores) and cached in
  # ~/.cache/remotellm/llama; doing it here keeps it out of any test's timeout.
  if [ "$fast" = 0 ]; then
    echo "== llama.cpp server for the e2e suite (cached after the first build)"
    python tests-e2e/llama/build_llama_server.py >/dev/null
    python tests-e2e/llama/make_tiny_model.py >/dev/null
    echo "== agent CLIs for the clients suite (cached after the first install)"
    python tests-e2e/agent_clis/install.py >/dev/null
  fi
  part tests-e2e pytest -c tests-e2e/pytest.ini --rootdir=tests-e2e -p no:cacheprovider \
    tests-e2e "$@"
fi

# A tiny W1/W3/W6 through the real processes: exactness only, never timing, so the benchmark
# suite itself cannot rot.
part "bench smoke" pytest -c bench/pytest.ini --rootdir=. -p no:cacheprovider bench "$@"

if [ "$fast" = 0 ] && command -v hatch >/dev/null; then
  part "lint (ruff)" hatch run lint:check
  part "types (mypy --strict)" hatch run types:check
  part "docs site (mkdocs --strict: broken links and anchors fail)" hatch run docs:build --quiet
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "== FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "== all parts passed"

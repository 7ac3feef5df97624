#!/usr/bin/env bash
# The whole test suite: every package, the e2e suite with the real llama.cpp server, and the
# browser run of the portal. This is the README's test command (hatch run test:all) and what
# .ci/run executes on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-system-deps.sh

echo "== remotellm-protocol (100% branch coverage required)"
coverage run --rcfile=packages/remotellm-protocol/pyproject.toml -m pytest \
  -c packages/remotellm-protocol/pyproject.toml --rootdir=packages/remotellm-protocol \
  -p no:cacheprovider packages/remotellm-protocol/tests "$@"
coverage report --rcfile=packages/remotellm-protocol/pyproject.toml

for pkg in connector broker; do
  if compgen -G "packages/remotellm-$pkg/tests/test_*.py" >/dev/null; then
    echo "== remotellm-$pkg"
    pytest -c "packages/remotellm-$pkg/pyproject.toml" --rootdir="packages/remotellm-$pkg" \
      -p no:cacheprovider "packages/remotellm-$pkg/tests" "$@"
  fi
done

if compgen -G "tests-e2e/test_*.py" >/dev/null; then
  # The real llama.cpp server is built once (~7 min on 2 cores) and cached in
  # ~/.cache/remotellm/llama; doing it here keeps it out of any test's timeout.
  echo "== llama.cpp server for the e2e suite (cached after the first build)"
  python tests-e2e/llama/build_llama_server.py >/dev/null
  python tests-e2e/llama/make_tiny_model.py >/dev/null
  echo "== tests-e2e"
  pytest -c tests-e2e/pytest.ini --rootdir=tests-e2e -p no:cacheprovider tests-e2e "$@"
fi

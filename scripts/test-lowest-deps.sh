#!/usr/bin/env bash
# Each package's tests against the LOWEST versions its pyproject allows for every direct
# dependency (runtime and [test] extra), so that a floor such as "aiohttp>=3.9" cannot claim
# a version the code does not work with. CI runs it (.github/workflows/ci.yml, job
# lowest-deps); run it here the same way:
#
#   bash scripts/test-lowest-deps.sh                      # protocol, connector, broker
#   bash scripts/test-lowest-deps.sh connector -- -k link # one package, extra pytest args
#
# Needs uv (pip install uv): `uv pip install --resolution lowest-direct` picks the lowest
# allowed version of each direct dependency and the newest of everything else. Each package
# gets its own throw-away virtualenv with only its own dependencies (as in the CI package
# job), and its tests run as in that job (the browser tests need Chromium: left out).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  packages+=("$1")
  shift
done
[ "${1:-}" = "--" ] && shift
[ ${#packages[@]} -eq 0 ] && packages=(protocol connector broker)

python=${PYTHON:-python3.11}
# selenium pulls in trio, whose hypothesis entry point warns (an error under -W error)
export HYPOTHESIS_NO_PLUGINS=1
command -v uv >/dev/null || { echo "uv is needed: pip install uv" >&2; exit 2; }

failed=()
for pkg in "${packages[@]}"; do
  case $pkg in
    protocol) install=("packages/remotellm-protocol[test]") ;;
    connector | broker) install=(packages/remotellm-protocol "packages/remotellm-$pkg[test]") ;;
    *) echo "unknown package: $pkg (protocol, connector or broker)" >&2; exit 2 ;;
  esac
  venv=$(mktemp -d "${TMPDIR:-/tmp}/lowest-$pkg.XXXXXX")
  echo "== remotellm-$pkg with its lowest direct dependencies ($venv)"
  uv venv --quiet --python "$python" "$venv"
  # --no-config: the resolution must not depend on a developer's uv settings
  uv pip install --quiet --no-config --python "$venv/bin/python" --resolution lowest-direct \
    "${install[@]}"
  # What was installed, for the log: the direct dependencies of the package under test.
  names=$("$venv/bin/python" - "$pkg" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open(f"packages/remotellm-{sys.argv[1]}/pyproject.toml", "rb"))["project"]
deps = project["dependencies"] + project.get("optional-dependencies", {}).get("test", [])
print(" ".join(sorted({re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower() for d in deps})))
EOF
)
  uv pip freeze --quiet --python "$venv/bin/python" | grep -iE "^($(echo "$names" | sed 's/[-_]/[-_]/g; s/ /|/g'))==" |
    tr '\n' ' '
  echo
  if [ "$pkg" = protocol ]; then
    args=(-p no:cacheprovider)
  else
    args=(-p no:cacheprovider -m "not browser")
  fi
  if ! (cd "packages/remotellm-$pkg" && "$venv/bin/python" -m pytest "${args[@]}" "$@"); then
    failed+=("$pkg")
  fi
  rm -rf "$venv"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "== FAILED with the lowest dependencies: ${failed[*]}" >&2
  exit 1
fi
echo "== every package passed with its lowest dependencies"

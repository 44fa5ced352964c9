#!/usr/bin/env bash
# Installs the Debian packages sala builds and tests with, when they are missing.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in libcjson-dev libmicrohttpd-dev clang tmux curl nodejs npm; do
  have "$p" || need+=("$p")
done
# nodejs/npm may come from elsewhere than Debian on some machines: accept working binaries.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${need[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done; need=("${tmp[@]}")
fi
if ((${#need[@]})); then
  echo "install-deps: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

#!/usr/bin/env bash
# Install what the build needs (Debian 12, as root, only what is missing),
# then configure and build spand out of tree in ./build.
# Usage: scripts/setup.sh [extra configure arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential autoconf automake libtool pkg-config python3
          libevent-dev libprotobuf-c-dev protobuf-c-compiler libcunit1-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: run as root (or install these yourself): apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x configure ] || ./autogen.sh >/dev/null
mkdir -p build
cd build
[ -f Makefile ] || ../configure -q "$@"
make -j"$(nproc)" >/dev/null
echo "setup: built in $(pwd)"

#!/usr/bin/env bash
# Set everything up, install the comparators (Debian packages, announced),
# and run the whole benchmark: writes bench/RESULTS.md.  Takes about 10 minutes;
# run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
comparators=(libjemalloc-dev libmimalloc-dev libgoogle-perftools-dev libboost-dev
             iceoryx libiceoryx-binding-c-dev)
missing=()
for p in "${comparators[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing the comparators ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    (cd build && ../configure -q)        # find Boost and iceoryx
    make -C build -j"$(nproc)" >/dev/null
fi
make -C build bench

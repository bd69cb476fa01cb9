#!/usr/bin/env bash
# Set everything up, start spand, let two processes share a linked list
# through the arena, and show what the daemon holds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
b=$PWD/build
dir=$(mktemp -d /tmp/spand-demo.XXXXXX)
export SPAND_SOCKET=$dir/spand.sock
name=/spand-demo-$$
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$dir"
    rm -f "/dev/shm${name}"
}
trap cleanup EXIT

"$b/daemon/spand" --foreground --name "$name" --arena-size 1G 2>"$dir/spand.log" &
pid=$!
for _ in $(seq 50); do "$b/tools/spanctl" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$b/tools/spanctl" ping

echo "== process 1 builds a list in the arena"
head=$("$b/examples/list-build" 100000)
echo "head offset: $head"
echo "== process 2 walks it by raw pointers and frees it"
"$b/examples/list-walk" "$head"
echo "== spanctl stats"
"$b/tools/spanctl" stats

#!/bin/sh
# See shm/layout.h for the overview.
#
# The size-class table is generated (tools/mksizeclasses.py) and checked in:
# regenerate it into a temporary directory and compare with shm/sizeclasses.[ch].
# Exit 77 (automake's SKIP) when python3 is missing.
srcdir=${SPAND_SRCDIR:-${srcdir:-.}/..}
py=${PYTHON3:-}
if [ -z "$py" ]; then
    py=$(command -v python3 2>/dev/null) || true
fi
if [ -z "$py" ] || ! "$py" -c 'import sys' 2>/dev/null; then
    echo "sizeclasses-regen: python3 not found, skipped"
    exit 77
fi
gen="$srcdir/tools/mksizeclasses.py"
if [ ! -f "$gen" ] || [ ! -f "$srcdir/shm/sizeclasses.c" ]; then
    echo "sizeclasses-regen: cannot find the sources under $srcdir" >&2
    exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/spand-regen.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
if ! "$py" "$gen" "$tmp"; then
    echo "sizeclasses-regen: $gen failed" >&2
    exit 1
fi
status=0
for f in sizeclasses.h sizeclasses.c; do
    if ! diff -u "$srcdir/shm/$f" "$tmp/$f"; then
        echo "sizeclasses-regen: shm/$f differs from what tools/mksizeclasses.py makes" >&2
        status=1
    fi
done
[ $status -eq 0 ] && echo "sizeclasses-regen: shm/sizeclasses.[ch] are up to date"
exit $status

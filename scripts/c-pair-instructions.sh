#!/usr/bin/env bash
# Instructions per C malloc+free pair under LD_PRELOAD, counted by callgrind: the C path's
# counterpart of benches/pair_instructions.rs. Runs scripts/c_pair/pair.c with N and 2N
# pairs and divides the difference of the totals by N (start-up and exit cancel out).
#
#   scripts/c-pair-instructions.sh [LIBRARY.so] [SIZE...]
#
# LIBRARY defaults to the release libebbmalloc.so (built first); SIZE to 64.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
if [ $# -ge 1 ] && [[ $1 == *.so || $1 == *.so.* ]]; then
    library=$(realpath "$1"); shift
else
    cargo build --release -p ebbmalloc-capi >&2
    library=$(realpath "$target/release/libebbmalloc.so")
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -fno-builtin-malloc -fno-builtin-free -o "$work/pair" scripts/c_pair/pair.c
pairs=100000
for size in "${@:-64}"; do
    for n in $pairs $((2 * pairs)); do
        LD_PRELOAD=$library valgrind --tool=callgrind --callgrind-out-file="$work/cg.$n" \
            "$work/pair" $n "$size" >/dev/null 2>&1
    done
    t1=$(sed -n 's/^totals: //p' "$work/cg.$pairs")
    t2=$(sed -n 's/^totals: //p' "$work/cg.$((2 * pairs))")
    echo "size $size: $(( (t2 - t1) / pairs )) instructions per C malloc+free pair"
done

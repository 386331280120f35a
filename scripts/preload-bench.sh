#!/usr/bin/env bash
# Runs C and CPython workloads under LD_PRELOAD with ebbmalloc, jemalloc and mimalloc (the
# Debian packages' shared libraries) and with plain glibc, alternating the allocators over
# several rounds, and prints markdown tables: median wall time and peak RSS with ratios to
# mimalloc, and the CPython origin-story RSS timeline.
#
# The C workloads (scripts/preload_workloads/*.c; each file's header says what it models):
#   c-churn          4 threads replacing random slots of their own arrays, 8-512 B
#   c-prodcons       one thread allocates 64 B blocks, another frees them (all frees remote)
#   c-larson         larson-style server churn: 4 threads, 8 B-16 KiB, slot arrays swapped
#                    between threads so most frees are remote
#   c-larson-sized   the same, freeing through C23 free_sized where the allocator has it
#   c-rptest         rpmalloc-benchmark shape: 4 threads, 60% 8-128 B / 30% -1 KiB / 10%
#                    -16 KiB, random lifetimes, a quarter of the blocks freed by the next thread
#   c-alloc-test     one thread with a real program's sizes (16-64 B objects, 64-256 B
#                    strings grown by realloc, a few buffers to 16 KiB), most dying young
#   c-cache-scratch  Hoard's cache-scratch with 2 threads: passive false sharing
#   c-large-reuse    20 live blocks of 5-25 MiB freed and reallocated in a loop
#
#   scripts/preload-bench.sh [ROUNDS]      (default 3; run as root to let it apt-get)
# Honours CARGO_TARGET_DIR for where libebbmalloc.so is built.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release -p ebbmalloc-capi >&2
ebb=${CARGO_TARGET_DIR:-$PWD/target}/release/libebbmalloc.so

lib_dir=/usr/lib/x86_64-linux-gnu
if [ ! -e "$lib_dir/libjemalloc.so.2" ] || [ ! -e "$lib_dir/libmimalloc.so.2" ] || [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing libjemalloc2, libmimalloc2.0 and time from Debian..." >&2
        apt-get update -qq >&2 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 libmimalloc2.0 time >&2 || true
    fi
fi
[ -x /usr/bin/time ] || { echo "error: /usr/bin/time is missing (Debian package 'time')" >&2; exit 1; }

names=(glibc ebbmalloc)
declare -A preload=([glibc]="" [ebbmalloc]="$ebb")
for candidate in "jemalloc:$lib_dir/libjemalloc.so.2" "mimalloc:$lib_dir/libmimalloc.so.2"; do
    name=${candidate%%:*} path=${candidate#*:}
    if [ -e "$path" ]; then
        names+=("$name")
        preload[$name]=$path
    else
        echo "note: $name is not available ($path missing); going on without it" >&2
    fi
done

for program in churn prodcons larson rptest alloc_test cache_scratch large_reuse; do
    cc -O2 -pthread -o "$work/$program" "scripts/preload_workloads/$program.c"
done

declare -A workload=(
    [c-churn]="$work/churn"
    [c-prodcons]="$work/prodcons"
    [c-larson]="$work/larson 4 200"
    [c-larson-sized]="$work/larson 4 200 sized"
    [c-rptest]="$work/rptest 4 1500000"
    [c-alloc-test]="$work/alloc_test 1 6000000"
    [c-cache-scratch]="$work/cache_scratch 2 2000 20000 8"
    [c-large-reuse]="$work/large_reuse 400 0"
    [py-build-drop]="python3 scripts/preload_workloads/build_drop.py"
)
order=(c-churn c-prodcons c-larson c-larson-sized c-rptest c-alloc-test c-cache-scratch
    c-large-reuse py-build-drop)

# results[workload,allocator] = space-separated "seconds:kib" samples
declare -A results
for ((round = 1; round <= rounds; round++)); do
    for w in "${order[@]}"; do
        for name in "${names[@]}"; do
            echo "round $round/$rounds: $w with $name" >&2
            out=$(LD_PRELOAD=${preload[$name]} PYTHONMALLOC=malloc /usr/bin/time -f '%e %M' \
                ${workload[$w]} 2>&1 >/dev/null | tail -n 1)
            results[$w,$name]+="${out/ /:} "
        done
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "## LD_PRELOAD workloads ($rounds rounds, median; ratio to mimalloc)"
echo
echo "| workload | allocator | time (s) | ratio | peak RSS (MiB) | ratio |"
echo "|---|---|---|---|---|---|"
for w in "${order[@]}"; do
    base_t="" base_m=""
    if [[ -n ${results[$w,mimalloc]:-} ]]; then
        base_t=$(for s in ${results[$w,mimalloc]}; do echo -n "${s%%:*} "; done | median)
        base_m=$(for s in ${results[$w,mimalloc]}; do echo -n "${s#*:} "; done | median)
    fi
    for name in "${names[@]}"; do
        t=$(for s in ${results[$w,$name]}; do echo -n "${s%%:*} "; done | median)
        m=$(for s in ${results[$w,$name]}; do echo -n "${s#*:} "; done | median)
        rt="-" rm="-"
        if [[ -n $base_t ]]; then
            rt=$(awk -v a="$t" -v b="$base_t" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
            rm=$(awk -v a="$m" -v b="$base_m" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        fi
        echo "| $w | $name | $t | $rt | $(awk -v k="$m" 'BEGIN { printf "%.0f", k / 1024 }') | $rm |"
    done
done

echo
echo "## CPython origin story: 3 million small objects built and dropped (RSS in MiB)"
echo
echo "| allocator | peak | right after drop | after 100 ms | after 1 s |"
echo "|---|---|---|---|---|"
for name in "${names[@]}"; do
    line=$(LD_PRELOAD=${preload[$name]} PYTHONMALLOC=malloc python3 scripts/preload_workloads/origin.py)
    read -r peak drop t100 t1000 < <(sed -E 's/.*peak=([0-9]+) drop=([0-9]+) 100ms=([0-9]+) 1s=([0-9]+).*/\1 \2 \3 \4/' <<<"$line")
    echo "| $name | $peak | $drop | $t100 | $t1000 |"
done

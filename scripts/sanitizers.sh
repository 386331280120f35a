#!/usr/bin/env bash
# Sanitizer and valgrind runs of ebbmalloc: the tests under AddressSanitizer, an attempt at
# ThreadSanitizer, test binaries under valgrind's memcheck, the stress program under both
# when there is one, and the proof that the `asan` and `valgrind` features make misuse of a
# cached block visible (examples/use_after_free.rs).
#
#   scripts/sanitizers.sh [PART...]     parts: asan tsan memcheck proof stress (default: all)
#
# ASan and TSan builds use the stable toolchain with RUSTC_BOOTSTRAP=1 and
# `--target x86_64-unknown-linux-gnu` (so build scripts and proc macros are not
# instrumented), each in a target directory of its own under target/. Exits non-zero when a
# part fails; TSan fails only on a report with a frame in ebbmalloc (see docs/sanitizers.md,
# "Sanitizers and valgrind").
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
ROOT_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
ASAN_DIR=$ROOT_TARGET_DIR/asan
TSAN_DIR=$ROOT_TARGET_DIR/tsan
# memcheck needs no special build: the usual target directory, whose dependencies the
# ordinary `cargo test` has built already.
VALGRIND_DIR=$ROOT_TARGET_DIR
LOGS=$ROOT_TARGET_DIR/sanitizer-logs
mkdir -p "$LOGS"
# Leak checking of ASan's own (glibc malloc) heap is beside the point here: our blocks are
# not in it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
MEMCHECK=(valgrind --tool=memcheck --error-exitcode=1 --leak-check=full
    --errors-for-leak-kinds=definite --show-leak-kinds=definite)
FAILED=()

say() { printf '\n== %s\n' "$*"; }
fail() {
    echo "FAILED: $*"
    FAILED+=("$*")
}

# cargo with sanitizer $1, target directory $2, subcommand and arguments after, on the stable
# toolchain. `--target` goes right after the subcommand (not after a `--`).
sanitized_cargo() {
    local sanitizer=$1 dir=$2
    shift 2
    RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=$sanitizer ${RUSTFLAGS:-}" \
        CARGO_TARGET_DIR="$dir" cargo "$1" --target "$TARGET" "${@:2}"
}

# The executable of the example, built by the last `cargo build` whose JSON is on stdin.
example_path() {
    sed -n 's/.*"executable":"\([^"]*use_after_free\)".*/\1/p' | tail -n 1
}

# Sums the "N passed; M failed; K ignored" lines of libtest output in file $1.
test_totals() {
    awk '/^test result:/ { for (i = 1; i <= NF; i++) {
            if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i;
            if ($(i+1) ~ /^ignored/) g += $i } }
         END { printf "%d passed, %d failed, %d ignored\n", p, f, g }' "$1"
}

# Tests that cannot run under ASan, with the reason:
# - tests/preload.rs builds libebbmalloc.so and LD_PRELOADs it into C programs, CPython and
#   a shell; an ASan-instrumented library cannot be preloaded into a program that was not
#   built with ASan (the runtime must come first in the link order);
# - five footprint tests of tests/shrinking.rs compare the process's RSS with bounds, and
#   ASan's shadow memory stays resident (an eighth of every byte touched; the shadow of
#   poisoned free blocks is not zero), e.g. "ours 5.4 MiB, VmRSS 109.1 MiB";
# - a_thousand_short_lived_threads_do_not_grow_rss also bounds RSS growth: it runs on its
#   own after the others, since under ASan the tests around it are slow enough to overlap it.
ASAN_TESTS=(--lib --test core --test c_abi_rust --test config_table --test shrinking)
ASAN_SKIP=(--skip dropped_heap_leaves_rss_within_two_seconds
    --skip trim_releases_at_once_without_the_background_thread
    --skip a_parked_thread_keeps_at_most_its_cache_budget
    --skip a_forked_child_keeps_trimming
    --skip exited_threads_memory_returns_without_a_call
    --skip a_thousand_short_lived_threads_do_not_grow_rss)
ASAN_ALONE=a_thousand_short_lived_threads_do_not_grow_rss

part_asan() {
    say "AddressSanitizer: the library's tests with the asan feature"
    local log=$LOGS/asan-tests.log start=$SECONDS
    if sanitized_cargo address "$ASAN_DIR" test -p ebbmalloc --features asan \
        "${ASAN_TESTS[@]}" -- "${ASAN_SKIP[@]}" >"$log" 2>&1 &&
        sanitized_cargo address "$ASAN_DIR" test -p ebbmalloc --features asan \
            --test core -- --exact "$ASAN_ALONE" >>"$log" 2>&1; then
        echo "ok: $(test_totals "$log") in $((SECONDS - start)) s (log: $log)"
    else
        tail -n 40 "$log"
        fail "ASan tests ($(test_totals "$log"); log: $log)"
    fi
}

# ThreadSanitizer. rustc refuses to mix `-Zsanitizer=thread` crates with the uninstrumented
# std ("mixing `-Zsanitizer` will cause an ABI mismatch"); without rust-src std cannot be
# rebuilt, so the mix is forced with -Cunsafe-allow-abi-mismatch=sanitizer. Only the
# library is built by cargo (the dev-dependencies would need the same flags), and
# tests/core.rs, which needs nothing else, is compiled against it with rustc. Skipped:
# the fork test (TSan dies on threads started after a multithreaded fork) and the
# thousand-thread test.
TSAN_FLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer"

part_tsan() {
    say "ThreadSanitizer: tests/core.rs (std is not instrumented: no rust-src)"
    local log=$LOGS/tsan-tests.log start=$SECONDS
    local deps=$TSAN_DIR/$TARGET/debug/deps
    RUSTC_BOOTSTRAP=1 RUSTFLAGS="$TSAN_FLAGS" CARGO_TARGET_DIR=$TSAN_DIR \
        cargo build -p ebbmalloc --target "$TARGET" >"$log" 2>&1
    # shellcheck disable=SC2086 # TSAN_FLAGS is two flags
    RUSTC_BOOTSTRAP=1 rustc --edition 2021 --test -g $TSAN_FLAGS --target "$TARGET" \
        tests/core.rs -o "$TSAN_DIR/core-tsan" -L "dependency=$deps" \
        --extern "ebbmalloc=$(ls -t "$deps"/libebbmalloc-*.rlib | head -n 1)" \
        --extern "libc=$(ls -t "$deps"/liblibc-*.rlib | head -n 1)" >>"$log" 2>&1
    local status=0
    "$TSAN_DIR/core-tsan" --test-threads=1 --skip fork_from_a_multithreaded_process \
        --skip a_thousand_short_lived_threads_do_not_grow_rss >>"$log" 2>&1 || status=$?
    # Per report: does the racing access, and does the previous one, have a frame in
    # ebbmalloc? A free that writes the link of a block another thread read under a std
    # Mutex has one (TSan cannot see the Mutex); a race inside ebbmalloc has both.
    local counts
    counts=$(awk '/WARNING: ThreadSanitizer/ { in_report = 1; part = 1; a = 0; b = 0; n++ }
        in_report && /^  Previous/ { part = 2 }
        in_report && /^  (Thread|Location|Mutex)/ { part = 3 }
        in_report && /ebbmalloc::/ { if (part == 1) a = 1; else if (part == 2) b = 1 }
        in_report && /^SUMMARY: ThreadSanitizer/ { one += (a || b); both += (a && b); in_report = 0 }
        END { printf "%d %d %d", n, one, both }' "$log")
    read -r reports one both <<<"$counts"
    echo "TSan: $(test_totals "$log"), exit status $status, $((SECONDS - start)) s: $reports" \
        "reports, $one with one access in ebbmalloc, $both with both (log: $log)"
    if [ "$both" -gt 0 ]; then
        fail "TSan: $both races between two accesses in ebbmalloc (log: $log)"
    else
        echo "No race between two accesses of ebbmalloc. The others involve std's channels,"
        echo "Mutex and test harness, whose synchronisation TSan cannot see uninstrumented:"
        echo "not counted as failures (see docs/sanitizers.md)."
    fi
}

# Runs the example under a tool and checks what it printed. $1: label, $2: mode, $3: the
# pattern that must appear (empty: the run must succeed and say "not detected"), rest: the
# command.
expect() {
    local label=$1 mode=$2 pattern=$3
    shift 3
    local log=$LOGS/proof-$label-$mode.log
    local status=0
    "$@" "$mode" >"$log" 2>&1 || status=$?
    if [ -z "$pattern" ]; then
        if [ "$status" -eq 0 ] && grep -q "not detected" "$log"; then
            echo "ok: $label $mode: ran to the end, nothing reported"
        else
            fail "$label $mode: expected a clean run (status $status, log $log)"
        fi
    elif [ "$status" -ne 0 ] && grep -Eq "$pattern" "$log"; then
        echo "ok: $label $mode: reported ($(grep -Eo "$pattern" "$log" | head -n 1))"
    else
        tail -n 20 "$log"
        fail "$label $mode: no report matching '$pattern' (status $status, log $log)"
    fi
}

part_proof() {
    say "Proof: misuse of cached blocks is reported with the hooks, missed without"
    local with without
    with=$(sanitized_cargo address "$ASAN_DIR" build -p ebbmalloc --features asan \
        --example use_after_free --message-format=json | example_path)
    for mode in use-after-free large overflow; do
        expect asan "$mode" 'AddressSanitizer: use-after-poison' "$with"
    done
    expect asan clean '' "$with"
    without=$(sanitized_cargo address "$ASAN_DIR" build -p ebbmalloc \
        --example use_after_free --message-format=json | example_path)
    expect asan-without-feature use-after-free '' "$without"

    with=$(CARGO_TARGET_DIR=$VALGRIND_DIR cargo build -p ebbmalloc --features valgrind \
        --example use_after_free --message-format=json | example_path)
    expect memcheck use-after-free "Address 0x[0-9a-f]+ is [0-9,]+ bytes inside a block of size 64 free'd" \
        "${MEMCHECK[@]}" "$with"
    expect memcheck large "Address 0x[0-9a-f]+ is [0-9,]+ bytes inside a block of size [0-9,]+ free'd" \
        "${MEMCHECK[@]}" "$with"
    expect memcheck overflow "Address 0x[0-9a-f]+ is 0 bytes after a block of size 1,024" \
        "${MEMCHECK[@]}" "$with"
    expect memcheck leak "definitely lost: [0-9,]+ bytes in 100 blocks" "${MEMCHECK[@]}" "$with"
    expect memcheck clean '' "${MEMCHECK[@]}" "$with"
    without=$(CARGO_TARGET_DIR=$VALGRIND_DIR cargo build -p ebbmalloc \
        --example use_after_free --message-format=json | example_path)
    expect memcheck-without-feature use-after-free '' "${MEMCHECK[@]}" "$without"
}

# Test binaries run under memcheck one by one, without the leak check: a forked child
# (fork_from_a_multithreaded_process) exits holding blocks of threads that do not exist in
# it, which memcheck rightly calls lost; leak detection is shown by the proof instead.
# a_thousand_short_lived_threads_do_not_grow_rss is skipped: a thousand threads take many
# minutes under valgrind, and it bounds RSS, which valgrind inflates.
MEMCHECK_TESTS=(--lib --test core --test c_abi_rust)
MEMCHECK_SKIP=(--skip a_thousand_short_lived_threads_do_not_grow_rss)
MEMCHECK_NO_LEAKS=(valgrind --tool=memcheck --error-exitcode=1 --leak-check=no)

part_memcheck() {
    say "memcheck: test binaries with the valgrind feature"
    local json=$LOGS/memcheck-build.json
    CARGO_TARGET_DIR=$VALGRIND_DIR cargo test -p ebbmalloc --features valgrind \
        "${MEMCHECK_TESTS[@]}" --no-run --message-format=json >"$json"
    local binaries
    binaries=$(sed -n 's/.*"profile":{[^}]*"test":true}.*"executable":"\([^"]*\)".*/\1/p' "$json")
    for binary in $binaries; do
        local name log start=$SECONDS
        name=$(basename "$binary")
        log=$LOGS/memcheck-$name.log
        if "${MEMCHECK_NO_LEAKS[@]}" "$binary" --test-threads=2 "${MEMCHECK_SKIP[@]}" \
            >"$log" 2>&1; then
            echo "ok: $name: $(test_totals "$log"), no memcheck error," \
                "$((SECONDS - start)) s (log: $log)"
        else
            grep -E '^==[0-9]+== (Invalid|.*uninitialised|.*definitely)' "$log" | head -n 20 || true
            tail -n 20 "$log"
            fail "memcheck $name ($(test_totals "$log"); log: $log)"
        fi
    done
}

# The stress program (stress/, issue 6) under ASan and memcheck for a short run.
STRESS_SECONDS=${STRESS_SECONDS:-20}

part_stress() {
    say "stress program under ASan and memcheck"
    if [ ! -f stress/Cargo.toml ]; then
        echo "skipped: there is no stress/ package in this tree yet. Once there is, this part"
        echo "builds it with ebbmalloc/asan (ASan) and ebbmalloc/valgrind (memcheck) and runs"
        echo "it with --seconds $STRESS_SECONDS --threads 4."
        return
    fi
    local log=$LOGS/stress-asan.log
    if sanitized_cargo address "$ASAN_DIR" run --release -p ebbmalloc-stress --features ebbmalloc/asan \
        -- --seconds "$STRESS_SECONDS" --threads 4 >"$log" 2>&1; then
        echo "ok: stress under ASan: $(tail -n 3 "$log" | tr '\n' ' ')"
    else
        tail -n 30 "$log"
        fail "stress under ASan (log: $log)"
    fi
    log=$LOGS/stress-memcheck.log
    local binary
    binary=$(CARGO_TARGET_DIR=$VALGRIND_DIR cargo build --release -p ebbmalloc-stress \
        --features ebbmalloc/valgrind --message-format=json |
        sed -n 's/.*"executable":"\([^"]*\/stress\)".*/\1/p' | tail -n 1)
    # Leaks do not count here: the program's fork children exit holding blocks that
    # belonged to threads which do not exist in them, which memcheck rightly calls lost
    # (the proof part checks leak reports instead). Every other error fails the run.
    if valgrind --tool=memcheck --error-exitcode=1 --leak-check=summary \
        --errors-for-leak-kinds=none "$binary" --seconds "$STRESS_SECONDS" --threads 4 \
        >"$log" 2>&1; then
        echo "ok: stress under memcheck: $(grep -v '^==' "$log" | tail -n 3 | tr '\n' ' ')"
    else
        tail -n 30 "$log"
        fail "stress under memcheck (log: $log)"
    fi
}

command -v valgrind >/dev/null || {
    echo "valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
}
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(proof asan memcheck tsan stress)
for part in "${parts[@]}"; do
    case $part in
    asan | tsan | memcheck | proof | stress) "part_$part" ;;
    *)
        echo "unknown part $part (asan tsan memcheck proof stress)" >&2
        exit 2
        ;;
    esac
done

say "summary"
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "all parts passed: ${parts[*]}"

#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer) for a fixed time each
# and reports, per target, how many inputs ran and any crash found.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; the targets default to all of them
# (`cargo fuzz list`). Each target grows its corpus in fuzz/corpus/<target>
# (only the seed-* files there are committed) and writes a crashing input to
# fuzz/artifacts/<target>/. Exits non-zero if any target crashed or failed
# to build.
#
# Environment:
#   FUZZ_TOOLCHAIN  rustup toolchain with -Z flags (default: nightly)
#   FUZZ_SANITIZER  address | none | … (default: none: every crate under test
#                   is safe Rust, and without ASan a target runs ~2x faster)
#   FUZZ_JOBS       parallel fuzzing processes per target (default: 1)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz…" >&2
    cargo install cargo-fuzz --locked
fi

cd "$root/fuzz"
fuzz=(cargo "+$toolchain" fuzz)
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi

echo "building ${#targets[@]} target(s) (sanitizer: $sanitizer)…" >&2
for t in "${targets[@]}"; do
    "${fuzz[@]}" build --sanitizer "$sanitizer" "$t" >&2
done

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=0
printf '%-18s %8s %12s %10s  %s\n' target seconds runs exec/s result
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # Crash inputs from earlier campaigns are not this run's findings.
    before="$(find "artifacts/$t" -type f | sort)"
    log="$logs/$t.log"
    status=0
    parallel=()
    if [[ "$jobs" -gt 1 ]]; then
        parallel=(-jobs="$jobs" -workers="$jobs")
    fi
    "${fuzz[@]}" run --sanitizer "$sanitizer" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -close_fd_mask=1 \
        "${parallel[@]}" >"$log" 2>&1 || status=$?
    if [[ "$jobs" -gt 1 ]]; then
        cat fuzz-*.log >>"$log" 2>/dev/null || true
        rm -f fuzz-*.log
    fi
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')"
    rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')"
    new="$(comm -13 <(echo "$before") <(find "artifacts/$t" -type f | sort) | sed '/^$/d')"
    if [[ -n "$new" ]]; then
        result="CRASH: $(echo "$new" | tr '\n' ' ')"
        failed=1
    elif [[ "$status" -ne 0 ]]; then
        result="FAILED (exit $status), log: see below"
        failed=1
    else
        result="ok"
    fi
    printf '%-18s %8s %12s %10s  %s\n' "$t" "$seconds" "$runs" "$rate" "$result"
    if [[ "$result" != ok ]]; then
        # The panic (or sanitizer) message, else the end of the log.
        if grep -q 'panicked at\|ERROR: \(libFuzzer\|AddressSanitizer\)' "$log"; then
            grep -A2 'panicked at\|ERROR: \(libFuzzer\|AddressSanitizer\)' "$log" | head -n 12
        else
            grep -v '^#[0-9]' "$log" | tail -n 20
        fi | sed 's/^/    /' >&2
        echo "    reproduce: (cd fuzz && cargo +$toolchain fuzz run --sanitizer $sanitizer $t <artifact>)" >&2
    fi
done
exit "$failed"

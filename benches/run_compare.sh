#!/usr/bin/env bash
# Whole-program comparison for the run engine: `dstack run` of N trivial jobs (`true`) in a
# fan-out with -j 2, against a raw shell loop that spawns the same N `sh -c true` processes,
# measured in the same run. Prints the ratio (the issue's target: <= 1.2x).
#
#   bash benches/run_compare.sh [N] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
rounds=${2:-5}

cargo build --release --quiet -p examples
dstack=$PWD/target/release/dstack
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/.dstack"
{
    echo "workflows:"
    deps=""
    for i in $(seq 1 "$n"); do
        echo "  - {name: t$i, provider: docker, image: busybox, commands: [true]}"
        deps="$deps${deps:+, }t$i"
    done
    echo "  - {name: all, provider: docker, image: busybox, commands: [true], depends-on: [$deps]}"
} > "$dir/.dstack/workflows.yaml"

now() { date +%s%N; }
best_loop=; best_run=
for r in $(seq 1 "$rounds"); do
    t0=$(now)
    for _ in $(seq 1 "$((n + 1))"); do sh -c true; done
    t1=$(now)
    rm -rf "$dir/.dstack/state"
    "$dstack" -C "$dir" run all -j 2 --executor local > /dev/null 2>&1
    t2=$(now)
    l=$(( (t1 - t0) / 1000000 )); d=$(( (t2 - t1) / 1000000 ))
    printf 'round %d: shell loop %d ms, dstack run %d ms\n' "$r" "$l" "$d"
    if [[ -z $best_loop || $l -lt $best_loop ]]; then best_loop=$l; fi
    if [[ -z $best_run || $d -lt $best_run ]]; then best_run=$d; fi
done
printf '\n%d jobs, -j 2, best of %d: shell loop %d ms, dstack run %d ms, ratio %s (load average %s)\n' \
    "$((n + 1))" "$rounds" "$best_loop" "$best_run" \
    "$(awk -v a="$best_run" -v b="$best_loop" 'BEGIN {printf "%.2fx", a / b}')" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"

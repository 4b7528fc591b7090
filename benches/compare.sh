#!/usr/bin/env bash
# Whole-program comparison: `dstack plan LAST --format json` on generated projects, against
# baselines measured in the same run:
#   - parse-untyped: read the same two YAML files into serde_yaml_ng::Value and stop (the
#     issue's target: dstack plan within 2x of it);
#   - snakemake -n on the equivalent Snakefile;
#   - dvc repro --dry on the equivalent dvc.yaml.
# Snakemake and DVC are optional: a missing one is reported as "not installed". They are
# looked up on PATH, then in $VENV/bin (default /tmp/bench-venv, made by
# `python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install snakemake dvc`).
#
# Usage: bash benches/compare.sh
# Environment:
#   SIZES ("1000 5000"), SHAPES ("chain random"): the projects, made by `gen`;
#   RUNS (20, after 3 warm-up runs): for dstack and parse-untyped;
#   BASELINE_RUNS (3, no warm-up): for snakemake and dvc; a baseline whose first run takes over
#     a minute is reported from that one run;
#   BASELINE_TIMEOUT (300): a baseline whose first run takes longer is reported as "> 300 s";
#   WORK (a new temporary folder), VENV (/tmp/bench-venv);
#   HYPERFINE (found on PATH): set it empty to time with a bash loop and `date +%s%N` instead.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZES=${SIZES:-"1000 5000"}
SHAPES=${SHAPES:-"chain random"}
RUNS=${RUNS:-20}
BASELINE_RUNS=${BASELINE_RUNS:-3}
BASELINE_TIMEOUT=${BASELINE_TIMEOUT:-300}
VENV=${VENV:-/tmp/bench-venv}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/dstack-compare.XXXXXX")}
export DVC_NO_ANALYTICS=1

log() { printf '%s\n' "$*" >&2; }

cd "$ROOT"
log "building the release binaries (cargo build --release -p examples -p benches --bins)"
cargo build --release --quiet -p examples -p benches --bins
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
DSTACK=$BIN/dstack
GEN=$BIN/gen
UNTYPED=$BIN/parse-untyped

# A tool from PATH, else from the venv; empty when neither has it.
find_tool() {
    if command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
    elif [[ -x "$VENV/bin/$1" ]]; then
        printf '%s\n' "$VENV/bin/$1"
    fi
}
SNAKEMAKE=$(find_tool snakemake)
DVC=$(find_tool dvc)
# Plain `snakemake -n` fails on a chain of a few hundred rules ("RecursionError: maximum
# recursion depth exceeded" while building the DAG): run its CLI with Python's recursion limit
# raised, with the interpreter its launcher names.
SNAKEMAKE_RUN=""
if [[ -n "$SNAKEMAKE" ]]; then
    snake_python=$(head -n 1 "$SNAKEMAKE" | sed -n 's/^#! *//p' | awk '{ print $1 }')
    SNAKEMAKE_RUN="'${snake_python:-python3}' -c 'import sys; sys.setrecursionlimit(10**6); sys.argv[0] = \"snakemake\"; from snakemake.cli import main; sys.exit(main())'"
fi
HYPERFINE=${HYPERFINE-$(find_tool hyperfine)}

# measure MODE RUNS WARMUP COMMAND: prints "MEAN CPU", the mean wall time and the mean user +
# system time of COMMAND in seconds (CPU is "-" without hyperfine). MODE `exec` runs COMMAND's
# words directly (no shell: for the fast programs, where a shell's start would show), MODE
# `shell` runs it with `sh -c`. Output is discarded either way.
measure() {
    local mode=$1 runs=$2 warmup=$3 cmd=$4
    if [[ -n "$HYPERFINE" ]]; then
        local csv
        local -a shell=()
        [[ $mode == exec ]] && shell=(--shell=none)
        csv=$(mktemp "$WORK/hyperfine.XXXXXX.csv")
        if ! "$HYPERFINE" "${shell[@]}" --style none --runs "$runs" --warmup "$warmup" \
            --export-csv "$csv" --command-name bench "$cmd" >/dev/null 2>"$WORK/hyperfine.err"; then
            cat "$WORK/hyperfine.err" >&2
            exit 1
        fi
        awk -F, 'NR == 2 { printf "%s %.6f\n", $2, $5 + $6 }' "$csv"
        rm -f "$csv"
    else
        local i start end total=0
        local -a words
        read -ra words <<<"$cmd"
        run_once() {
            if [[ $mode == exec ]]; then "${words[@]}"; else sh -c "$cmd"; fi >/dev/null 2>&1
        }
        for ((i = 0; i < warmup; i++)); do run_once; done
        for ((i = 0; i < runs; i++)); do
            start=$(date +%s%N)
            run_once
            end=$(date +%s%N)
            total=$((total + end - start))
        done
        awk -v t="$total" -v n="$runs" 'BEGIN { printf "%.6f -\n", t / n / 1e9 }'
    fi
}

# human SECONDS: "7.9 ms" or "2.27 s".
human() {
    awk -v s="$1" 'BEGIN { if (s < 1) printf "%.1f ms", s * 1000; else printf "%.2f s", s }'
}

# ratio A B: A / B, with two decimals below 10 and none above.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { r = a / b; if (r < 10) printf "%.2f", r; else printf "%.0f", r }'
}

# check COMMAND: runs it once (with sh) and stops the script with its output when it fails.
check() {
    local out
    if ! out=$(sh -c "$1" 2>&1 >/dev/null); then
        log "failed: $1"
        log "$out"
        exit 1
    fi
}

# baseline COMMAND: prints the mean wall time of COMMAND in seconds and how many runs it is
# the mean of, or "timeout 0" when the first run exceeds BASELINE_TIMEOUT seconds.
baseline() {
    local cmd=$1 start end rc=0 elapsed
    start=$(date +%s%N)
    timeout --kill-after=10 "$BASELINE_TIMEOUT" sh -c "$cmd" >/dev/null 2>"$WORK/baseline.err" || rc=$?
    end=$(date +%s%N)
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        echo "timeout 0"
        return
    elif [[ $rc -ne 0 ]]; then
        log "failed ($rc): $cmd"
        tail -n 20 "$WORK/baseline.err" >&2
        exit 1
    fi
    elapsed=$(awk -v t="$((end - start))" 'BEGIN { printf "%.6f", t / 1e9 }')
    if awk -v e="$elapsed" 'BEGIN { exit !(e > 60) }' || [[ $BASELINE_RUNS -le 1 ]]; then
        echo "$elapsed 1"
    else
        local measured
        measured=$(measure shell "$BASELINE_RUNS" 0 "$cmd")
        echo "${measured%% *} $BASELINE_RUNS"
    fi
}

# cells SECONDS RUNS OURS: the table cells "time" and "ratio to ours" of a baseline.
cells() {
    if [[ $1 == timeout ]]; then
        printf '> %s s (timed out) | > %sx\n' "$BASELINE_TIMEOUT" "$(ratio "$BASELINE_TIMEOUT" "$3")"
    else
        local note=""
        [[ $2 -eq 1 ]] && note=" (1 run)"
        printf '%s%s | %sx\n' "$(human "$1")" "$note" "$(ratio "$1" "$3")"
    fi
}

log "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
log "timer: ${HYPERFINE:-bash loop with date +%s%N}; runs: dstack/parse-untyped $RUNS (3 warm-up), snakemake/dvc $BASELINE_RUNS (no warm-up)"
log "snakemake: ${SNAKEMAKE:-not installed}${SNAKEMAKE:+ ($("$SNAKEMAKE" --version))}"
log "dvc: ${DVC:-not installed}${DVC:+ ($("$DVC" --version))}"
log "projects in $WORK"

rows=()
for n in $SIZES; do
    for shape in $SHAPES; do
        dir=$WORK/$shape-$n
        info=$("$GEN" --n "$n" --shape "$shape" --out "$dir")
        last=$(sed -n 's/^last=//p' <<<"$info")
        jobs=$(sed -n 's/^jobs=//p' <<<"$info")
        stages=$(sed -n 's/^stages=//p' <<<"$info")
        log "== $n workflows, $shape: plan of $last has $jobs jobs in $stages stages"

        ours_cmd="$DSTACK -C $dir plan $last --format json"
        check "$ours_cmd"
        read -r ours ours_cpu <<<"$(measure exec "$RUNS" 3 "$ours_cmd")"
        log "dstack plan: $(human "$ours")"

        untyped_cmd="$UNTYPED $dir"
        check "$untyped_cmd"
        read -r untyped _ <<<"$(measure exec "$RUNS" 3 "$untyped_cmd")"
        log "parse-untyped: $(human "$untyped")"

        snake_cells="not installed | -"
        if [[ -n "$SNAKEMAKE" ]]; then
            result=$(baseline "exec $SNAKEMAKE_RUN -n --cores 1 -d '$dir' -s '$dir/Snakefile' out/$last.done")
            read -r snake snake_runs <<<"$result"
            snake_cells=$(cells "$snake" "$snake_runs" "$ours")
            log "snakemake -n: ${snake_cells%% |*}"
        fi

        dvc_cells="not installed | -"
        if [[ -n "$DVC" ]]; then
            if [[ ! -d "$dir/.dvc" ]]; then
                (cd "$dir" && git init -q && "$DVC" init -q)
            fi
            # `dvc repro --dry` stops at the first dependency that does not exist ("No such
            # file or directory"), as every intermediate output is in a dry run: create them
            # (empty) for DVC only, and remove them afterwards so that Snakemake still sees
            # everything to do.
            mkdir -p "$dir/out"
            for ((i = 1; i <= n; i++)); do
                printf -v file 'step-%05d.done' "$i"
                : >"$dir/out/$file"
            done
            result=$(baseline "cd '$dir' && exec '$DVC' repro --dry $last")
            read -r dvc_time dvc_runs <<<"$result"
            rm -rf "$dir/out"
            dvc_cells=$(cells "$dvc_time" "$dvc_runs" "$ours")
            log "dvc repro --dry: ${dvc_cells%% |*}"
        fi

        # The issue's targets: 8 ms for 1,000 workflows (and fewer), 25 ms for 5,000; linear
        # between them, proportional beyond.
        target=$(awk -v n="$n" 'BEGIN { if (n <= 1000) print 0.008; else if (n <= 5000) print 0.008 + (n - 1000) * 0.017 / 4000; else print 0.025 * n / 5000 }')
        if awk -v a="$ours" -v t="$target" 'BEGIN { exit !(a <= t) }'; then met=met; else met=missed; fi
        vs_untyped=$(ratio "$ours" "$untyped")
        if awk -v r="$vs_untyped" 'BEGIN { exit !(r <= 2) }'; then met2=met; else met2=missed; fi
        cpu_cell="-"
        [[ $ours_cpu != - ]] && cpu_cell=$(human "$ours_cpu")
        rows+=("| $n | $shape | $jobs / $stages | $(human "$ours") (≤ $(human "$target"): $met) | $cpu_cell | $(human "$untyped") | ${vs_untyped}x (≤ 2x: $met2) | $snake_cells | $dvc_cells |")
    done
done

echo
echo "| workflows | shape | jobs / stages | dstack plan --format json (wall) | dstack user+sys | parse-untyped | dstack / untyped | snakemake -n | snakemake / dstack | dvc repro --dry | dvc / dstack |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"

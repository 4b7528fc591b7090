#!/usr/bin/env bash
# Whole-program comparisons for the Docker executor, against the `docker` command doing the same
# containers, measured in the same run (best of ROUNDS, alternating):
#
# 1. a chain of 20 trivial containers (each job depends on the previous one) against a shell
#    loop of `docker run --rm IMAGE sh -c :` (target: <= 1.1x);
# 2. 20 independent trivial containers with `-j 2` against
#    `seq 20 | xargs -P2 docker run --rm IMAGE sh -c :` (target: <= 1.1x);
# 3. a job that prints 500 MB (5 million lines of 100 bytes): its throughput into the log store
#    (target: >= 100 MB/s) and the peak RSS of the `dstack` process (target: < 64 MB), against
#    `docker run --rm IMAGE ... > /dev/null` (the docker client reading the same output);
# 4. handing a 1 GiB artifact to a container against handing it a 1-byte one (bind mounts:
#    the time must not depend on the size).
#
#   bash scripts/setup-docker.sh        # an engine and the test image
#   bash benches/docker_compare.sh [ROUNDS]
#   SECTIONS="1 3" bash benches/docker_compare.sh 5     # only some of them
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
sections=" ${SECTIONS:-1 2 3 4} "
want() { [[ $sections == *" $1 "* ]]; }
image=dstack-busybox:test

docker image inspect "$image" >/dev/null 2>&1 ||
    { echo "needs the image $image: run bash scripts/setup-docker.sh" >&2; exit 1; }
cargo build --release --quiet -p examples
dstack=$PWD/target/release/dstack
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export DSTACK_NO_GIT=1 NO_COLOR=1

project() { # NAME, then the workflows on stdin
    mkdir -p "$dir/$1/.dstack"
    cat >"$dir/$1/.dstack/workflows.yaml"
}
{
    echo "workflows:"
    for i in $(seq 1 20); do
        if [[ $i -eq 1 ]]; then dep=""; else dep=", depends-on: [c$((i - 1))]"; fi
        echo "  - {name: c$i, provider: docker, image: $image, commands: [':']$dep}"
    done
} | project chain
{
    echo "workflows:"
    deps=""
    for i in $(seq 1 20); do
        echo "  - {name: p$i, provider: docker, image: $image, commands: [':']}"
        deps="$deps${deps:+, }p$i"
    done
    # A last job that needs them all, as the target of the run; trivial like the others.
    echo "  - {name: all, provider: docker, image: $image, commands: [':'], depends-on: [$deps]}"
} | project fanout
project logs <<EOF
workflows:
  - name: chatty
    provider: docker
    image: $image
    commands:
      - yes \$(printf '%099d' 0) | head -c 500000000
EOF
project handover <<EOF
workflows:
  - name: big
    provider: docker
    image: $image
    commands: [mkdir -p data, head -c 1073741824 /dev/zero > data/blob]
    artifacts: [data]
  - name: small
    provider: docker
    image: $image
    commands: [mkdir -p data, printf x > data/blob]
    artifacts: [data]
  - name: use-big
    provider: docker
    image: $image
    depends-on: [big]
    commands: [test -f data/blob]
  - name: use-small
    provider: docker
    image: $image
    depends-on: [small]
    commands: [test -f data/blob]
EOF

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }
run() { # PROJECT WORKFLOW [ARGS...]
    local p=$1; shift
    rm -rf "$dir/$p/.dstack/state"
    "$dstack" -C "$dir/$p" run "$@" --executor docker >/dev/null 2>"$dir/err" ||
        { cat "$dir/err" >&2; exit 1; }
}
left() { docker ps -aq --filter label=dstack.store | wc -l; }

if want 1; then
echo "== 1. chain of 20 containers"
best_a=; best_b=
for r in $(seq 1 "$rounds"); do
    t0=$(now)
    for _ in $(seq 1 20); do docker run --rm "$image" sh -c : ; done
    t1=$(now)
    run chain c20
    t2=$(now)
    a=$(ms "$t0" "$t1"); b=$(ms "$t1" "$t2")
    printf 'round %d: shell loop of docker run %d ms, dstack run %d ms\n' "$r" "$a" "$b"
    [[ -z $best_a || $a -lt $best_a ]] && best_a=$a
    [[ -z $best_b || $b -lt $best_b ]] && best_b=$b
done
printf 'chain of 20, best of %d: docker run loop %d ms, dstack %d ms, ratio %s\n\n' \
    "$rounds" "$best_a" "$best_b" "$(ratio "$best_b" "$best_a")"

fi
if want 2; then
echo "== 2. 20 independent containers, -j 2"
best_a=; best_b=
for r in $(seq 1 "$rounds"); do
    t0=$(now)
    # 21 containers on both sides: dstack's target job is one more.
    seq 1 21 | xargs -P2 -I{} docker run --rm "$image" sh -c :
    t1=$(now)
    run fanout all -j 2
    t2=$(now)
    a=$(ms "$t0" "$t1"); b=$(ms "$t1" "$t2")
    printf 'round %d: xargs -P2 docker run %d ms, dstack run -j 2 %d ms\n' "$r" "$a" "$b"
    [[ -z $best_a || $a -lt $best_a ]] && best_a=$a
    [[ -z $best_b || $b -lt $best_b ]] && best_b=$b
done
printf '21 containers -j 2, best of %d: xargs %d ms, dstack %d ms, ratio %s\n\n' \
    "$rounds" "$best_a" "$best_b" "$(ratio "$best_b" "$best_a")"

fi
if want 3; then
echo "== 3. 500 MB of output"
best_a=; best_b=; rss=0
for r in $(seq 1 "$rounds"); do
    t0=$(now)
    docker run --rm "$image" sh -c "yes \$(printf '%099d' 0) | head -c 500000000" >/dev/null
    t1=$(now)
    rm -rf "$dir/logs/.dstack/state"
    /usr/bin/time -f '%M %U %S' -o "$dir/rss" "$dstack" -C "$dir/logs" run chatty --executor docker \
        >/dev/null 2>"$dir/err" || { cat "$dir/err" >&2; exit 1; }
    t2=$(now)
    a=$(ms "$t0" "$t1"); b=$(ms "$t1" "$t2")
    read -r kib user sys <"$dir/rss"; m=$(( kib / 1024 ))
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
    size=$(du -sb "$dir/logs/.dstack/state/runs"/*/logs | cut -f1)
    printf 'round %d: docker run > /dev/null %d ms, dstack run %d ms (%d MB/s), dstack CPU %s s, max RSS %d MiB, log %d bytes\n' \
        "$r" "$a" "$b" $(( 500000 / b )) "$cpu" "$m" "$size"
    [[ -z $best_a || $a -lt $best_a ]] && best_a=$a
    [[ -z $best_b || $b -lt $best_b ]] && best_b=$b
    [[ $m -gt $rss ]] && rss=$m
done
printf '500 MB, best of %d: docker run %d ms (%d MB/s), dstack %d ms (%d MB/s), ratio %s; largest max RSS of dstack %d MiB\n\n' \
    "$rounds" "$best_a" $(( 500000 / best_a )) "$best_b" $(( 500000 / best_b )) \
    "$(ratio "$best_b" "$best_a")" "$rss"

fi
if want 4; then
echo "== 4. handing over 1 GiB against 1 byte"
rm -rf "$dir/handover/.dstack/state"
"$dstack" -C "$dir/handover" run big --executor docker >/dev/null 2>&1
"$dstack" -C "$dir/handover" run small --executor docker >/dev/null 2>&1
"$dstack" -C "$dir/handover" tag "$("$dstack" -C "$dir/handover" ps -a --format json |
    python3 -c 'import json,sys; print([r["name"] for r in json.load(sys.stdin) if r["workflow"]=="big"][0])')" big-data
"$dstack" -C "$dir/handover" tag "$("$dstack" -C "$dir/handover" ps -a --format json |
    python3 -c 'import json,sys; print([r["name"] for r in json.load(sys.stdin) if r["workflow"]=="small"][0])')" small-data
sed -i 's/depends-on: \[big\]/depends-on: [big:big-data]/; s/depends-on: \[small\]/depends-on: [small:small-data]/' \
    "$dir/handover/.dstack/workflows.yaml"
best_a=; best_b=
for r in $(seq 1 "$rounds"); do
    t0=$(now)
    "$dstack" -C "$dir/handover" run use-small --executor docker >/dev/null 2>&1
    t1=$(now)
    "$dstack" -C "$dir/handover" run use-big --executor docker >/dev/null 2>&1
    t2=$(now)
    a=$(ms "$t0" "$t1"); b=$(ms "$t1" "$t2")
    printf 'round %d: 1-byte input %d ms, 1 GiB input %d ms\n' "$r" "$a" "$b"
    [[ -z $best_a || $a -lt $best_a ]] && best_a=$a
    [[ -z $best_b || $b -lt $best_b ]] && best_b=$b
done
printf 'hand-over, best of %d: 1 byte %d ms, 1 GiB %d ms, ratio %s\n\n' \
    "$rounds" "$best_a" "$best_b" "$(ratio "$best_b" "$best_a")"

fi

printf 'containers left by dstack: %d (load average %s)\n' "$(left)" "$(cut -d' ' -f1-3 /proc/loadavg)"

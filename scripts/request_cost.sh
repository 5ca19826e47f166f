#!/usr/bin/env bash
# What one request costs, hop by hop: a server and a mount over loopback, then
#   - 4 KiB random reads (fio, 4 jobs, O_DIRECT, 5 s) of a file the server has cached, and
#   - small creates (2,000 files of 100 bytes: open O_CREAT, write, close),
# with, per operation: thread wakeups (context switches) and CPU microseconds of fsmount's
# FUSE reader thread, of its runtime threads and of fsserver; system calls of each process
# (when perf is installed); and the whole machine's CPU, the rest being the application and
# the kernel's FUSE and TCP work done on its behalf.
#   scripts/request_cost.sh      FSXP_BIN=DIR takes fsserver/fsmount from DIR;
#                                PLAIN=1 mounts without TLS.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages fusermount3:fuse3 fio:fio python3:python3
ensure_fuse_device
cargo build --release --quiet -p fsserver -p fsmount
bin=${FSXP_BIN:-$PWD/target/release}
D=$(mktemp -d /var/tmp/fsxp-cost.XXXXXX)
pids=()
cleanup() {
    grep -qs " $D/mnt " /proc/mounts && { fusermount3 -u "$D/mnt" 2>/dev/null || umount -l "$D/mnt"; }
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT INT TERM
mkdir -p "$D/src" "$D/mnt"
srv=() mnt=
[ "${PLAIN:-0}" = 1 ] && { srv=(--plaintext); mnt=,plaintext; }
"$bin/fsserver" --listen 127.0.0.1:0 --export "cost=$D/src" --no-root-squash cost "${srv[@]}" \
    --token-file "$D/token" >"$D/server.out" 2>"$D/server.log" & pids+=($!)
server=$!
for _ in $(seq 100); do grep -q listening "$D/server.out" 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's/^fsserver: listening on //p' "$D/server.out")
"$bin/fsmount" "$addr:/cost" "$D/mnt" -o "token_file=$D/token$mnt" -f 2>"$D/mount.log" & pids+=($!)
mount=$!
for _ in $(seq 100); do grep -qs " $D/mnt " /proc/mounts && break; sleep 0.05; done

# Per thread group: context switches and CPU ticks, summed over its threads.
groups() {
    local p t
    for p in "$mount" "$server"; do
        for t in /proc/"$p"/task/*; do
            local name; name=$(cat "$t/comm" 2>/dev/null) || continue
            case "$p:$name" in
                "$mount:fuser-"*) name="fsmount FUSE reader" ;;
                "$mount:"*) name="fsmount runtime" ;;
                *) name="fsserver" ;;
            esac
            echo "$name|$(awk '/ctxt_switches/ {s += $2} END {print s}' "$t/status")|$(awk '{print $14 + $15}' "$t/stat")"
        done
    done | awk -F'|' '{s[$1] += $2; c[$1] += $3} END {for (k in s) print k "|" s[k] "|" c[k]}'
}
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
hz=$(getconf CLK_TCK)
# measure NAME OPS_FILE CMD...: runs CMD (which writes how many operations it made to
# OPS_FILE) and prints one table row per thread group.
measure() {
    local name=$1 ops_file=$2; shift 2
    local perf_out="$D/perf.$RANDOM"
    groups >"$D/g0"; local m0; m0=$(machine_ticks)
    if command -v perf >/dev/null; then
        perf stat -x, -e raw_syscalls:sys_enter -p "$mount" -o "$perf_out.m" &
        local pm=$!
        perf stat -x, -e raw_syscalls:sys_enter -p "$server" -o "$perf_out.s" &
        local ps=$!
        sleep 0.2
    fi
    "$@"
    if command -v perf >/dev/null; then kill -INT "$pm" "$ps"; wait "$pm" "$ps" 2>/dev/null || true; fi
    groups >"$D/g1"; local m1; m1=$(machine_ticks)
    local ops; ops=$(cat "$ops_file")
    local sm=n/a ss=n/a
    if [ -s "$perf_out.m" ]; then
        sm=$(awk -F, -v n="$ops" '/sys_enter/ {printf "%.1f", $1 / n}' "$perf_out.m")
        ss=$(awk -F, -v n="$ops" '/sys_enter/ {printf "%.1f", $1 / n}' "$perf_out.s")
    fi
    join -t'|' <(sort "$D/g0") <(sort "$D/g1") | sort | while IFS='|' read -r g s0 c0 s1 c1; do
        local sys=
        case "$g" in fsserver) sys=$ss ;; "fsmount runtime") sys="$sm (whole fsmount)" ;; *) sys="" ;; esac
        awk -v g="$g" -v n="$ops" -v ds=$((s1 - s0)) -v dc=$((c1 - c0)) -v hz="$hz" -v sys="$sys" -v w="$name" \
            'BEGIN {printf "| %s | %s | %.2f | %.1f | %s |\n", w, g, ds / n, dc * 1e6 / hz / n, sys}'
    done
    awk -v n="$ops" -v d=$((m1 - m0)) -v hz="$hz" -v w="$name" \
        'BEGIN {printf "| %s | whole machine | | %.1f | |\n", w, d * 1e6 / hz / n}'
}

dd if=/dev/urandom of="$D/mnt/big" bs=1M count=512 conv=fsync status=none
cat "$D/src/big" >/dev/null # in the server's page cache
random_reads() {
    fio --name=r --filename="$D/mnt/big" --rw=randread --bs=4k --direct=1 --numjobs=4 \
        --ioengine=psync --runtime=5 --time_based --group_reporting --output-format=terse \
        --terse-version=3 2>/dev/null | awk -F';' '{print $6 / 4}' >"$D/ops" # KiB read / 4
}
creates() {
    python3 - "$D/mnt/small" <<'PY' >"$D/ops"
import os, sys
d = sys.argv[1]
os.mkdir(d)
for i in range(2000):
    fd = os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    os.write(fd, b"x" * 100)
    os.close(fd)
print(2000)
PY
    # Until the server has answered all of them (answered locally under a lease, they go
    # behind).
    "$bin/fsmount" sync "$D/mnt" >/dev/null
}
echo "| workload | where | context switches per op | CPU us per op | system calls per op |"
echo "|---|---|---|---|---|"
measure "4 KiB random read" "$D/ops" random_reads
measure "small create (open, write 100 B, close)" "$D/ops" creates

#!/usr/bin/env bash
# Side-by-side benchmark: fsmount against the FUSE limit (bindfs over the same disk) and the
# peer users would pick (sshfs over loopback), plus the local disk. Each workload runs
# RUNS times per filesystem (default 5); the table gives medians and ratios.
#   scripts/bench.sh [RUNS]        writes the table to stdout and target/bench/results.md
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
runs=${1:-5}
ensure_packages fusermount3:fuse3 bindfs:bindfs sshfs:sshfs sshd:openssh-server ssh-keygen:openssh-client
ensure_fuse_device
cargo build --release --quiet -p fsserver -p fsmount
bin=$PWD/target/release

B=$(mktemp -d /var/tmp/fsxp-bench.XXXXXX)
pids=()
mounts=()
cleanup() {
    for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$B"
}
trap cleanup EXIT INT TERM

wait_mounted() { for _ in $(seq 200); do grep -qs " $1 " /proc/mounts && return 0; sleep 0.05; done; echo "mount of $1 failed" >&2; exit 1; }

# local: the disk itself
mkdir -p "$B/local"
# bindfs over the same disk
mkdir -p "$B/bindfs-src" "$B/bindfs"
bindfs "$B/bindfs-src" "$B/bindfs"; mounts+=("$B/bindfs"); wait_mounted "$B/bindfs"
# sshfs over loopback: a private sshd on a free port with a throwaway key
mkdir -p "$B/sshfs-src" "$B/sshfs" "$B/ssh" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$B/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$B/ssh/client_key"
cp "$B/ssh/client_key.pub" "$B/ssh/authorized_keys"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$B/ssh/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $B/ssh/host_key
AuthorizedKeysFile $B/ssh/authorized_keys
PermitRootLogin yes
StrictModes no
PasswordAuthentication no
Subsystem sftp internal-sftp
CFG
/usr/sbin/sshd -D -f "$B/ssh/sshd_config" 2>"$B/ssh/sshd.log" & pids+=($!)
sleep 0.5
sshfs -p "$port" -o IdentityFile="$B/ssh/client_key",StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null \
    "root@127.0.0.1:$B/sshfs-src" "$B/sshfs"; mounts+=("$B/sshfs"); wait_mounted "$B/sshfs"
# fsmount over loopback
mkdir -p "$B/fsxp-src" "$B/fsmount"
"$bin/fsserver" --listen 127.0.0.1:0 --export "bench=$B/fsxp-src" --token-file "$B/token" >"$B/server.out" 2>"$B/server.log" & pids+=($!)
for _ in $(seq 100); do grep -q listening "$B/server.out" 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's/^fsserver: listening on //p' "$B/server.out")
"$bin/fsmount" "$addr:/bench" "$B/fsmount" -o "token_file=$B/token"; mounts+=("$B/fsmount")

# Inputs, from tmpfs so the source is never the bottleneck.
src=$(mktemp -d /dev/shm/fsxp-bench.XXXXXX)
head -c $((256 << 20)) /dev/urandom >"$src/big"
mkdir -p "$src/small"; for i in $(seq 1000); do head -c 4096 /dev/urandom >"$src/small/f$i"; done
tar -cf "$src/small.tar" -C "$src" small
trap 'rm -rf "$src"; cleanup' EXIT INT TERM

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
# time_it CMD...: seconds the command took.
time_it() { local t0; t0=$(now); "$@" >/dev/null; echo "$(now) $t0" | awk '{printf "%.3f", $1 - $2}'; }

declare -A result
workloads=("write 256 MiB (dd 1M, fsync)" "read 256 MiB cold (dd 1M)" "untar 1000 x 4 KiB" "ls -l 1000 entries cold" "rm -r 1000 files")
fss=(local bindfs sshfs fsmount)
for fs in "${fss[@]}"; do
    d="$B/$fs"
    for w in "${workloads[@]}"; do result["$fs|$w"]=""; done
    for r in $(seq "$runs"); do
        rm -rf "${d:?}"/*; drop_caches
        result["$fs|${workloads[0]}"]+="$(time_it dd if="$src/big" of="$d/big" bs=1M conv=fsync status=none) "
        drop_caches
        result["$fs|${workloads[1]}"]+="$(time_it dd if="$d/big" of=/dev/null bs=1M status=none) "
        result["$fs|${workloads[2]}"]+="$(time_it tar -xf "$src/small.tar" -C "$d") "
        drop_caches
        result["$fs|${workloads[3]}"]+="$(time_it ls -l "$d/small") "
        result["$fs|${workloads[4]}"]+="$(time_it rm -r "$d/small") "
    done
    echo "measured $fs" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mkdir -p target/bench
{
    echo "Medians of $runs runs, seconds (lower is better); ratio = fsmount time / peer time."
    echo
    echo "| workload | local disk | bindfs | sshfs | fsmount | fsmount/bindfs | fsmount/sshfs |"
    echo "|---|---|---|---|---|---|---|"
    for w in "${workloads[@]}"; do
        declare -A m=()
        for fs in "${fss[@]}"; do m[$fs]=$(echo "${result["$fs|$w"]}" | median); done
        printf '| %s | %s | %s | %s | %s | %.2f | %.2f |\n' "$w" "${m[local]}" "${m[bindfs]}" "${m[sshfs]}" "${m[fsmount]}" \
            "$(echo "${m[fsmount]} ${m[bindfs]}" | awk '{print $1/$2}')" "$(echo "${m[fsmount]} ${m[sshfs]}" | awk '{print $1/$2}')"
    done
} | tee target/bench/results.md

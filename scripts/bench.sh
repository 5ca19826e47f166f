#!/usr/bin/env bash
# Side-by-side benchmark: fsmount against the FUSE reference (bindfs over the same
# disk), the peer users would pick (sshfs through a private loopback sshd) and the local disk,
# in one run; then fsmount and sshfs again at an added 10 ms round trip through
# target/release/delay_proxy. Medians of RUNS repetitions; every number is a time (lower is
# better) and every ratio is fsmount's time over the peer's (below 1: fsmount is faster).
#   scripts/bench.sh [RUNS]      RUNS default 3; RTT_RUNS (default 1), SIZE_MIB (1024),
#                                RTT_SIZE_MIB (256), SKIP_RTT=1 to leave out the 10 ms part,
#                                FSXP_BIN=DIR to take fsserver/fsmount from DIR (e.g. an
#                                older build, to compare two versions in one session),
#                                FSS="fsmount" to measure only some of
#                                "local bindfs sshfs fsmount plain" (plain: fsmount without
#                                TLS, against a second fsserver --plaintext),
#                                SCRATCH=dir to work in /var/tmp itself instead of
#                                a fresh ext4 image there (see below).
# fsmount (TLS, the default) and plain also report CPU seconds per workload (client and
# server, from /proc/PID/stat; per read for random reads, per file for the tree), and
# CPU seconds per GiB moved, client and
# server, for the sequential write and the cold read.
# Also measures the machine itself before and after (`tcp_floor`: a loopback TCP round
# trip, mostly two cross-CPU wake-ups; on a VM it varies with the host several-fold from
# one hour to the next), printed under the table: compare runs only where it is close.
# Writes target/bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
runs=${1:-3}
rtt_runs=${RTT_RUNS:-1}
size_mib=${SIZE_MIB:-1024}
rtt_size_mib=${RTT_SIZE_MIB:-256}
# The RTT file is cut from the big one: never longer than it.
rtt_size_mib=$((rtt_size_mib < size_mib ? rtt_size_mib : size_mib))
ensure_packages mkfs.ext4:e2fsprogs losetup:mount fusermount3:fuse3 bindfs:bindfs sshfs:sshfs sshd:openssh-server ssh-keygen:openssh-client \
    fio:fio rsync:rsync python3:python3 git:git
ensure_fuse_device
# Two commands: `--bin` would limit every selected package to that one binary.
cargo build --release --quiet -p fsserver -p fsmount
cargo build --release --quiet -p e2e-tests --bin delay_proxy --bin tcp_floor
bin=${FSXP_BIN:-$PWD/target/release}
# floor: µs per loopback round trip on 1 and on 4 connections (medians of 3 rounds of 1 s).
floor() { "$PWD/target/release/tcp_floor" 1 3 | awk -F'|' '$2 ~ /^ *[14] *$/ {gsub(/ /, "", $4); printf "%s%s", sep, $4; sep = " / "}'; }
floor_before=$(floor)

B=$(mktemp -d /var/tmp/fsxp-bench.XXXXXX)
S=$(mktemp -d /dev/shm/fsxp-bench.XXXXXX)
pids=()
loop=
cleanup() {
    for m in "$B"/mnt-*; do
        grep -qs " $m " /proc/mounts && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$loop" ]; then
        umount "$B" 2>/dev/null || umount -l "$B" 2>/dev/null || true
        losetup -d "$loop" 2>/dev/null || true
        rm -f "$B.img"
    fi
    rm -rf "$B" "$S"
}
trap cleanup EXIT INT TERM
log() { echo "bench: $*" >&2; }

# Every filesystem works in its own directory of one fresh ext4 (mkfs's defaults: with a
# journal), made in a file on /var/tmp and attached with direct I/O (no second page cache).
# Without a journal, as on some VM images' root filesystem, ext4 skips every inode deleted
# in the last 60-300 s when it makes a new one: each create then costs more the more was
# deleted just before, so a tree workload's time would depend on which filesystem the
# bench ran before it. SCRATCH=dir works in /var/tmp as it is.
if [ "${SCRATCH:-image}" != dir ]; then
    truncate -s 16G "$B.img"
    mkfs.ext4 -q -F "$B.img"
    loop=$(losetup --direct-io=on -f --show "$B.img")
    mount "$loop" "$B"
fi

# Inputs, on tmpfs so the source is never the bottleneck: a random file and a real source
# tree (the Python standard library, the kernel's UAPI and the C++ library headers: ~2,400
# files).
head -c $((size_mib << 20)) /dev/urandom >"$S/big"
stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
mkdir -p "$S/tree"
cp -a "$stdlib" "$S/tree/python"
rm -rf "$S/tree/python/site-packages" "$S/tree/python/test" "$S/tree/python/idlelib" "$S/tree/python/lib2to3/tests"
cp -a /usr/include/linux "$S/tree/linux-headers"
[ -d /usr/include/c++ ] && cp -a /usr/include/c++ "$S/tree/cxx-headers"
find "$S/tree" -name __pycache__ -prune -exec rm -rf {} +
tar -cf "$S/tree.tar" -C "$S" tree
files=$(find "$S/tree" -type f | wc -l)
# A git repository of the tree, cloned into the mounts at 10 ms RTT.
rm -rf "$S/repo" && cp -a "$S/tree" "$S/repo"
git -C "$S/repo" init -q && git -C "$S/repo" add -A &&
    git -C "$S/repo" -c user.name=bench -c user.email=bench@localhost commit -qm tree
log "inputs: ${size_mib} MiB file, tree of $files files ($(du -sh "$S/tree" | cut -f1))"

# --- peers -------------------------------------------------------------------------------
mkdir -p "$B/ssh" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$B/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$B/ssh/client_key"
cp "$B/ssh/client_key.pub" "$B/ssh/authorized_keys"
ssh_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$B/ssh/sshd_config" <<CFG
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $B/ssh/host_key
AuthorizedKeysFile $B/ssh/authorized_keys
PermitRootLogin yes
StrictModes no
PasswordAuthentication no
Subsystem sftp internal-sftp
CFG
/usr/sbin/sshd -D -f "$B/ssh/sshd_config" 2>"$B/ssh/sshd.log" & pids+=($!)
mkdir -p "$B/src-fsmount"
# The benchmark writes as root and keeps owners (rsync -a, cp -a): root is not squashed
# (builds older than the option trusted root anyway).
trust_root=()
"$bin/fsserver" --help | grep -q -- --no-root-squash && trust_root=(--no-root-squash bench)
"$bin/fsserver" --listen 127.0.0.1:0 --export "bench=$B/src-fsmount" "${trust_root[@]}" --token-file "$B/token" \
    >"$B/server.out" 2>"$B/server.log" & pids+=($!)
server_pid=$!
for _ in $(seq 100); do grep -q listening "$B/server.out" 2>/dev/null && break; sleep 0.05; done
fsx_addr=$(sed -n 's/^fsserver: listening on //p' "$B/server.out")
# The same without TLS (builds before TLS had only this).
mkdir -p "$B/src-plain"
plain_server=(--plaintext); plain_mount=,plaintext
"$bin/fsserver" --help | grep -q -- --plaintext || { plain_server=(); plain_mount=; }
trust_plain=()
[ ${#trust_root[@]} -gt 0 ] && trust_plain=(--no-root-squash bench)
"$bin/fsserver" --listen 127.0.0.1:0 --export "bench=$B/src-plain" "${trust_plain[@]}" "${plain_server[@]}" \
    --token-file "$B/token" >"$B/plain.out" 2>"$B/plain.log" & pids+=($!)
plain_pid=$!
for _ in $(seq 100); do grep -q listening "$B/plain.out" 2>/dev/null && break; sleep 0.05; done
plain_addr=$(sed -n 's/^fsserver: listening on //p' "$B/plain.out")
start_proxy() { # TARGET NAME: a 5 ms one-way (10 ms RTT) proxy; sets proxy_addr
    local out="$B/proxy-$2.out"
    "$bin/delay_proxy" "$1" 5 >"$out" 2>&1 </dev/null & pids+=($!)
    for _ in $(seq 100); do grep -q listening "$out" 2>/dev/null && break; sleep 0.05; done
    proxy_addr=$(sed -n 's/^listening on //p' "$out")
}
start_proxy "$fsx_addr" fsx; fsx_rtt_addr=$proxy_addr
start_proxy "127.0.0.1:$ssh_port" ssh; ssh_rtt_addr=$proxy_addr
sleep 0.3

wait_mounted() { for _ in $(seq 400); do grep -qs " $1 " /proc/mounts && return 0; sleep 0.05; done; log "mount of $1 failed"; exit 1; }
fsmount_pid=
# mount_fs FS [rtt]: (re)mounts FS on $B/mnt-FS; "local" is a plain directory.
mount_fs() {
    local fs=$1 rtt=${2:-} m="$B/mnt-$1"
    mkdir -p "$m" "$B/src-$fs"
    case $fs in
    local) ;;
    bindfs) bindfs "$B/src-bindfs" "$m" ;;
    sshfs)
        local host=127.0.0.1 port=$ssh_port
        [ -n "$rtt" ] && port=${ssh_rtt_addr##*:}
        sshfs -p "$port" -o IdentityFile="$B/ssh/client_key",StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null \
            "root@$host:$B/src-sshfs" "$m" ;;
    fsmount)
        local addr=$fsx_addr
        [ -n "$rtt" ] && addr=$fsx_rtt_addr
        "$bin/fsmount" "$addr:/bench" "$m" -o "token_file=$B/token" -f 2>>"$B/fsmount.log" &
        fsmount_pid=$! ;;
    plain)
        "$bin/fsmount" "$plain_addr:/bench" "$m" -o "token_file=$B/token$plain_mount" -f 2>>"$B/fsmount.log" &
        fsmount_pid=$! ;;
    esac
    [ "$fs" = local ] || wait_mounted "$m"
}
umount_fs() {
    local m="$B/mnt-$1"
    [ "$1" = local ] && return 0
    fusermount3 -u "$m"
    if [ "$1" = fsmount ] || [ "$1" = plain ]; then wait "$fsmount_pid" 2>/dev/null || true; fi
}
remount_cold() { umount_fs "$1"; sync; echo 3 >/proc/sys/vm/drop_caches; mount_fs "$1" "${2:-}"; }

now() { date +%s.%N; }
# timed NAME CMD...: runs CMD, appends its seconds to the results of NAME for the current fs.
declare -A result
timed() {
    local name=$1 t0 t1; shift
    t0=$(now); "$@" >/dev/null; t1=$(now)
    result["$fs|$name"]+="$(echo "$t1 $t0" | awk '{printf "%.3f", $1 - $2}') "
}
fio_us_per_read() { # mean latency of 4k random reads, 4 jobs, O_DIRECT, as microseconds/op overall
    fio --name=r --filename="$1" --rw=randread --bs=4k --direct=1 --numjobs=4 --ioengine=psync \
        --runtime=5 --time_based --group_reporting --output-format=terse --terse-version=3 2>/dev/null |
        awk -F';' '{ if ($8 > 0) printf "%.3f", 1e6 / $8; else print "nan" }'
}

W_WRITE="seq write ${size_mib} MiB (dd 1M, fsync)"
W_COLD="seq read ${size_mib} MiB cold"
W_WARM="seq read ${size_mib} MiB warm"
W_RAND="4k random read, 4 jobs, direct (us per op)"
W_UNTAR="untar tree ($files files)"
W_FIND="find + stat tree, cold"
W_RSYNC="rsync -a tree in"
W_NOOP="rsync -a tree, no-op"
W_CPOUT="cp -a tree out, cold"
W_RM="rm -rf tree"
workloads=("$W_WRITE" "$W_COLD" "$W_WARM" "$W_RAND" "$W_UNTAR" "$W_FIND" "$W_RSYNC" "$W_NOOP" "$W_CPOUT" "$W_RM")

cpu_ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; } # user + system, in clock ticks
# cpu_per_gib NAME CMD...: like timed, and for fsmount/plain also records the CPU seconds per
# GiB moved of the client (fsmount) and of the server, as "client/server".
cpu_per_gib() {
    local name=$1; shift
    local spid=$server_pid
    [ "$fs" = plain ] && spid=$plain_pid
    if [ "$fs" != fsmount ] && [ "$fs" != plain ]; then timed "$name" "$@"; return; fi
    local c0 s0 c1 s1 hz
    hz=$(getconf CLK_TCK)
    c0=$(cpu_ticks "$fsmount_pid"); s0=$(cpu_ticks "$spid")
    timed "$name" "$@"
    c1=$(cpu_ticks "$fsmount_pid"); s1=$(cpu_ticks "$spid")
    result["$fs|cpus client $name"]+="$(awk -v a="$c0" -v b="$c1" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz}') "
    result["$fs|cpus server $name"]+="$(awk -v a="$s0" -v b="$s1" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz}') "
    result["$fs|cpu client $name"]+="$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v g="$size_mib" 'BEGIN {printf "%.2f", (b - a) / hz / (g / 1024)}') "
    result["$fs|cpu server $name"]+="$(awk -v a="$s0" -v b="$s1" -v hz="$hz" -v g="$size_mib" 'BEGIN {printf "%.2f", (b - a) / hz / (g / 1024)}') "
}

# cpu_of NAME CMD...: like timed, and for fsmount/plain also records the CPU seconds fsmount
# and the server used meanwhile (user + system, from /proc/PID/stat).
cpu_of() {
    local name=$1; shift
    if [ "$fs" != fsmount ] && [ "$fs" != plain ]; then timed "$name" "$@"; return; fi
    local spid=$server_pid c0 s0
    [ "$fs" = plain ] && spid=$plain_pid
    c0=$(cpu_ticks "$fsmount_pid"); s0=$(cpu_ticks "$spid")
    timed "$name" "$@"
    cpu_since "$name" "$c0" "$s0" "$spid"
}
# cpu_since NAME C0 S0 SERVER_PID: records the CPU seconds fsmount and the server used since
# they had C0 and S0 ticks.
cpu_since() {
    local hz; hz=$(getconf CLK_TCK)
    local c1 s1; c1=$(cpu_ticks "$fsmount_pid"); s1=$(cpu_ticks "$4")
    result["$fs|cpus client $1"]+="$(awk -v a="$2" -v b="$c1" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz}') "
    result["$fs|cpus server $1"]+="$(awk -v a="$3" -v b="$s1" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz}') "
}

run_all() { # on $fs, mounted at $m
    local m="$B/mnt-$fs" out="$B/out-$fs"
    local c0 s0 spid=${server_pid:-}
    [ "$fs" = plain ] && spid=$plain_pid
    cpu_per_gib "$W_WRITE" dd if="$S/big" of="$m/big" bs=1M conv=fsync status=none
    remount_cold "$fs"
    cpu_per_gib "$W_COLD" dd if="$m/big" of=/dev/null bs=1M status=none
    cpu_of "$W_WARM" dd if="$m/big" of=/dev/null bs=1M status=none
    if [ "$fs" = fsmount ] || [ "$fs" = plain ]; then c0=$(cpu_ticks "$fsmount_pid"); s0=$(cpu_ticks "$spid"); fi
    if us=$(fio_us_per_read "$m/big") && [ "$us" != nan ] && [ -n "$us" ]; then
        result["$fs|$W_RAND"]+="$us "
        if [ "$fs" = fsmount ] || [ "$fs" = plain ]; then
            cpu_since "$W_RAND" "$c0" "$s0" "$spid"
            # fio ran 5 s at one read per $us microseconds: the reads it made.
            result["$fs|ops $W_RAND"]+="$(awk -v us="$us" 'BEGIN {printf "%.0f", 5e6 / us}') "
        fi
    fi
    rm -f "$m/big"
    cpu_of "$W_UNTAR" tar -xf "$S/tree.tar" -C "$m"
    remount_cold "$fs"
    cpu_of "$W_FIND" find "$m/tree" -printf '%s %m %T@\n'
    cpu_of "$W_RSYNC" rsync -a "$S/tree/" "$m/rsynced/"
    cpu_of "$W_NOOP" rsync -a "$S/tree/" "$m/rsynced/"
    remount_cold "$fs"
    cpu_of "$W_CPOUT" cp -a "$m/tree" "$out"
    rm -rf "$out" "$m/rsynced"
    cpu_of "$W_RM" rm -rf "$m/tree"
}

read -r -a fss <<<"${FSS:-local bindfs sshfs fsmount plain}"
for r in $(seq "$runs"); do
    for fs in "${fss[@]}"; do
        mount_fs "$fs"
        run_all
        if [ "$fs" = fsmount ] || [ "$fs" = plain ]; then
            hwm=$(awk '/VmHWM/ {print $2}' /proc/"$fsmount_pid"/status)
            result["$fs|peak RSS (KiB)"]+="$hwm "
        fi
        umount_fs "$fs"
        log "run $r: $fs done"
    done
done

# --- 10 ms round trip ---------------------------------------------------------------------
R_COLD="seq read ${rtt_size_mib} MiB cold, 10 ms RTT"
R_UNTAR="untar tree ($files files), 10 ms RTT"
R_FIND="find + stat tree, cold, 10 ms RTT"
R_RSYNC="rsync -a tree in, 10 ms RTT"
R_GIT="git clone of the tree, 10 ms RTT"
R_CPOUT="cp -a tree out, cold, 10 ms RTT"
rtt_workloads=("$R_COLD" "$R_UNTAR" "$R_FIND" "$R_RSYNC" "$R_GIT" "$R_CPOUT")
if [ -z "${SKIP_RTT:-}" ]; then
    head -c $((rtt_size_mib << 20)) "$S/big" >"$S/rtt-big"
    for r in $(seq "$rtt_runs"); do
        for fs in sshfs fsmount; do
            [[ " ${fss[*]} " == *" $fs "* ]] || continue
            cp "$S/rtt-big" "$B/src-$fs/rtt-big"
            mount_fs "$fs" rtt
            sync; echo 3 >/proc/sys/vm/drop_caches
            timed "$R_COLD" dd if="$B/mnt-$fs/rtt-big" of=/dev/null bs=1M status=none
            timed "$R_UNTAR" tar -xf "$S/tree.tar" -C "$B/mnt-$fs"
            remount_cold "$fs" rtt
            timed "$R_FIND" find "$B/mnt-$fs/tree" -printf '%s %m %T@\n'
            timed "$R_RSYNC" rsync -a "$S/tree/" "$B/mnt-$fs/rsynced/"
            timed "$R_GIT" git clone -q "$S/repo" "$B/mnt-$fs/clone"
            remount_cold "$fs" rtt
            timed "$R_CPOUT" cp -a "$B/mnt-$fs/tree" "$B/out-rtt-$fs"
            rm -rf "$B/out-rtt-$fs"
            umount_fs "$fs"
            rm -rf "$B/src-$fs/tree" "$B/src-$fs/rtt-big" "$B/src-$fs/rsynced" "$B/src-$fs/clone"
            log "10 ms run $r: $fs done"
        done
    done
fi

# fsserver memory with 100 idle connections (handshake not completed).
python3 - "$fsx_addr" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
conns = [socket.create_connection((host, int(port))) for _ in range(100)]
time.sleep(3)
PY
idle_pid=$!
sleep 1.5
server_rss=$(awk '/VmRSS/ {print $2}' /proc/"$server_pid"/status)
wait "$idle_pid" || true

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "n/a"; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
floor_after=$(floor)
mkdir -p target/bench
{
    echo "$(date -u +%F), $(nproc) cores, medians of $runs runs (10 ms RTT: $rtt_runs), seconds unless noted;"
    echo "ratio = fsmount / peer (below 1: fsmount faster). Tree: $files files."
    echo "Machine: a loopback TCP round trip (tcp_floor, 1 / 4 connections) took $floor_before µs before the run, $floor_after µs after."
    echo
    echo "| workload | local disk | bindfs | sshfs | fsmount (TLS) | fsmount plaintext | fsmount/bindfs | fsmount/sshfs | TLS/plaintext |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for w in "${workloads[@]}"; do
        declare -A md=()
        for f in "${fss[@]}"; do md[$f]=$(echo "${result["$f|$w"]:-}" | median || true); done
        echo "| $w | ${md[local]:-n/a} | ${md[bindfs]:-n/a} | ${md[sshfs]:-n/a} | ${md[fsmount]:-n/a} | ${md[plain]:-n/a} | $(ratio "${md[fsmount]:-n/a}" "${md[bindfs]:-n/a}") | $(ratio "${md[fsmount]:-n/a}" "${md[sshfs]:-n/a}") | $(ratio "${md[fsmount]:-n/a}" "${md[plain]:-n/a}") |"
    done
    echo
    echo "| CPU seconds per GiB (medians) | fsmount TLS: client | server | plaintext: client | server |"
    echo "|---|---|---|---|---|"
    for w in "$W_WRITE" "$W_COLD"; do
        row="| $w"
        for f in fsmount plain; do
            for side in client server; do row+=" | $(echo "${result["$f|cpu $side $w"]:-}" | median || true)"; done
        done
        echo "$row |"
    done
    echo
    echo "| CPU seconds per workload (medians; per op: microseconds per read, per file: per file of the tree) | fsmount TLS: client | server | plaintext: client | server |"
    echo "|---|---|---|---|---|"
    for w in "${workloads[@]}"; do
        row="| $w"
        for f in fsmount plain; do
            for side in client server; do
                v=$(echo "${result["$f|cpus $side $w"]:-}" | median || true)
                case "$w" in
                "$W_RAND") n=$(echo "${result["$f|ops $w"]:-}" | median || true)
                    v=$(awk -v v="$v" -v n="$n" 'BEGIN { if (v == "n/a" || n == "n/a" || n == 0) print "n/a"; else printf "%s (%.1f us/op)", v, v * 1e6 / n }') ;;
                "$W_UNTAR" | "$W_FIND" | "$W_RSYNC" | "$W_NOOP" | "$W_CPOUT" | "$W_RM")
                    v=$(awk -v v="$v" -v n="$files" 'BEGIN { if (v == "n/a") print "n/a"; else printf "%s (%.0f us/file)", v, v * 1e6 / n }') ;;
                esac
                row+=" | $v"
            done
        done
        echo "$row |"
    done
    if [ -z "${SKIP_RTT:-}" ]; then
        echo
        echo "| at 10 ms RTT (delay_proxy) | sshfs | fsmount | fsmount/sshfs |"
        echo "|---|---|---|---|"
        for w in "${rtt_workloads[@]}"; do
            a=$(echo "${result["sshfs|$w"]:-}" | median || true); b=$(echo "${result["fsmount|$w"]:-}" | median || true)
            echo "| $w | $a | $b | $(ratio "$b" "$a") |"
        done
    fi
    echo
    echo "fsmount peak RSS over a run (VmHWM): $(echo "${result["fsmount|peak RSS (KiB)"]:-}" | median) KiB;" \
        "fsserver RSS with 100 idle connections: $server_rss KiB."
} | tee target/bench/results.md

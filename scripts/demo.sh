#!/usr/bin/env bash
# The main job on an embedded default: start fsserver on 127.0.0.1 over a demo directory with
# a generated token, mount it with fsmount, and wait. Ctrl-C unmounts and stops the server.
#   scripts/demo.sh [DIR]     (DIR: where the demo lives; default a new /tmp/fsxp-demo.*)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages fusermount3:fuse3
ensure_fuse_device
cargo build --release --quiet -p fsserver -p fsmount
bin=$PWD/target/release

demo=${1:-$(mktemp -d /tmp/fsxp-demo.XXXXXX)}
mkdir -p "$demo/export" "$demo/mnt"
if [ -z "$(ls -A "$demo/export")" ]; then
    echo "Hello from fsserver. This file lives in $demo/export." > "$demo/export/hello.txt"
    mkdir -p "$demo/export/docs"
    cp README.md docs/*.md "$demo/export/docs/" 2>/dev/null || true
fi

server_pid= mount_pid=
cleanup() {
    trap - INT TERM EXIT
    if grep -qs " $demo/mnt " /proc/mounts; then
        fusermount3 -u "$demo/mnt" 2>/dev/null || umount -l "$demo/mnt" 2>/dev/null || true
    fi
    [ -n "$mount_pid" ] && kill "$mount_pid" 2>/dev/null || true
    [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "unmounted $demo/mnt and stopped fsserver"
}
trap cleanup INT TERM EXIT

"$bin/fsserver" --listen 127.0.0.1:0 --export "demo=$demo/export" --no-root-squash demo --token-file "$demo/token" \
    >"$demo/server.out" 2>"$demo/server.log" &
server_pid=$!
for _ in $(seq 100); do
    grep -q "listening on" "$demo/server.out" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$demo/server.log" >&2; exit 1; }
    sleep 0.05
done
addr=$(sed -n 's/^fsserver: listening on //p' "$demo/server.out")

"$bin/fsmount" "$addr:/demo" "$demo/mnt" -o "token_file=$demo/token" -f 2>"$demo/fsmount.log" &
mount_pid=$!
for _ in $(seq 200); do
    grep -qs " $demo/mnt " /proc/mounts && break
    kill -0 "$mount_pid" 2>/dev/null || { cat "$demo/fsmount.log" >&2; exit 1; }
    sleep 0.05
done

cat <<TXT
fsserver is serving $demo/export on $addr (token in $demo/token),
mounted by fsmount on $demo/mnt. Try, in another terminal:

    ls -l $demo/mnt
    cat $demo/mnt/hello.txt
    cp -r /usr/share/doc/bash $demo/mnt/ && ls $demo/export/bash
    df -h $demo/mnt

Logs: $demo/server.log, $demo/fsmount.log. Press Ctrl-C to unmount and stop.
TXT
wait "$mount_pid" || true
mount_pid=

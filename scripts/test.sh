#!/usr/bin/env bash
# Runs every test: protocol specification tests, unit tests, and end-to-end tests with a
# real fsserver and real FUSE mounts. Installs what is missing first (fuse3, rsync, ...).
# Mount tests need root and /dev/fuse; they fail, never skip, without them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages fusermount3:fuse3 systemd-analyze:systemd prlimit:util-linux rsync:rsync sha256sum:coreutils pgrep:procps git:git tar:tar \
    setfattr:attr setfacl:acl setpriv:util-linux python3:python3 mkfs.ext4:e2fsprogs useradd:passwd \
    man:man-db dpkg-shlibdeps:dpkg-dev strip:binutils sqlite3:sqlite3 flock:util-linux cc:gcc
ensure_fuse_device
ensure_user fsxp-test
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }

cargo build --workspace --all-targets
cargo test --workspace -- --test-threads=4 "$@"
# The lease table under shuttle: every interleaving it tries of grants and admissions.
cargo test -p fsserver --features shuttle --lib shuttle
# The TLS record layer sealed and opened by each AEAD library in turn, whichever this CPU
# picks: the record layer's unit tests (stock rustls on the other end) and the TLS mounts.
for aead in ring aws-lc; do
    FSXP_TLS_AEAD=$aead cargo test -p protocol --lib tls -- --test-threads=4
    FSXP_TLS_AEAD=$aead cargo test -p e2e-tests --test tls --test data_paths -- --test-threads=4
done

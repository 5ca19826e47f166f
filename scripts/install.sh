#!/usr/bin/env bash
# Builds fsserver and fsmount (release) and installs them with what running them takes:
#   PREFIX/bin/fsserver, PREFIX/bin/fsmount
#   /sbin/mount.fsxp -> PREFIX/bin/fsmount        (mount -t fsxp, /etc/fstab)
#   /etc/systemd/system/fsserver.service          (ExecStart under PREFIX)
#   /etc/fsserver/                                (mode 0700, for the exports file and tokens)
#   PREFIX/share/man/man8/fsserver*.8, fsmount*.8
#   PREFIX/share/{bash-completion/completions,zsh/site-functions,fish/vendor_completions.d}
#
# usage: scripts/install.sh [--prefix DIR]     (default /usr/local; run as root)
# DESTDIR=DIR stages everything under DIR instead (packaging); FSXP_BIN=DIR installs the
# binaries already built in DIR instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PREFIX=/usr/local
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
DESTDIR=${DESTDIR:-}
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (or set DESTDIR to stage the files)" >&2
    exit 1
fi
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
[ -n "$DESTDIR" ] || ensure_packages fusermount3:fuse3

if [ -z "${FSXP_BIN:-}" ]; then
    cargo build --release -p fsserver -p fsmount
    FSXP_BIN=target/release
fi
generated=$(mktemp -d)
trap 'rm -rf "$generated"' EXIT
# Built with the workspace's features, so a tree already built for the tests is reused.
cargo build --quiet --workspace --bin xtask
"${CARGO_TARGET_DIR:-target}/debug/xtask" dist "$generated"

bin=$DESTDIR$PREFIX/bin
man=$DESTDIR$PREFIX/share/man/man8
bash_dir=$DESTDIR$PREFIX/share/bash-completion/completions
zsh_dir=$DESTDIR$PREFIX/share/zsh/site-functions
fish_dir=$DESTDIR$PREFIX/share/fish/vendor_completions.d
install -d "$bin" "$man" "$bash_dir" "$zsh_dir" "$fish_dir" "$DESTDIR/sbin" "$DESTDIR/etc/systemd/system"
install -d -m 700 "$DESTDIR/etc/fsserver"

install -m 755 "$FSXP_BIN/fsserver" "$FSXP_BIN/fsmount" "$bin/"
ln -sfn "$PREFIX/bin/fsmount" "$DESTDIR/sbin/mount.fsxp"
sed "s|/usr/local/bin/|$PREFIX/bin/|g" dist/fsserver.service > "$DESTDIR/etc/systemd/system/fsserver.service"
chmod 644 "$DESTDIR/etc/systemd/system/fsserver.service"
install -m 644 "$generated"/man/man8/*.8 "$man/"
echo '.so man8/fsmount.8' > "$man/mount.fsxp.8" && chmod 644 "$man/mount.fsxp.8"
for cmd in fsserver fsmount; do
    install -m 644 "$generated/completions/bash/$cmd.bash" "$bash_dir/$cmd"
    install -m 644 "$generated/completions/zsh/_$cmd" "$zsh_dir/_$cmd"
    install -m 644 "$generated/completions/fish/$cmd.fish" "$fish_dir/$cmd.fish"
done
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

echo "installed under ${DESTDIR:-/} with prefix $PREFIX: fsserver, fsmount, /sbin/mount.fsxp,"
echo "the fsserver.service unit, man pages (man fsserver, man fsmount) and completions."
echo "next: write /etc/fsserver/fsserver.toml (see the README), check it with"
echo "  fsserver check-config /etc/fsserver/fsserver.toml"
echo "then: systemctl enable --now fsserver"

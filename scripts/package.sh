#!/usr/bin/env bash
# Builds the Debian package target/debian/fsxp_VERSION_ARCH.deb: fsserver and fsmount in
# /usr/bin, the mount helpers /sbin/mount.fsxp and /sbin/mount.fuse.fsxp, fsserver.service,
# man pages, shell completions, /etc/fsserver/fsserver.toml (serving nothing), the state
# directory /var/lib/fsserver, and example client units (see the README, "Install").
#
# usage: scripts/package.sh [--out DIR] [--stage DIR]
#   --out DIR     where the .deb goes (default: target/debian); its path is printed last
#   --stage DIR   only lay the files out under DIR as they will be installed (DIR must be
#                 empty or missing), for packaging them some other way
# FSXP_BIN=DIR packages the fsserver and fsmount already built in DIR (the tests package
# target/debug) instead of building release binaries; FSXP_GENERATED=DIR takes the man pages
# and completions `xtask dist` wrote to DIR instead of building and running xtask.
#
# The package is put together with dpkg-deb from the staged tree, not cargo-deb: dpkg-deb is
# part of dpkg, so packaging costs no tool build on a fresh machine (cargo-deb would be
# compiled by every CI run), and the same staging step serves scripts/install.sh and others.
set -euo pipefail
umask 022
cd "$(dirname "$0")/.."
. scripts/lib.sh

out=target/debian stage_only=
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --stage) stage_only=${2:?--stage needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
ensure_packages dpkg-shlibdeps:dpkg-dev strip:binutils gzip:gzip

if [ -z "${FSXP_BIN:-}" ]; then
    cargo build --release -p fsserver -p fsmount
    FSXP_BIN=target/release
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gen=${FSXP_GENERATED:-}
if [ -z "$gen" ]; then
    cargo build --quiet -p xtask
    "${CARGO_TARGET_DIR:-target}/debug/xtask" dist "$work/generated"
    gen=$work/generated
fi

# One staging step: the tree exactly as installed.
root=${stage_only:-$work/root}
if [ -n "$stage_only" ] && [ -n "$(ls -A "$root" 2>/dev/null)" ]; then
    echo "package.sh: $root is not empty" >&2
    exit 1
fi
install -d "$root/usr/bin" "$root/sbin" "$root/lib/systemd/system" \
    "$root/usr/share/man/man5" "$root/usr/share/man/man8" \
    "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d" "$root/usr/share/doc/fsxp/examples"
install -d -m 700 "$root/etc/fsserver" "$root/var/lib/fsserver"
for b in fsserver fsmount; do
    # Stripped (policy; and a debug build shrinks tenfold); the symbols stay in target/.
    strip --strip-unneeded --remove-section=.comment --remove-section=.note \
        -o "$root/usr/bin/$b" "$FSXP_BIN/$b"
    chmod 755 "$root/usr/bin/$b"
done
# mount -t fsxp, and -t fuse.fsxp: the type the kernel shows (remount, fstab, systemd).
ln -s /usr/bin/fsmount "$root/sbin/mount.fsxp"
ln -s /usr/bin/fsmount "$root/sbin/mount.fuse.fsxp"
install -m 644 dist/fsserver.service "$root/lib/systemd/system/"
install -m 644 dist/fsserver.toml "$root/etc/fsserver/fsserver.toml"
for page in "$gen"/man/man8/*.8 "$gen"/man/man5/*.5; do
    section=${page##*.}
    gzip -9n < "$page" > "$root/usr/share/man/man$section/$(basename "$page").gz"
done
ln -s fsmount.8.gz "$root/usr/share/man/man8/mount.fsxp.8.gz"
ln -s fsmount.8.gz "$root/usr/share/man/man8/mount.fuse.fsxp.8.gz"
for cmd in fsserver fsmount; do
    install -m 644 "$gen/completions/bash/$cmd.bash" "$root/usr/share/bash-completion/completions/$cmd"
    install -m 644 "$gen/completions/zsh/_$cmd" "$root/usr/share/zsh/vendor-completions/_$cmd"
    install -m 644 "$gen/completions/fish/$cmd.fish" "$root/usr/share/fish/vendor_completions.d/$cmd.fish"
done
install -m 644 dist/debian/copyright "$root/usr/share/doc/fsxp/copyright"
install -m 644 dist/srv-share.mount dist/srv-share.automount dist/fstab dist/fsserver.toml \
    "$root/usr/share/doc/fsxp/examples/"
if [ -n "$stage_only" ]; then
    echo "staged under $root"
    exit 0
fi

# The control area.
version=$("$root/usr/bin/fsserver" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
mkdir -p "$root/DEBIAN" "$work/shlibs/debian"
install -m 755 dist/debian/postinst dist/debian/prerm dist/debian/postrm "$root/DEBIAN/"
echo /etc/fsserver/fsserver.toml > "$root/DEBIAN/conffiles"
# Library dependencies as Debian computes them (libc6, libgcc-s1 with their versions).
printf 'Source: fsxp\n\nPackage: fsxp\nArchitecture: any\n' > "$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O "$root/usr/bin/fsserver" "$root/usr/bin/fsmount" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: fsxp
Version: $version
Architecture: $arch
Maintainer: ${DEBFULLNAME:-fsxp maintainers} <${DEBEMAIL:-fsxp@localhost}>
Installed-Size: $size
Depends: $shlibs, fuse3
Section: net
Priority: optional
Description: network filesystem over TLS: fsserver exports, fsmount mounts (FUSE)
 fsserver exports directories over the fsxp protocol on TCP, TLS 1.3 by
 default, with mutual token authentication; run as root, every request acts
 as its caller, root squashed as NFS does. fsmount mounts an export through
 FUSE, caches data and directory leases, writes behind, and survives dropped
 connections and server restarts.
 .
 This package installs fsserver.service (not enabled) with an exports file
 that serves nothing, the mount helpers for mount -t fsxp and /etc/fstab,
 man pages and shell completions.
EOF
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) > "$work/md5sums"
install -m 644 "$work/md5sums" "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/fsxp_${version}_${arch}.deb
# Timestamps from the commit, so that the same tree gives the same package.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)} \
    dpkg-deb --root-owner-group -Zxz -z1 --build "$root" "$deb" >/dev/null
echo "$deb"

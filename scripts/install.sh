#!/usr/bin/env bash
# Builds the Debian package from release binaries (scripts/package.sh) and installs it with
# apt, which brings what it depends on (fuse3). What goes where, and the first start: the
# README, "Install". Run as root on Debian or a derivative.
#
# usage: scripts/install.sh
# Elsewhere: scripts/package.sh --stage DIR lays out the same files under DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

case "${1:-}" in
    "") ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --prefix)
        echo "install.sh: there is no --prefix: the package installs under /usr;" \
             "scripts/package.sh --stage DIR lays the files out under DIR" >&2
        exit 2 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root" >&2
    exit 1
fi
ensure_packages fusermount3:fuse3
deb=$(scripts/package.sh | tail -n1)

# What an earlier install.sh (which copied files under /usr/local) left: its unit in
# /etc/systemd/system would shadow the package's and run the old binary.
if grep -qs '^ExecStart=/usr/local/bin/fsserver ' /etc/systemd/system/fsserver.service; then
    old=(/etc/systemd/system/fsserver.service /usr/local/bin/fsserver /usr/local/bin/fsmount
        /usr/local/share/man/man8/fsserver*.8 /usr/local/share/man/man8/fsmount*.8
        /usr/local/share/man/man8/mount.fsxp.8
        /usr/local/share/bash-completion/completions/{fsserver,fsmount}
        /usr/local/share/zsh/site-functions/_{fsserver,fsmount}
        /usr/local/share/fish/vendor_completions.d/{fsserver,fsmount}.fish)
    for f in "${old[@]}"; do
        if [ -e "$f" ]; then
            rm -f "$f"
            echo "removed $f (from the earlier install.sh)"
        fi
    done
fi
# An exports file already in /etc/fsserver is kept (dpkg would ask).
DEBIAN_FRONTEND=noninteractive apt-get install -y \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$PWD/$deb"
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
echo "installed $deb. Next: add an [[export]] to /etc/fsserver/fsserver.toml"
echo "(man 5 fsserver.toml), check it with"
echo "  fsserver check-config /etc/fsserver/fsserver.toml"
echo "then: systemctl enable --now fsserver"

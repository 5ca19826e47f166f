# Shared by the scripts: install what a fresh Debian machine lacks.

# Runs a command as root (directly, or through sudo when not root).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_packages CMD:PACKAGE ...: installs PACKAGE (apt) when CMD is missing.
ensure_packages() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}" >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Makes sure /dev/fuse exists (the fuse module is loaded) and that users may open it, as
# udev's default rule (KERNEL=="fuse", MODE="0666") makes it on a machine that runs udev:
# fusermount3 opens it as the mounting user.
ensure_fuse_device() {
    if [ ! -e /dev/fuse ]; then
        as_root modprobe fuse 2>/dev/null || as_root mknod -m 666 /dev/fuse c 10 229
    fi
    if [ "$(stat -c %a /dev/fuse)" != 666 ]; then
        as_root chmod 666 /dev/fuse
    fi
}

# ensure_user NAME: a system account without a home or login, for tests that act as a user
# (fusermount3 refuses a uid without a name).
ensure_user() {
    id -u "$1" >/dev/null 2>&1 ||
        as_root useradd --system --no-create-home --shell /usr/sbin/nologin "$1"
}

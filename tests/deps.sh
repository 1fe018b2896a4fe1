#!/bin/sh
# Install everything the build and the tests need, idempotently (a second run does nothing and
# takes about a second). Needs root for apt. Writes the chosen kernel ABI to target/kver.
#
#  - Debian packages: headers of the test kernel, QEMU, static busybox, cpio, build tools, and
#    DejaVu Sans for the make bench chart (read at run time, never shipped).
#  - Rust: the x86_64-unknown-none target and rust-src for -Zbuild-std (the toolchain itself is
#    pinned by rust-toolchain.toml and installed by rustup on first use).
#  - The Debian kernel image the VM tests boot, unpacked under target/kimg/$KVER (never installed
#    as this machine's kernel).
#
# KVER=6.1.0-NN-amd64 pins the kernel ABI; by default it follows Debian's linux-image-amd64.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$ROOT/target"

need_update=1
apt_update() {
    if [ $need_update = 1 ]; then
        echo "deps: apt-get update" >&2
        apt-get update -qq >&2
        need_update=0
    fi
}

if [ -z "${KVER:-}" ]; then
    resolve() {
        apt-cache depends linux-image-amd64 2>/dev/null |
            awk '/Depends: linux-image-[0-9]/{sub("linux-image-", "", $2); print $2; exit}'
    }
    KVER=$(resolve)
    if [ -z "$KVER" ]; then apt_update; KVER=$(resolve); fi
    [ -n "$KVER" ] || { echo "deps: cannot resolve the kernel version from linux-image-amd64" >&2; exit 1; }
fi

PKGS="linux-headers-$KVER qemu-system-x86 busybox-static cpio gcc make binutils kmod gzip fonts-dejavu-core"
missing=
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt_update
    echo "deps: installing$missing" >&2
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
fi

cd "$ROOT"
rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none ||
    rustup target add x86_64-unknown-none >&2
rustup component list --installed 2>/dev/null | grep -q '^rust-src' ||
    rustup component add rust-src >&2

KIMG=$ROOT/target/kimg/$KVER
if [ ! -f "$KIMG/boot/vmlinuz-$KVER" ] || [ ! -f "$KIMG/lib/modules/$KVER/modules.dep" ]; then
    echo "deps: fetching the test VM kernel linux-image-$KVER" >&2
    rm -rf "$KIMG" "$ROOT/target/kimg/deb" && mkdir -p "$ROOT/target/kimg/deb" "$KIMG"
    (cd "$ROOT/target/kimg/deb" && apt-get download "linux-image-$KVER" >/dev/null 2>&1) || {
        apt_update
        (cd "$ROOT/target/kimg/deb" && apt-get download "linux-image-$KVER" >&2)
    }
    dpkg -x "$ROOT"/target/kimg/deb/linux-image-"$KVER"_*.deb "$KIMG"
    depmod -b "$KIMG" "$KVER"
    rm -rf "$ROOT/target/kimg/deb"
fi
echo "$KVER" > "$ROOT/target/kver"

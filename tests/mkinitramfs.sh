#!/bin/sh
# mkinitramfs.sh OUT.cpio.gz: pack the test VM's root filesystem.
#   /init             tests/vm/init.sh
#   /bin/busybox      Debian's static busybox (applets installed at boot)
#   /lg.ko            the module under test
#   /lg/lguest, /lg/lgprobe   static launcher and probes (make userspace)
#   /lg/nativebench   native costs for make bench (make userspace; left out if not built)
#   /scenarios/       tests/vm/scenarios
#   /lib/modules/     the test kernel's own modules we use (tun, bridge), with modules.dep
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$1
KVER=${KVER:-$(cat "$ROOT/target/kver")}
KIMG=$ROOT/target/kimg/$KVER
BIN=$ROOT/target/x86_64-unknown-linux-gnu/release
# A stage of its own: several harness runs may build at once.
STAGE=$ROOT/target/vm/stage.$$
trap 'rm -rf "$STAGE"' EXIT

for f in "$ROOT/lg.ko" "$BIN/lguest" "$BIN/lgprobe" /bin/busybox; do
    [ -f "$f" ] || { echo "mkinitramfs: missing $f (run make)" >&2; exit 1; }
done

rm -rf "$STAGE"
mkdir -p "$STAGE/bin" "$STAGE/lg" "$STAGE/scenarios" "$STAGE/lib/modules/$KVER" "$STAGE/etc"
cp /bin/busybox "$STAGE/bin/busybox"
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$STAGE/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$STAGE/etc/group"
cp "$ROOT/tests/vm/init.sh" "$STAGE/init"
chmod +x "$STAGE/init"
cp "$ROOT/lg.ko" "$STAGE/lg.ko"
cp "$BIN/lguest" "$BIN/lgprobe" "$STAGE/lg/"
[ -f "$BIN/nativebench" ] && cp "$BIN/nativebench" "$STAGE/lg/"
for g in "$ROOT"/target/guests/*; do
    [ -f "$g" ] && cp "$g" "$STAGE/lg/"
done
cp "$ROOT"/tests/vm/scenarios/* "$STAGE/scenarios/"

# In-tree modules later scenarios need, with their dependencies.
MODS="tun bridge"
KMOD=$KIMG/lib/modules/$KVER
for m in $MODS; do
    for dep in $(modprobe -d "$KIMG" -S "$KVER" --show-depends "$m" 2>/dev/null | awk '$1=="insmod"{print $2}'); do
        rel=${dep#"$KIMG"/}
        mkdir -p "$STAGE/$(dirname "$rel")"
        cp "$KIMG/$rel" "$STAGE/$rel"
    done
done
cp "$KMOD"/modules.order "$KMOD"/modules.builtin* "$STAGE/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$STAGE" "$KVER"

(cd "$STAGE" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"

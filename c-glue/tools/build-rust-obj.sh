#!/bin/sh
# Build the Rust half of lg.ko as ONE relocatable object the 6.1 module loader accepts:
#   c-glue/lg_rust.o_shipped
# Steps (why: docs/hacking.md "How the module is built", rust-kmod-toolchain.md §5-6):
#  1. cargo builds the lg-kmod staticlib for x86_64-unknown-none with kernel code generation
#     (.cargo/config.toml) and a core/compiler_builtins rebuilt with the same flags (-Zbuild-std).
#  2. compiler_builtins' weak mem*/strlen are renamed away so the kernel's exports are used.
#  3. ld -r --gc-sections keeps only what the lg_rust_* entry points reach.
#  4. objtool (the kernel's, with the flags Kbuild uses for C) adds ORC unwind data and the
#     retpoline/return-thunk site tables; any objtool output is an error.
#  5. check-kobj.sh refuses relocations the loader rejects, TLS, and unexported imports.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KDIR=${KDIR:?KDIR must name the kernel headers directory}
OUT=$ROOT/c-glue/lg_rust.o_shipped
WORK=$ROOT/target/kobj

cd "$ROOT"
RUSTC_BOOTSTRAP=1 cargo build --quiet -p lg-kmod --release --target x86_64-unknown-none \
    -Zbuild-std=core,compiler_builtins
LIB=$ROOT/target/x86_64-unknown-none/release/liblg_kmod.a

rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
ar x "$LIB"
RENAME=
for s in memcpy memmove memset memcmp bcmp strlen; do RENAME="$RENAME --redefine-sym $s=__lgcb_$s"; done
# shellcheck disable=SC2086 # word splitting of $RENAME is intended
objcopy $RENAME compiler_builtins-*.o cb.o
ROOTS=$(readelf -sW lg_kmod-*.o | awk '$5=="GLOBAL" && $7!="UND" && $8 ~ /^lg_rust_/ {print "-u", $8}')
[ -n "$ROOTS" ] || { echo "build-rust-obj: no lg_rust_* entry points found" >&2; exit 1; }
# shellcheck disable=SC2086
ld -r --gc-sections $ROOTS -o rcore.o lg_kmod-*.o cb.o
objcopy --remove-section=.llvmbc --remove-section=.llvmcmd --remove-section=.eh_frame \
    --remove-section=.rela.eh_frame --wildcard --keep-global-symbol='lg_rust_*' rcore.o
OT=$("$KDIR/tools/objtool/objtool" --hacks=jump_label --hacks=noinstr --orc --retpoline --rethunk \
    --sls --static-call --uaccess --link --module rcore.o 2>&1) || true
if [ -n "$OT" ]; then
    echo "build-rust-obj: objtool complained about the Rust object:" >&2
    echo "$OT" >&2
    exit 1
fi
"$ROOT/c-glue/tools/check-kobj.sh" rcore.o "$KDIR/Module.symvers"
# Replace the shipped object only when it changed, so Kbuild does not relink lg.ko needlessly.
cmp -s rcore.o "$OUT" || cp rcore.o "$OUT"

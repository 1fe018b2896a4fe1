#!/bin/sh
# Proves the module build gate (c-glue/tools/check-kobj.sh) can fail: it must reject an object
# with a GOTPCREL relocation, one with a TLS section, and one importing a symbol the kernel does
# not export, and accept a clean one.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KDIR=${KDIR:?}
CHECK=$ROOT/c-glue/tools/check-kobj.sh
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0

try() { # try NAME WANT(pass|fail) ASM
    printf '%s\n' "$3" > "$T/$1.s"
    as --64 -o "$T/$1.o" "$T/$1.s"
    if "$CHECK" "$T/$1.o" "$KDIR/Module.symvers" > "$T/$1.out" 2>&1; then got=pass; else got=fail; fi
    if [ "$got" = "$2" ]; then
        echo "ok - check-kobj: $1 -> $got $(head -1 "$T/$1.out")"
    else
        echo "not ok - check-kobj: $1 -> $got, want $2: $(cat "$T/$1.out")"
        fails=$((fails + 1))
    fi
}

try clean pass '.text
.globl lg_rust_x
lg_rust_x: call memcpy
 jmp __x86_return_thunk'
try gotpcrel fail '.text
f: movq memcpy@GOTPCREL(%rip), %rax'
try tls fail '.section .tbss,"awT",@nobits
v: .zero 8'
try unexported fail '.text
f: call idt_table'
try shim-import pass '.text
f: call lg_something_from_the_shim'
[ $fails -eq 0 ]

#!/bin/sh
# check-kobj.sh OBJECT MODULE.SYMVERS [ALLOWED-UNDEFINED-PREFIX]
# Fails (with the reason) if OBJECT would be refused or misbehave when loaded by the 6.1 x86_64
# module loader: a relocation type other than the seven it applies (arch/x86/kernel/module.c),
# thread-local sections, or an undefined symbol the kernel does not export. Undefined symbols
# starting with PREFIX (default lg_, i.e. provided by the C shim) are allowed.
set -eu
OBJ=$1
SYMVERS=$2
PREFIX=${3:-lg_}
status=0

bad=$(readelf -rW "$OBJ" | awk '/R_X86_64_/{print $3}' | sort -u |
      grep -vxE 'R_X86_64_(NONE|64|32|32S|PC32|PLT32|PC64)' || true)
if [ -n "$bad" ]; then
    echo "check-kobj: $OBJ has relocation types the 6.1 module loader rejects:" $bad >&2
    status=1
fi
if readelf -SW "$OBJ" | grep -qE '\.t(data|bss)'; then
    echo "check-kobj: $OBJ has thread-local (.tdata/.tbss) sections; modules cannot have TLS" >&2
    status=1
fi
for s in $(readelf -sW "$OBJ" | awk '$7=="UND" && $8!="" {print $8}' | sort -u); do
    case $s in "$PREFIX"*) continue ;; esac
    if ! awk -v s="$s" '$2==s {f=1} END {exit !f}' "$SYMVERS"; then
        echo "check-kobj: $OBJ needs symbol '$s', which this kernel does not export" >&2
        status=1
    fi
done
exit $status

# 1,000 open/close cycles (half of them initializing a guest) must not leak: MemFree and slab
# usage may drift by less than 1 MiB.
# timeout: 180
. /scenarios/lib.sh
load_lg
lgprobe openclose 1000 > /dev/null || fail "warm-up cycles failed"
settle
free0=$(meminfo MemFree); slab0=$(meminfo Slab)
lgprobe openclose 1000 || fail "lgprobe openclose reported failures"
settle
free1=$(meminfo MemFree); slab1=$(meminfo Slab)
dfree=$((free0 - free1)); dslab=$((slab1 - slab0))
echo "MemFree ${free0} -> ${free1} kB (drift ${dfree} kB), Slab ${slab0} -> ${slab1} kB (drift ${dslab} kB)"
[ $dfree -lt 1024 ] || fail "MemFree dropped ${dfree} kB over 1000 open/close cycles"
[ $dslab -lt 1024 ] || fail "Slab grew ${dslab} kB over 1000 open/close cycles"
unload_lg
ok "no drift"

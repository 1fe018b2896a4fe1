# 1,000 guests created, run and destroyed the ways real life does it (lgprobe lifecycle):
# launchers SIGKILLed mid-run, /dev/lguest closed by another thread during read(), guests that die
# by themselves. Afterwards no guest page may be pinned, no shadow table left, and free memory and
# slab may drift by less than 1 MiB (measured after a warm-up of 100).
# timeout: 600
. /scenarios/lib.sh
load_lg
tables=$(cat /sys/module/lg/parameters/table_pages)
lgprobe lifecycle 100 > /dev/null || fail "warm-up failed"
settle
free_kb() {
    pcp=$(awk '$1 == "count:" { s += $2 } END { print s * 4 }' /proc/zoneinfo)
    echo $(( $(meminfo MemFree) + pcp ))
}
free0=$(free_kb); slab0=$(meminfo Slab)
lgprobe lifecycle 1000 || fail "lgprobe lifecycle reported failures"
settle
free1=$(free_kb); slab1=$(meminfo Slab)
dfree=$((free0 - free1)); dslab=$((slab1 - slab0))
echo "free ${free0} -> ${free1} kB (drift ${dfree} kB), slab ${slab0} -> ${slab1} kB (drift ${dslab} kB)"
echo "pinned pages: $(cat /sys/module/lg/parameters/pinned_pages), page-table pages: $(cat /sys/module/lg/parameters/table_pages) (switcher's own: $tables)"
[ "$(cat /sys/module/lg/parameters/pinned_pages)" = 0 ] || fail "guest pages left pinned"
[ "$(cat /sys/module/lg/parameters/table_pages)" = "$tables" ] || fail "shadow page tables leaked"
[ $dfree -lt 1024 ] || fail "free memory dropped ${dfree} kB over 1000 guests"
[ $dslab -lt 1024 ] || fail "slab grew ${dslab} kB over 1000 guests"
unload_lg

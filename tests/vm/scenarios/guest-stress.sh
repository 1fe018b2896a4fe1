# Guests that push the host's shadow paging and must survive it: 10,000 distinct page tables
# (shadow-thrash), one page mapped twice with conflicting permissions (alias-perms), PTEs changed
# while read (pte-race, here with the launcher moved between CPUs every few ms), a 4 GiB guest
# touching its last page (memory-top), and `syscall`/`ud2` in the last bytes of user space.
# timeout: 300
. /scenarios/lib.sh
load_lg
tables=$(cat /sys/module/lg/parameters/table_pages)
run() { # run MEM MODE WANT
    lguest "$1" /lg/lgtest lgtest="$2" < /dev/null > /tmp/o 2>&1
    rc=$?
    if [ $rc = 0 ] && grep -q "$3" /tmp/o; then
        echo "ok - $2 ($1): $(grep "$3" /tmp/o | tail -1)"
    else
        cat /tmp/o
        fail "$2: exit $rc, want 0 and '$3'"
    fi
}
run 64m shadow-thrash 'ok: survived shadow-thrash'
run 32m alias-perms 'ok: survived alias-perms'
run 32m user-ud-at-top 'ok: survived user-ud-at-top'
run 4g memory-top 'ok: memory-top at 0xfffff000'
# The PTE race again while the launcher hops between CPUs.
ncpu=$(grep -c ^processor /proc/cpuinfo)
lguest 32m /lg/lgtest lgtest=pte-race < /dev/null > /tmp/o 2>&1 &
pid=$!
moves=0
while kill -0 $pid 2>/dev/null; do
    taskset -p $((1 << (moves % ncpu))) $pid > /dev/null 2>&1 && moves=$((moves + 1))
    usleep 2000
done
wait $pid; rc=$?
grep -q 'ok: survived pte-race' /tmp/o && [ $rc = 0 ] || { cat /tmp/o; fail "pte-race under migration: exit $rc"; }
echo "ok - pte-race while moved $moves times: $(grep 'pte-race:' /tmp/o)"
[ "$(cat /sys/module/lg/parameters/pinned_pages)" = 0 ] || fail "pages still pinned"
[ "$(cat /sys/module/lg/parameters/table_pages)" = "$tables" ] || fail "shadow tables leaked"
unload_lg

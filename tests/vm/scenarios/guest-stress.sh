# Guests that push the host's shadow paging and must survive it: 10,000 distinct page tables
# (shadow-thrash), one page mapped twice with conflicting permissions (alias-perms), PTEs changed
# while read (pte-race, here with the launcher moved between CPUs every few ms), a 4 GiB guest
# touching its last page (memory-top), and `syscall`/`ud2` in the last bytes of user space.
# timeout: 300
. /scenarios/lib.sh
load_lg
tables=$(lg_param table_pages)
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
lguest 32m /lg/lgtest lgtest=pte-race < /dev/null > /tmp/o 2>&1 &
pid=$!
hop $pid 2000
wait $pid; rc=$?
grep -q 'ok: survived pte-race' /tmp/o && [ $rc = 0 ] || { cat /tmp/o; fail "pte-race under migration: exit $rc"; }
echo "ok - pte-race while moved $moves times: $(grep 'pte-race:' /tmp/o)"
check_clean "$tables"
unload_lg

# Guest user space: ring-3 processes with their own address spaces, system calls bounced from
# `syscall`, COW fork, demand paging, a preemptive scheduler; isolation between processes;
# 10,000+ context switches and 100,000 page faults (lgtest=user). Then the privileged-instruction
# emulation suite (lgtest=privileged). No guest page may stay pinned afterwards.
# timeout: 300
. /scenarios/lib.sh
load_lg
for mode in user privileged; do
    lguest 64m /lg/lgtest lgtest=$mode < /dev/null > /tmp/o 2>&1
    rc=$?
    grep -E '^(ok|not ok|SUMMARY|bench|context-switches|entry-invariants)' /tmp/o
    suite_passed /tmp/o || { cat /tmp/o; fail "lgtest=$mode failed"; }
    [ $rc -eq 0 ] || fail "lgtest=$mode: launcher exited $rc"
done
check_unpinned
unload_lg

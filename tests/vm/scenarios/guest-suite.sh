# The Rust test guest's suite runs to completion: every test passes and the guest powers off.
# timeout: 240
. /scenarios/lib.sh
load_lg
lguest 32m /lg/lgtest lgtest=suite < /dev/null > /tmp/out 2>&1
rc=$?
cat /tmp/out
echo "launcher exit status: $rc"
suite_passed /tmp/out || fail "the suite did not pass"
[ $rc -eq 0 ] || fail "launcher exited $rc"
echo "pinned pages after exit: $(lg_param pinned_pages)"
check_unpinned
unload_lg

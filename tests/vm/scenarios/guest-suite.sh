# The Rust test guest's suite runs to completion: every test passes and the guest powers off.
# timeout: 240
. /scenarios/lib.sh
load_lg
lguest 32m /lg/lgtest lgtest=suite < /dev/null > /tmp/out 2>&1
rc=$?
cat /tmp/out
echo "launcher exit status: $rc"
grep -q '^SUMMARY: [0-9]* tests, 0 failures' /tmp/out || fail "the suite did not pass"
[ $rc -eq 0 ] || fail "launcher exited $rc"
echo "pinned pages after exit: $(cat /sys/module/lg/parameters/pinned_pages)"
[ "$(cat /sys/module/lg/parameters/pinned_pages)" = 0 ] || fail "pages still pinned after the guest exited"
[ "$(cat /sys/module/lg/parameters/table_pages)" -gt 0 ] || true
unload_lg

# /dev/lguest is a root-only misc character device.
. /scenarios/lib.sh
load_lg
mode=$(stat -c '%A %u %g' /dev/lguest)
[ "$mode" = "crw------- 0 0" ] || fail "/dev/lguest is '$mode', want 'crw------- 0 0' (root-only)"
major=$(stat -c '%t' /dev/lguest)
[ "$major" = a ] || fail "/dev/lguest major is 0x$major, want 0xa (misc)"
grep -q ' lguest$' /proc/misc || fail "lguest missing from /proc/misc"
ok "/dev/lguest is $mode, misc major 10"
# A non-root user cannot open it.
if su -s /bin/sh nobody -c 'cat /dev/lguest' 2>/tmp/err; then fail "nobody could open /dev/lguest"; fi
grep -q 'Permission denied' /tmp/err || fail "non-root open gave: $(cat /tmp/err)"
ok "non-root open refused"
unload_lg

# Helpers sourced by every scenario. A scenario fails by exiting non-zero; `fail` says why.
LGKO=/lg.ko

fail() {
    echo "FAIL: $*"
    exit 1
}

ok() {
    echo "ok - $*"
}

load_lg() {
    insmod $LGKO "$@" || fail "insmod lg.ko $* failed"
    [ -c /dev/lguest ] || fail "/dev/lguest missing after insmod"
}

unload_lg() {
    rmmod lg || fail "rmmod lg failed (module still in use?)"
    [ ! -e /dev/lguest ] || fail "/dev/lguest still exists after rmmod"
}

# meminfo FIELD: the value in kB.
meminfo() {
    awk -v f="$1:" '$1==f {print $2}' /proc/meminfo
}

settle() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
    sleep 1
}

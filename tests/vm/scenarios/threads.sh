# Cross-thread rules: BREAK blocks and is released, signals interrupt it, racing initializers,
# close while another thread reads (lgprobe threads).
# timeout: 120
. /scenarios/lib.sh
load_lg
lgprobe threads || fail "lgprobe threads reported failures"
unload_lg

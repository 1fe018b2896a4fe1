# 10,000 random writes checked against a model of the protocol (lgprobe fuzz).
# timeout: 300
. /scenarios/lib.sh
load_lg
lgprobe fuzz 10000 || fail "lgprobe fuzz reported failures"
unload_lg

# Every request code with short, long, ragged and garbage bodies; reads before init; double
# init; bad pointers; owner/non-owner rules. Exact errno for each (lgprobe protocol).
# timeout: 120
. /scenarios/lib.sh
load_lg
lgprobe protocol || fail "lgprobe protocol reported failures"
unload_lg

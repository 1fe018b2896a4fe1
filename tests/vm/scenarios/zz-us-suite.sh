# scratch (helper): the suite, timed
# timeout: 240
. /scenarios/lib.sh
load_lg
t0=$(cut -d' ' -f1 /proc/uptime)
lguest 32m /lg/lgtest lgtest=suite > /tmp/out 2>&1
rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
cat /tmp/out
echo "launcher exit status: $rc, $(awk -v a=$t0 -v b=$t1 'BEGIN{print b-a}') s"
unload_lg

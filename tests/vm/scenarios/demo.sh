# `make run`: what works so far, shown live.
. /scenarios/lib.sh
echo "== lguest demo: loading lg.ko"
load_lg
dmesg | grep 'lg:' | sed 's/^/   /'
ls -l /dev/lguest
echo "== lguest --version: $(lguest --version)"
echo "== the launcher and the module talk:"
echo "not a kernel" > /tmp/kernel
lguest --verbose 64m /tmp/kernel root=/dev/lgba 2>&1 | sed 's/^/   /'
echo "== protocol self-check:"
lgprobe protocol | tail -1 | sed 's/^/   /'
unload_lg
echo "== lg.ko unloaded cleanly"

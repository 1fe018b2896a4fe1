# `make run`: what works so far, shown live in the test VM.
. /scenarios/lib.sh
echo "== loading lg.ko"
load_lg
dmesg | grep 'lg:' | sed 's/^\[[^]]*\] /   /'
echo "== lguest 32m /lg/lgtest lgtest=suite   (a Rust guest kernel at ring 1, its console below)"
lguest 32m /lg/lgtest lgtest=suite < /dev/null
echo "== launcher exit status: $?"
echo "== a hostile guest: lguest 32m /lg/lgtest lgtest=iret-ring0"
lguest 32m /lg/lgtest lgtest=iret-ring0 < /dev/null
echo "== launcher exit status: $? (the host killed the guest, and only the guest)"
echo "== guest pages still pinned: $(cat /sys/module/lg/parameters/pinned_pages)"
unload_lg
echo "== lg.ko unloaded; kernel warnings since boot: $(dmesg | grep -cE 'WARNING|BUG|Oops')"

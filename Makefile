# lguest: the one entry point.
#   make          build lg.ko, the launcher and the guests
#   make test     lint, host unit tests, module build gates, then the QEMU VM matrix
#   make run      boot the test VM with lg.ko loaded and show what works so far
#   make bench    guest vs native cost of basic operations in the test VM (docs/bench.md)
#   make deps     install build/test dependencies (run automatically by the targets above)
# KVER=6.1.0-NN-amd64 or KDIR=/path/to/headers override the kernel the module is built for.

ROOT := $(CURDIR)
KVER ?= $(shell cat $(ROOT)/target/kver 2>/dev/null)
KDIR ?= /usr/src/linux-headers-$(KVER)
HOST_TARGET := x86_64-unknown-linux-gnu
STATIC_BIN := $(ROOT)/target/$(HOST_TARGET)/release
DEPS_STAMP := $(ROOT)/target/.deps-stamp

export KVER KDIR


.PHONY: all module rust-obj userspace guests deps test lint unit gates vmtest run bench clean FORCE

all: module userspace guests

$(DEPS_STAMP): tests/deps.sh rust-toolchain.toml
	tests/deps.sh
	touch $@

deps: $(DEPS_STAMP)

# The Rust half first (its script fails on loader-hostile relocations, TLS or unexported
# symbols), then Kbuild links it with the C shim; the finished lg.ko is checked again.
rust-obj: $(DEPS_STAMP)
	@test -d "$(KDIR)" || { echo "make: kernel headers not found in '$(KDIR)' (run: make deps, or set KDIR=)"; exit 1; }
	c-glue/tools/build-rust-obj.sh

module: rust-obj
	$(MAKE) -C $(KDIR) M=$(ROOT) modules
	c-glue/tools/check-kobj.sh lg.ko $(KDIR)/Module.symvers __none__

# Static userspace programs for the test VM (and the host): the launcher, the probes and the
# native benchmarks.
userspace: $(DEPS_STAMP)
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
		--target $(HOST_TARGET) -p launcher -p lgprobe -p nativebench

# The guest kernels the project ships (guests/build.sh): target/guests/<name>.
guests: $(DEPS_STAMP)
	guests/build.sh

test: $(DEPS_STAMP)
	tests/run-all.sh

run: module userspace guests
	cargo run --quiet --release -p harness -- run

# Benchmarks, not tests: a table of guest vs native cycles per operation; also writes
# target/bench/bench.{json,png} and copies them to docs/.
bench: module userspace guests
	cargo run --quiet --release -p harness -- bench

clean:
	-test -d "$(KDIR)" && $(MAKE) -C $(KDIR) M=$(ROOT) clean
	rm -f c-glue/lg_rust.o_shipped
	rm -rf c-glue/generated
	cargo clean

# A thin wrapper over CMake (as neovim's is).
#   make run    install what is missing, build, run flows/quickstart.lua
#   make test   install what is missing, build, run every test, then again
#               under AddressSanitizer and UndefinedBehaviorSanitizer
#   make bench  print the benchmark figures (never part of the tests)
#   make install [PREFIX=/usr/local]   build, then install under PREFIX
#               (DESTDIR=... for staging, as usual)
#
# These builds are the project's own (CI runs `make test`): warnings are
# errors here (MF_WERROR=ON), not for someone building a release with CMake.

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX     ?= /usr/local
DEB_PACKAGES = cmake pkg-config gcc make lua5.4 liblua5.4-dev libuv1-dev lua-unit \
               libreadline-dev tmux lua-luv luarocks man-db binutils \
               clang libclang-rt-dev
# Only for bench/codec.lua's comparison (it runs without).
BENCH_PACKAGES = lua-cjson

.PHONY: all deps build build-asan run test test-asan bench install format clean

all: build

# Installs the Debian packages that are missing: with apt-get when root,
# otherwise prints the one command that would.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing packages; run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMF_WERROR=ON >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMF_SANITIZE=ON -DMF_WERROR=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	@$(BUILD)/moonflow flows/quickstart.lua

test: build build-asan
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@echo "== again under AddressSanitizer + UndefinedBehaviorSanitizer =="
	@cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS)

install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

bench: build
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BENCH_PACKAGES)"
	@$(BUILD)/moonflow bench/map.lua
	@$(BUILD)/moonflow bench/sleep.lua
	@$(BUILD)/moonflow bench/chain.lua
	@$(BUILD)/moonflow bench/fanin.lua
	@$(BUILD)/moonflow bench/codec.lua
	@$(BUILD)/moonflow bench/runners.lua

format:
	clang-format -i engine/*.[ch] bindings/*.[ch] spec/c/*.c spec/install_host/*.c spec/fuzz/*.c

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

# A thin wrapper over CMake (as neovim's is).
#   make run    install what is missing, build, run flows/quickstart.lua
#   make test   install what is missing, build, run every test, then again
#               under AddressSanitizer and UndefinedBehaviorSanitizer (the
#               second pass runs even when the first failed); prints a
#               summary of both and fails if either did
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
               clang libclang-rt-dev libcurl4-openssl-dev libsqlite3-dev sqlite3 \
               python3 openssl
# Only for bench/codec.lua's comparison and bench/compare.lua's peak RSS and
# callgrind figures (both run without, and say what they could not measure).
BENCH_PACKAGES = lua-cjson time valgrind

.PHONY: all deps build build-asan run test test-asan bench fuzz install format clean

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

# Both passes always run: a failure in the first must not hide the second's.
test: build build-asan
	@rc=0; summary=""; \
	for pass in "$(BUILD):tests" \
	            "$(ASAN_BUILD):again under AddressSanitizer + UndefinedBehaviorSanitizer"; do \
	  dir=$${pass%%:*}; echo "== $$dir: $${pass#*:} =="; \
	  start=$$(date +%s); \
	  if (cd $$dir && ctest --output-on-failure -j $(JOBS)); then \
	    result="passed"; \
	  else \
	    rc=1; result="FAILED: $$(sed 's/^[0-9]*://' $$dir/Testing/Temporary/LastTestsFailed.log 2>/dev/null | tr '\n' ' ')"; \
	  fi; \
	  summary="$$summary  $$dir: $$result ($$(( $$(date +%s) - start )) s)\n"; \
	done; \
	printf '== make test ==\n%b' "$$summary"; \
	exit $$rc

install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

bench: build
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BENCH_PACKAGES)"
	@$(BUILD)/moonflow bench/map.lua
	@$(BUILD)/moonflow bench/sleep.lua
	@$(BUILD)/moonflow bench/chain.lua
	@$(BUILD)/moonflow bench/fanin.lua
	@$(BUILD)/moonflow bench/wait_list.lua
	@$(BUILD)/moonflow bench/codec.lua
	@$(BUILD)/moonflow bench/runners.lua
	@$(BUILD)/moonflow bench/latency.lua
	@MF_PROGRAM=$(BUILD)/moonflow MOONFLOW_LOG_LEVEL=OFF $(BUILD)/moonflow bench/io.lua
	@cmake --build $(BUILD) --target bench_sqlite_rows >/dev/null && $(BUILD)/bench_sqlite_rows
	@MOONFLOW_STORE=off MF_PROGRAM=$(BUILD)/moonflow MF_GAME_LOOP=$(BUILD)/examples/game_loop $(BUILD)/moonflow bench/compare.lua

# Looks for new finds: the API fuzzer with seeds from the clock, FUZZ_SECONDS
# under each of lua5.4 and the moonflow program, in the ASan build.
FUZZ_SECONDS ?= 300
fuzz: build-asan
	@cd $(CURDIR) && MF_MODULE_DIR=$(ASAN_BUILD) \
	  FUZZ_LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
	  ASAN_OPTIONS=detect_leaks=1 sh spec/fuzz/run_fuzz.sh \
	  --seconds $(FUZZ_SECONDS) --keep-going -- lua5.4 spec/fuzz/api_fuzz.lua
	@sh spec/fuzz/run_fuzz.sh --seconds $(FUZZ_SECONDS) --keep-going \
	  -- $(ASAN_BUILD)/moonflow spec/fuzz/api_fuzz.lua

format:
	clang-format -i engine/*.[ch] bindings/*.[ch] spec/c/*.c spec/install_host/*.c spec/fuzz/*.c

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

#!/bin/sh
# install_test.sh -- installs a build into a temporary prefix and uses it as
# a C host author and a Lua user would, from outside the source tree:
#   the layout (program, man page, module, libraries, headers, pkg-config
#   file, CMake package); each header alone under -std=c11 -pedantic;
#   an outside C host (spec/install_host/) built with pkg-config (shared and
#   static), with find_package(moonflow), and with add_subdirectory of the
#   source tree; the module in stock lua5.4 through LUA_CPATH; the
#   installed program; the man page through man -l; the rockspec through
#   luarocks lint and an offline luarocks make.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR   (run by ctest as "install")
set -u
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$2" && pwd)
CC=${CC:-cc}

T=$(mktemp -d "${TMPDIR:-/tmp}/moonflow-install.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
P=$T/prefix
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() {
  failed=$((failed + 1))
  echo "not ok - $1"
  [ -s "$T/out" ] && sed 's/^/    /' "$T/out" | tail -40
}
# check NAME COMMAND...: runs the command, its output in $T/out.
check() {
  name=$1
  shift
  if "$@" >"$T/out" 2>&1; then ok "$name"; else not_ok "$name"; fi
}
# The output of the last check contains the text.
has() { grep -q -- "$1" "$T/out"; }

echo "# installing $BUILD into $P"
if ! cmake --install "$BUILD" --prefix "$P" >"$T/out" 2>&1; then
  not_ok "cmake --install"
  echo "0 passed, 1 failed"
  exit 1
fi
ok "cmake --install --prefix"

VERSION=$("$P/bin/moonflow" --version | sed -n 's/^moonflow \([0-9.]*\),.*/\1/p')
[ -n "$VERSION" ] && ok "installed program reports version $VERSION" ||
  not_ok "installed program reports its version"

# {====== The layout ======
for f in bin/moonflow share/man/man1/moonflow.1 lib/lua/5.4/moonflow.so \
  lib/libmoonflow.so lib/libmoonflow.a include/moonflow.h \
  include/moonflow_lua.h include/moonflow_version.h \
  lib/pkgconfig/moonflow.pc lib/cmake/moonflow/moonflowConfig.cmake \
  lib/cmake/moonflow/moonflowConfigVersion.cmake share/doc/moonflow/LICENSE \
  share/doc/moonflow/lua-api.md share/doc/moonflow/c-api.md; do
  if [ -e "$P/$f" ]; then ok "installed $f"; else not_ok "installed $f"; fi
done
check "libmoonflow.so has a versioned SONAME" \
  sh -c "readelf -d '$P/lib/libmoonflow.so' | grep SONAME"
soname=$(sed -n 's/.*\[\(libmoonflow\.so\.[0-9.]*\)\].*/\1/p' "$T/out")
[ -n "$soname" ] && [ -e "$P/lib/$soname" ] && ok "the SONAME $soname is installed" ||
  not_ok "the SONAME file is installed"
check "libmoonflow.so exports the engine and the Lua bindings" \
  sh -c "nm -D --defined-only '$P/lib/libmoonflow.so' | grep -w -e mf_engine_new -e mf_engine_step -e mf_engine_live_runs -e mf_engine_close -e mf_lua_attach -e luaopen_moonflow -e mf_lua_run_chunk -e mf_lua_result -e mf_version | wc -l | grep -x 9"
check "libmoonflow.so exports nothing internal" \
  sh -c "! nm -D --defined-only '$P/lib/libmoonflow.so' | grep ' T ' | grep -v -e ' mf_' -e ' luaopen_moonflow'"
check "libmoonflow.a holds the engine and the bindings" \
  sh -c "ar t '$P/lib/libmoonflow.a' | grep -e '^engine.c.o' -e '^module.c.o' | wc -l | grep -x 2"
check "moonflow.h includes no Lua header" \
  sh -c "! grep -n '#include.*lua' '$P/include/moonflow.h'"
# }======

# {====== Headers under strict C11 ======
UV_CFLAGS=$(pkg-config --cflags libuv)
check "moonflow.h alone: -std=c11 -pedantic, no Lua include path" \
  sh -c "printf '#include \"moonflow.h\"\nint main(void) { return mf_version() == MF_VERSION_HEX ? 0 : 1; }\n' |
    $CC -std=c11 -pedantic -Wall -Wextra -Werror -I'$P/include' $UV_CFLAGS -x c - -o '$T/h1' -L'$P/lib' -lmoonflow"
export PKG_CONFIG_PATH="$P/lib/pkgconfig"
MF_CFLAGS=$(pkg-config --cflags moonflow)
check "moonflow_lua.h alone: -std=c11 -pedantic" \
  sh -c "printf '#include \"moonflow_lua.h\"\nint main(void) { lua_CFunction open = luaopen_moonflow; return open(0); }\n' |
    $CC -std=c11 -pedantic -Wall -Wextra -Werror $MF_CFLAGS -x c - -fsyntax-only"
# Included after a system header, it is too late to ask for POSIX: a
# clear error rather than uv.h's.
printf '#include <stdio.h>\n#include "moonflow.h"\n' >"$T/late.c"
check "moonflow.h after a system header under -std=c11: a clear error" \
  sh -c "! $CC -std=c11 $MF_CFLAGS -fsyntax-only '$T/late.c'"
has "uv.h needs POSIX.1-2008" && ok "the error says what to do" || not_ok "the error says what to do"
# }======

# {====== A C host through pkg-config ======
check "pkg-config knows moonflow $VERSION" pkg-config --exact-version="$VERSION" moonflow
check "moonflow.pc requires libuv and lua5.4" \
  sh -c "pkg-config --print-requires moonflow | tr '\n' ' ' | grep -x 'libuv lua5.4 '"
check "host built with pkg-config (shared)" \
  sh -c "$CC -std=c11 -pedantic -Wall -Wextra -Werror '$SRC/spec/install_host/host.c' \
    $(pkg-config --cflags --libs moonflow) -Wl,-rpath,'$P/lib' -o '$T/host_pc'"
check "the pkg-config host runs" "$T/host_pc"
has "host ok $VERSION" && ok "the pkg-config host ran a flow" || not_ok "the pkg-config host ran a flow"
check "the pkg-config host uses the installed libmoonflow.so" \
  sh -c "ldd '$T/host_pc' | grep '$P/lib/$soname'"
static_libs=$(pkg-config --static --libs moonflow | sed "s|-lmoonflow|$P/lib/libmoonflow.a|")
check "host built with pkg-config --static (libmoonflow.a)" \
  sh -c "$CC -std=c11 -pedantic -Wall -Wextra -Werror '$SRC/spec/install_host/host.c' \
    $(pkg-config --cflags moonflow) $static_libs -o '$T/host_static'"
check "the static host runs, with no libmoonflow.so" \
  sh -c "'$T/host_static' && ! ldd '$T/host_static' | grep libmoonflow"
# }======

# {====== A C host through CMake ======
check "host configured with find_package(moonflow $VERSION)" \
  cmake -S "$SRC/spec/install_host" -B "$T/host_cmake" -DCMAKE_PREFIX_PATH="$P" \
  -DMF_EXPECTED_VERSION="$VERSION"
has "found moonflow $VERSION in $P/lib/cmake/moonflow" &&
  ok "find_package found the installed package" || not_ok "find_package found the installed package"
check "host built with find_package" cmake --build "$T/host_cmake"
check "the find_package host runs" "$T/host_cmake/host"
has "host ok $VERSION" && ok "the find_package host ran a flow" || not_ok "the find_package host ran a flow"
check "host configured with add_subdirectory(moonflow)" \
  cmake -S "$SRC/spec/install_host" -B "$T/host_sub" -DMOONFLOW_SOURCE_DIR="$SRC"
check "host built with add_subdirectory" cmake --build "$T/host_sub" -j 2
check "the add_subdirectory host runs" "$T/host_sub/host"
has "host ok $VERSION" && ok "the add_subdirectory host ran a flow" ||
  not_ok "the add_subdirectory host ran a flow"
# }======

# {====== Lua: the module in stock lua5.4 ======
check "stock lua5.4 looks in /usr/local/lib/lua/5.4 (the default prefix)" \
  lua5.4 -e 'assert(package.cpath:find("/usr/local/lib/lua/5.4/?.so", 1, true))'
check "stock lua5.4 loads the installed module through LUA_CPATH" \
  env LUA_CPATH="$P/lib/lua/5.4/?.so;;" lua5.4 -e "
    local mf = require 'moonflow'
    assert(package.searchpath('moonflow', package.cpath) == '$P/lib/lua/5.4/moonflow.so')
    assert(mf.version == '$VERSION', mf.version)
    assert(mf._VERSION == 'moonflow $VERSION', mf._VERSION)
    local double = mf.task(function(x) mf.sleep(0) return 2 * x end)
    assert(double:map({ 1, 2, 3 }):result()[3] == 6)
    print('lua ok')"
has "lua ok" && ok "the module ran a map" || not_ok "the module ran a map"
# }======

# {====== The installed program ======
check "the installed program runs a script" \
  "$P/bin/moonflow" -e "local mf = require 'moonflow'
    local t = mf.task(function(x) return x + 1 end)
    print('program ok ' .. t(41))"
has "program ok 42" && ok "the program's task returned" || not_ok "the program's task returned"
check "the installed program's --help" "$P/bin/moonflow" --help
for word in -e -i --quiet --version --help MOONFLOW_LOG_LEVEL MOONFLOW_HISTORY \
  "Exit status" 130; do
  has "$word" && ok "--help mentions $word" || not_ok "--help mentions $word"
done
"$P/bin/moonflow" --no-such-option >/dev/null 2>&1
[ $? -eq 2 ] && ok "a usage error exits 2" || not_ok "a usage error exits 2"
"$P/bin/moonflow" -e 'error("boom")' >/dev/null 2>&1
[ $? -eq 1 ] && ok "a script that raises exits 1" || not_ok "a script that raises exits 1"
# }======

# {====== The man page ======
check "man -l renders moonflow.1 without warnings" \
  sh -c "MANWIDTH=80 man --warnings -l '$P/share/man/man1/moonflow.1' 2>'$T/man.err' >'$T/man.txt' && ! [ -s '$T/man.err' ] || { cat '$T/man.err'; false; }"
cp "$T/man.txt" "$T/out"
for word in NAME SYNOPSIS OPTIONS ENVIRONMENT "EXIT STATUS" -e -i --quiet \
  --version --help MOONFLOW_LOG_LEVEL MOONFLOW_HISTORY 130; do
  has "$word" && ok "the man page has $word" || not_ok "the man page has $word"
done
check "man finds moonflow(1) under the prefix" \
  sh -c "MANPATH='$P/share/man' man -w moonflow | grep '$P/share/man/man1/moonflow.1'"
# }======

# {====== LuaRocks ======
# LuaRocks keeps its cache and configuration under HOME: a private one.
export HOME="$T/home"
mkdir -p "$HOME"
check "luarocks lint moonflow-scm-1.rockspec" luarocks lint "$SRC/moonflow-scm-1.rockspec"
# luarocks make builds in the source directory: a copy of the sources, as
# a clean clone has them.
mkdir -p "$T/src"
(cd "$SRC" && tar cf - --exclude='./build*' --exclude=./.git .) | (cd "$T/src" && tar xf -)
check "luarocks make (offline, Lua 5.4)" \
  sh -c "cd '$T/src' && luarocks --lua-version 5.4 --tree '$T/rocks' make moonflow-scm-1.rockspec"
check "the rock's module loads in stock lua5.4" \
  sh -c "eval \"\$(luarocks --lua-version 5.4 --tree '$T/rocks' path)\" &&
    lua5.4 -e \"local mf = require 'moonflow'
      assert(package.searchpath('moonflow', package.cpath):find('$T/rocks', 1, true))
      assert(mf.task(function() return 'rock ok' end)() == 'rock ok')
      print(mf._VERSION)\""
has "moonflow $VERSION" && ok "the rock is moonflow $VERSION" || not_ok "the rock is moonflow $VERSION"
check "the rock says its licence is MIT" \
  sh -c "luarocks --lua-version 5.4 --tree '$T/rocks' show moonflow | grep -i 'License:.*MIT'"
# }======

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

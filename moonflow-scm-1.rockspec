-- moonflow-scm-1.rockspec -- the Lua module, built with CMake as luv's is:
--   luarocks --lua-version 5.4 make moonflow-scm-1.rockspec
-- Only the module (require "moonflow") is built and installed; the program,
-- the C libraries and the headers come from `make install`.
rockspec_format = "3.0"
package = "moonflow"
version = "scm-1"
source = {
  -- The project has no public repository yet: set its URL here when it does
  -- (luarocks make builds from the working tree and does not use it).
  url = "git+https://moonflow.invalid/moonflow.git",
}
description = {
  summary = "A flow engine for Lua 5.4: tasks, flows, futures and states on libuv",
  detailed = [[
moonflow is a flow engine written in C and scripted in Lua 5.4, with
Prefect's programming model: tasks, flows, futures, states, retries,
timeouts and limits.  Every task run is a coroutine parked while it waits;
a C engine schedules them on a libuv loop (luv's, when luv is loaded
first).
]],
  license = "MIT",
  labels = { "async", "libuv", "workflow", "coroutines" },
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBUV = { header = "uv.h" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_C_FLAGS = "$(CFLAGS)",
    CMAKE_MODULE_LINKER_FLAGS = "$(LIBFLAG) $(LDFLAGS)",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    MF_INSTALL_LUA_CMOD_DIR = "$(LIBDIR)",
    MF_BUILD_MODULE = "ON",
    MF_BUILD_PROGRAM = "OFF",
    MF_BUILD_SHARED = "OFF",
    MF_BUILD_STATIC = "OFF",
    MF_BUILD_EXAMPLES = "OFF",
    MF_BUILD_TESTS = "OFF",
    MF_INSTALL = "ON",
  },
}

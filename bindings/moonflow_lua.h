/*
 * moonflow_lua.h -- the public C API of moonflow's Lua side: hosting the
 * Lua module on a host's engine, futures that C completes, and running Lua
 * code and flows from C.  The engine's own API is moonflow.h (included
 * here, with lua.h).
 *
 * A host links libmoonflow (the engine and the Lua bindings in one
 * library), Lua 5.4 and libuv: `pkg-config --cflags --libs moonflow`, or
 * CMake's find_package(moonflow) and the target moonflow::moonflow.
 *
 * Every call is made on the engine's loop thread.
 */
#ifndef MOONFLOW_LUA_H
#define MOONFLOW_LUA_H

#include "moonflow.h"

#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Makes the moonflow module of L use engine (a host's, with the host's
 * loop) instead of creating its own.  Call before luaopen_moonflow (or
 * require "moonflow").  The host closes the engine, with mf_engine_close,
 * before it closes L; after that no callback reaches Lua.  Returns 0, or
 * MF_ESTATE when the module is already open in L. */
MF_API int mf_lua_attach(lua_State *L, mf_engine *engine);

/* The module: require "moonflow" (or luaL_requiref(L, "moonflow", ...)). */
MF_API int luaopen_moonflow(lua_State *L);

/* The engine of the module open in L, or NULL. */
MF_API mf_engine *mf_lua_engine(lua_State *L);

/* Pushes a Future that C completes (a database reply, an asset load): Lua
 * code waits on it like on any other.  Returns its run, owned by the Future
 * (take a reference with mf_run_ref to keep it past the Future), or NULL.
 * name may be NULL. */
MF_API mf_run *mf_lua_future_new(lua_State *L, const char *name);
/* Completes it with the nvalues values on top of L (popped), or fails it
 * with the error value on top (popped).  From another thread, hand the
 * work in with mf_engine_post and complete it there.  Returns 0, or
 * MF_ESTATE when the run is final already or not such a future. */
MF_API int mf_lua_future_resolve(lua_State *L, mf_run *run, int nvalues);
MF_API int mf_lua_future_reject(lua_State *L, mf_run *run);

/* Turns the run store on for the module open in L (mf.configure{store =
 * path} from C): path is a file, ":memory:", or NULL or "off" to turn it
 * off.  Returns 0, MF_ESTATE when the module is not open, or MF_EINVAL
 * with the message pushed (a file that is not a moonflow store, an SQLite
 * error). */
MF_API int mf_lua_store(lua_State *L, const char *path);

/* Runs a chunk or a file as a flow (named after it): pushes its Future.
 * Returns 0, or MF_EINVAL with the error message pushed instead (a syntax
 * error, a missing file), or MF_ESTATE when the engine is closed. */
MF_API int mf_lua_run_chunk(lua_State *L, const char *code, size_t len,
                            const char *name);
MF_API int mf_lua_run_file(lua_State *L, const char *path);
/* Submits the flow (or task) in global name with the nargs arguments on top
 * of L (popped): pushes its Future, or returns MF_EINVAL with a message. */
MF_API int mf_lua_call_flow(lua_State *L, const char *name, int nargs);
/* For the Future at idx: pushes its results and returns their number when
 * it completed; pushes its error value and returns MF_EFAILED when it did
 * not; returns MF_ESTATE (nothing pushed) while it is not final, MF_EINVAL
 * (nothing pushed) when the value at idx is not a Future. */
MF_API int mf_lua_result(lua_State *L, int idx);

/* Spends up to `seconds` on Lua's garbage collector, in small incremental
 * steps, and returns 1 when a whole cycle finished, else 0.  For a host
 * with a frame budget: it stops the collector once (lua_gc(L, LUA_GCSTOP)),
 * so that no collection pause lands inside its frames, and gives the
 * collector the frame's spare time with this call (the module then stops
 * telling the collector about runs' memory itself).  A host that stops the
 * collector must give it time regularly: memory grows until it does. */
MF_API int mf_lua_collect(lua_State *L, double seconds);

#ifdef __cplusplus
}
#endif

#endif /* MOONFLOW_LUA_H */

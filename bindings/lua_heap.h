/*
 * lua_heap.h -- the Lua states moonflow makes itself (the program's, the
 * threads runner's workers'), each on an mf_heap of its own (see
 * moonflow.h and engine/heap.c).
 */
#ifndef MFL_LUA_HEAP_H
#define MFL_LUA_HEAP_H

#include <lua.h>

#include "moonflow.h"

/* A new Lua state on a heap of its own, with the panic and warning
 * functions luaL_newstate gives; NULL when out of memory.  Close it with
 * mfl_heap_close.  MOONFLOW_LUA_ALLOC=malloc in the environment makes it
 * luaL_newstate's, on malloc.  huge_pages: the heap is backed by huge pages
 * from its first region on (mf_heap_huge_regions), as the program's state
 * is; a threads-runner worker's, small, keeps 4 KiB pages at first. */
lua_State *mfl_heap_newstate(int huge_pages);
/* MOONFLOW_LUA_ALLOC's value when it is neither heap nor malloc (the
 * default is then used), else NULL. */
const char *mfl_heap_unknown_choice(void);
/* Closes a state of mfl_heap_newstate and deletes its heap.  A block the
 * state did not give back is an internal error: reported on stderr (and,
 * under the sanitizers, an abort). */
void mfl_heap_close(lua_State *L);
/* For a state made by luaL_newstate (stock lua5.4's), which has allocated
 * already: its small blocks from now on come from an mf_heap, deleted when
 * the state closes (lua_close frees the main thread's block last).  Not for
 * a state with another allocator (a host's), nor under MOONFLOW_LUA_ALLOC=
 * malloc, nor by default under AddressSanitizer.  Returns whether it did.
 * Called by luaopen_moonflow. */
int mfl_heap_adopt(lua_State *L);
/* The mf_heap of a state of mfl_heap_newstate or mfl_heap_adopt, or NULL. */
mf_heap *mfl_heap_of(lua_State *L);
/* The engine keeps the state's heap's next regions made ahead
 * (mf_engine_tend_heap), for the program's main state and a state taken
 * over, whose regions after the first are huge only when made so. */
void mfl_heap_tend(lua_State *L, mf_engine *engine);

#endif

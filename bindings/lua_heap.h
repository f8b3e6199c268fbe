/*
 * lua_heap.h -- the allocator of the Lua states moonflow makes itself (the
 * program's, the threads runner's workers'): small blocks from pages of one
 * size class each, big ones from malloc.  See lua_heap.c.
 */
#ifndef MFL_LUA_HEAP_H
#define MFL_LUA_HEAP_H

#include <lua.h>
#include <stddef.h>

#define MFL_HEAP_SMALL_MAX 1024 /* bytes: bigger blocks are malloc's */
#define MFL_HEAP_PAGE 65536     /* bytes, aligned to their size */

typedef struct mfl_heap mfl_heap;

typedef struct mfl_heap_stats {
  size_t pages;        /* pages held, with blocks or kept empty */
  size_t empty_pages;  /* of which kept empty for reuse */
  size_t small_blocks; /* blocks handed out and not freed */
  size_t small_bytes;  /* their bytes (as asked) */
} mfl_heap_stats;

/* A new heap; NULL when out of memory. */
mfl_heap *mfl_heap_new(void);
/* The lua_Alloc of a heap (ud is the heap). */
void *mfl_heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* Frees the heap and every page it holds: after the state closed. */
void mfl_heap_delete(mfl_heap *heap);
void mfl_heap_get_stats(const mfl_heap *heap, mfl_heap_stats *stats);

/* A new Lua state on a heap of its own, with the panic and warning
 * functions luaL_newstate gives; NULL when out of memory.  Close it with
 * mfl_heap_close.  MOONFLOW_LUA_ALLOC=malloc in the environment makes it
 * luaL_newstate's, on malloc. */
lua_State *mfl_heap_newstate(void);
/* Closes a state of mfl_heap_newstate and deletes its heap.  A block the
 * state did not give back is an internal error: reported on stderr (and,
 * under the sanitizers, an abort). */
void mfl_heap_close(lua_State *L);

#endif

/*
 * lua_heap.c -- the Lua states moonflow makes itself (the program's, the
 * threads runner's): on a heap of their own (engine/heap.c: small blocks
 * from pages of one size class each, found by masking, no header), with
 * the panic and warning functions luaL_newstate would give.
 */
#include <lauxlib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "lua_heap.h"

/* {====== States ====== */

/* As luaL_newstate's: the same messages, warnings off until "@on". */
static int panic(lua_State *L) {
  const char *message = lua_tostring(L, -1);
  fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n",
          message ? message : "error object is not a string");
  fflush(stderr);
  return 0;
}

static void warn_on(void *ud, const char *message, int tocont);
static void warn_off(void *ud, const char *message, int tocont);

/* A control message ("@on", "@off") sets the warning function. */
static int control(lua_State *L, const char *message, int tocont) {
  if (tocont || *message != '@')
    return 0;
  if (strcmp(message + 1, "off") == 0)
    lua_setwarnf(L, warn_off, L);
  else if (strcmp(message + 1, "on") == 0)
    lua_setwarnf(L, warn_on, L);
  return 1;
}

static void warn_off(void *ud, const char *message, int tocont) {
  control(ud, message, tocont);
}

static void warn_continued(void *ud, const char *message, int tocont) {
  fputs(message, stderr);
  if (tocont) {
    lua_setwarnf(ud, warn_continued, ud);
  } else {
    fputs("\n", stderr);
    fflush(stderr);
    lua_setwarnf(ud, warn_on, ud);
  }
}

static void warn_on(void *ud, const char *message, int tocont) {
  if (control(ud, message, tocont))
    return;
  fputs("Lua warning: ", stderr);
  warn_continued(ud, message, tocont);
}

static const char key_heap = 0;
static const char key_tended = 0; /* its engine keeps regions ahead */

/* Under AddressSanitizer the default is malloc, as for the engine's runs:
 * its quarantine sees a use after free that a block reused at once from a
 * page would hide (MOONFLOW_LUA_ALLOC=heap still chooses the heap, whose
 * free blocks and red zones are poisoned there). */
#if defined(__SANITIZE_ADDRESS__)
#define HEAP_BY_DEFAULT 0
#else
#define HEAP_BY_DEFAULT 1
#endif

/* MOONFLOW_LUA_ALLOC: 1 heap, 0 malloc, -1 unset or unknown. */
static int chosen(const char **value) {
  const char *choice = getenv("MOONFLOW_LUA_ALLOC");
  if (value)
    *value = choice;
  return !choice                         ? -1
         : strcmp(choice, "heap") == 0   ? 1
         : strcmp(choice, "malloc") == 0 ? 0
                                         : -1;
}

/* Whether Lua states go on a heap: MOONFLOW_LUA_ALLOC, else the default. */
static int heap_chosen(void) {
  int heap = chosen(NULL);
  return heap < 0 ? HEAP_BY_DEFAULT : heap;
}

const char *mfl_heap_unknown_choice(void) {
  const char *value;
  return chosen(&value) < 0 ? value : NULL;
}

lua_State *mfl_heap_newstate(int huge_pages) {
  if (!heap_chosen())
    return luaL_newstate(); /* (valgrind's memcheck sees every block) */
  mf_heap *h = mf_heap_new();
  if (!h)
    return NULL;
  if (huge_pages) /* (its first region, then those made ahead) */
    mf_heap_huge_regions(h, 1, UINT_MAX);
  lua_State *L = lua_newstate(mf_heap_realloc, h);
  if (!L) {
    mf_heap_delete(h);
    return NULL;
  }
  lua_atpanic(L, panic);
  lua_setwarnf(L, warn_off, L);
  lua_pushlightuserdata(L, h);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_heap);
  lua_pushboolean(L, huge_pages);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_tended);
  return L;
}

void mfl_heap_close(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_heap);
  mf_heap *h = lua_touserdata(L, -1);
  lua_pop(L, 1);
  lua_close(L);
  mf_heap_stats stats = {0};
  if (h)
    mf_heap_get_stats(h, &stats);
  if (stats.small_blocks != 0) {
    fprintf(stderr,
            "moonflow: internal error: %zu Lua blocks (%zu bytes) not "
            "freed when the state closed\n",
            stats.small_blocks, stats.small_bytes);
#if defined(__SANITIZE_ADDRESS__)
    abort();
#endif
  }
  mf_heap_delete(h);
}

/* }====== */

/* {====== Taking over a state's allocator ======
 * A state made by stock lua5.4 (luaL_newstate's allocator: realloc and
 * free) has allocated by the time it loads the module, so its allocator
 * cannot simply be swapped.  It is wrapped instead: small blocks asked for
 * from then on come from an mf_heap (huge pages from its first region,
 * as the program's), and a block the heap does not hold (mf_heap_holds: a
 * bit per 2 MiB) goes back to the old allocator, as do all bigger blocks.
 * Lua objects made by runs then cost what they cost in the program: a
 * fan-in DAG of 1,101 tasks (bench/workloads.lua) took 2.07 us per task
 * under lua5.4 against 1.26 in the program, most of it first touches of
 * malloc's 4 KiB pages.  A state with any other allocator (a host's) is
 * left alone.  lua_close frees the main thread's block last, one the old
 * allocator made: the heap goes with it. */

typedef struct adopted {
  mf_heap *heap;
  lua_Alloc old;
  void *old_ud;
  const void *main_block; /* lua_close's last free */
} adopted;

static void *adopted_alloc(void *ud, void *block, size_t old_size,
                           size_t new_size) {
  adopted *a = ud;
  if (block && !mf_heap_holds(a->heap, block)) { /* the old allocator's */
    if (new_size == 0 && block == a->main_block) {
      lua_Alloc old = a->old;
      void *old_ud = a->old_ud;
      mf_heap_delete(a->heap);
      free(a);
      return old(old_ud, block, old_size, 0);
    }
    return a->old(a->old_ud, block, old_size, new_size);
  }
  if (new_size > MF_HEAP_SMALL_MAX) { /* (the heap's are small blocks) */
    void *moved = a->old(a->old_ud, NULL, block ? 0 : old_size, new_size);
    if (moved && block) {
      memcpy(moved, block, old_size);
      mf_heap_realloc(a->heap, block, old_size, 0);
    }
    return moved;
  }
  if (!block && new_size == 0)
    return NULL;
  void *moved = mf_heap_realloc(a->heap, block, old_size, new_size);
  if (!moved && !block)
    moved = a->old(a->old_ud, NULL, old_size, new_size);
  return moved;
}

/* luaL_newstate's allocator, as a throwaway state has it. */
static lua_Alloc stock_alloc;
static uv_once_t stock_once = UV_ONCE_INIT;

static void find_stock_alloc(void) {
  lua_State *L = luaL_newstate();
  if (L) {
    stock_alloc = lua_getallocf(L, NULL);
    lua_close(L);
  }
}

int mfl_heap_adopt(lua_State *L) {
  void *old_ud;
  lua_Alloc old = lua_getallocf(L, &old_ud);
  uv_once(&stock_once, find_stock_alloc);
  if (!heap_chosen() || old != stock_alloc || !stock_alloc)
    return 0;
  adopted *a = malloc(sizeof *a);
  if (!a || !(a->heap = mf_heap_new())) {
    free(a);
    return 0;
  }
  mf_heap_huge_regions(a->heap, 1, UINT_MAX);
  a->old = old;
  a->old_ud = old_ud;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  a->main_block = lua_getextraspace(lua_tothread(L, -1));
  lua_pop(L, 1);
  lua_setallocf(L, adopted_alloc, a);
  return 1;
}

mf_heap *mfl_heap_of(lua_State *L) {
  void *ud;
  lua_Alloc alloc = lua_getallocf(L, &ud);
  return alloc == mf_heap_realloc ? ud
         : alloc == adopted_alloc ? ((adopted *)ud)->heap
                                  : NULL;
}

void mfl_heap_tend(lua_State *L, mf_engine *engine) {
  void *ud;
  lua_Alloc alloc = lua_getallocf(L, &ud);
  int tended = alloc == adopted_alloc;
  if (alloc == mf_heap_realloc) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_tended);
    tended = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (tended)
    mf_engine_tend_heap(engine, mfl_heap_of(L));
}

/* }====== */

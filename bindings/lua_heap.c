/*
 * lua_heap.c -- the Lua states moonflow makes itself (the program's, the
 * threads runner's): on a heap of their own (engine/heap.c: small blocks
 * from pages of one size class each, found by masking, no header), with
 * the panic and warning functions luaL_newstate would give.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

const char *mfl_heap_unknown_choice(void) {
  const char *value;
  return chosen(&value) < 0 ? value : NULL;
}

lua_State *mfl_heap_newstate(int huge_pages) {
  int heap = chosen(NULL);
  if (heap < 0)
    heap = HEAP_BY_DEFAULT;
  if (!heap)
    return luaL_newstate(); /* (valgrind's memcheck sees every block) */
  mf_heap *h = mf_heap_new();
  if (!h)
    return NULL;
  if (huge_pages)
    mf_heap_prefer_huge_pages(h);
  lua_State *L = lua_newstate(mf_heap_realloc, h);
  if (!L) {
    mf_heap_delete(h);
    return NULL;
  }
  lua_atpanic(L, panic);
  lua_setwarnf(L, warn_off, L);
  lua_pushlightuserdata(L, h);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_heap);
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

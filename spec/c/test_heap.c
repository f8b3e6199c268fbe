/*
 * test_heap.c -- the small-block heap (engine/heap.c) and moonflow's own
 * Lua states on it (bindings/lua_heap.c): blocks keep their bytes through
 * every kind of realloc, are aligned, go back to their pages, and pages go
 * back to malloc; a Lua state on it gives back every block when it
 * closes, and warns as luaL_newstate's does.
 */
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <stdint.h>

#include "heap.h"
#include "lua_heap.h"
#include "test.h"

#define KEPT_EMPTY_MAX 2 /* heap.c's EMPTY_KEEP */

static void fill(unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    p[i] = (unsigned char)(seed * 31 + i);
}

static int intact(const unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (unsigned char)(seed * 31 + i))
      return 0;
  return 1;
}

static size_t small_blocks(mf_heap *h) {
  mf_heap_stats s;
  mf_heap_get_stats(h, &s);
  return s.small_blocks;
}

TEST(blocks_keep_their_bytes_through_every_realloc) {
  enum { N = 3000 };
  static unsigned char *blocks[N];
  static size_t sizes[N];
  mf_heap *h = mf_heap_new();
  ASSERT(h != NULL);
  unsigned rng = 12345;
  for (int i = 0; i < N; i++) {
    rng = rng * 1103515245 + 12345;
    sizes[i] = 1 + (rng >> 8) % 1500; /* small and big */
    blocks[i] = mf_heap_realloc(h, NULL, LUA_TTABLE, sizes[i]);
    ASSERT(blocks[i] != NULL);
    ASSERT_EQ((uintptr_t)blocks[i] % 16, 0);
    fill(blocks[i], sizes[i], (unsigned)i);
  }
  /* Every kind of move: within a class, to another class, small to big,
   * big to small, big to big. */
  for (int round = 0; round < 3; round++)
    for (int i = 0; i < N; i++) {
      rng = rng * 1103515245 + 12345;
      size_t to = 1 + (rng >> 8) % 1500;
      ASSERT(intact(blocks[i], sizes[i], (unsigned)i));
      unsigned char *p = mf_heap_realloc(h, blocks[i], sizes[i], to);
      ASSERT(p != NULL);
      ASSERT_EQ((uintptr_t)p % 16, 0);
      size_t kept = sizes[i] < to ? sizes[i] : to;
      ASSERT(intact(p, kept, (unsigned)i));
      fill(p, to, (unsigned)i);
      blocks[i] = p;
      sizes[i] = to;
    }
  for (int i = 0; i < N; i++) {
    ASSERT(intact(blocks[i], sizes[i], (unsigned)i));
    ASSERT(mf_heap_realloc(h, blocks[i], sizes[i], 0) == NULL);
  }
  ASSERT_EQ(small_blocks(h), 0);
  mf_heap_delete(h);
}

TEST(blocks_in_use_do_not_overlap) {
  enum { N = 20000 };
  static unsigned char *blocks[N];
  mf_heap *h = mf_heap_new();
  ASSERT(h != NULL);
  for (int i = 0; i < N; i++) {
    size_t n = 8 + (size_t)(i % 7) * 24;
    blocks[i] = mf_heap_realloc(h, NULL, 0, n);
    ASSERT(blocks[i] != NULL);
    fill(blocks[i], n, (unsigned)i);
  }
  /* Free every other one, make them again, and check all. */
  for (int i = 0; i < N; i += 2)
    mf_heap_realloc(h, blocks[i], 8 + (size_t)(i % 7) * 24, 0);
  for (int i = 0; i < N; i += 2) {
    size_t n = 8 + (size_t)(i % 7) * 24;
    blocks[i] = mf_heap_realloc(h, NULL, 0, n);
    fill(blocks[i], n, (unsigned)i);
  }
  for (int i = 0; i < N; i++)
    ASSERT(intact(blocks[i], 8 + (size_t)(i % 7) * 24, (unsigned)i));
  ASSERT_EQ(small_blocks(h), N);
  for (int i = 0; i < N; i++)
    mf_heap_realloc(h, blocks[i], 8 + (size_t)(i % 7) * 24, 0);
  ASSERT_EQ(small_blocks(h), 0);
  mf_heap_delete(h);
}

/* Pages come from regions of 2 MiB (32 pages each; malloc's pages under
 * AddressSanitizer): once the blocks are freed, the pages go back but those
 * kept empty, and the regions but those of the kept pages and one kept for
 * the next. */
TEST(empty_pages_and_regions_go_back) {
  enum { N = 300000 };
  static void *blocks[N];
  mf_heap *h = mf_heap_new();
  ASSERT(h != NULL);
  for (int i = 0; i < N; i++)
    ASSERT((blocks[i] = mf_heap_realloc(h, NULL, 0, 48)) != NULL);
  mf_heap_stats s;
  mf_heap_get_stats(h, &s);
  /* 300,000 blocks of 48 bytes: 14.4 MB, about 220 pages of 64 KiB (293
   * under AddressSanitizer, whose red zones make them blocks of 64) */
  ASSERT_GE(s.pages, (size_t)N * 48 / MF_HEAP_PAGE);
  ASSERT_LE(s.pages, (size_t)N * 64 / MF_HEAP_PAGE + 2);
#if !defined(__SANITIZE_ADDRESS__)
  ASSERT_GE(s.regions, s.pages / 32);
  ASSERT_GE(s.regions, 6);
#else
  ASSERT_EQ(s.regions, 0);
#endif
  for (int i = N - 1; i >= 0; i--)
    mf_heap_realloc(h, blocks[i], 48, 0);
  mf_heap_get_stats(h, &s);
  ASSERT_EQ(s.small_blocks, 0);
  ASSERT_EQ(s.pages, s.empty_pages);
  ASSERT_LE(s.pages, KEPT_EMPTY_MAX);
#if !defined(__SANITIZE_ADDRESS__)
  ASSERT_LE(s.regions, KEPT_EMPTY_MAX + 1);
#endif
  /* A kept page serves any size next. */
  void *p = mf_heap_realloc(h, NULL, 0, 1000);
  ASSERT(p != NULL);
  mf_heap_get_stats(h, &s);
  ASSERT_LE(s.pages, KEPT_EMPTY_MAX);
  mf_heap_realloc(h, p, 1000, 0);
  mf_heap_delete(h);
}

/* What a state makes: tables, strings, closures, coroutines, userdata. */
static const char *const busy_chunk =
    "local t = {}\n"
    "for i = 1, 20000 do\n"
    "  t[i] = { i, tostring(i) .. string.rep('x', i % 300),\n"
    "           function() return i end }\n"
    "  if i % 7 == 0 then\n"
    "    local co = coroutine.wrap(function(a) coroutine.yield(a) end)\n"
    "    co(i)\n"
    "  end\n"
    "end\n"
    "for i = 1, #t, 2 do t[i] = nil end\n"
    "collectgarbage()\n"
    "local s = table.concat({ 'a', 'b' }, string.rep('y', 5000))\n"
    "return #s\n";

/* Blocks of MF_HEAP_HUGE_MIN bytes and more are mappings of whole 2 MB
 * huge pages (malloc's under AddressSanitizer): aligned to 2 MB, their
 * bytes kept through growing, shrinking within their mapping, and moving
 * to malloc's sizes and back. */
TEST(huge_blocks_keep_their_bytes_and_are_aligned_to_huge_pages) {
  enum { MB = 1 << 20 };
  mf_heap *h = mf_heap_new();
  ASSERT(h != NULL);
  size_t sizes[] = {3 * MB, 3 * MB + MB / 2, 9 * MB, 2 * MB, MB, 5 * MB, 100};
  size_t n = sizes[0];
  unsigned char *p = mf_heap_realloc(h, NULL, LUA_TTABLE, n);
  ASSERT(p != NULL);
  fill(p, n, 7);
  for (size_t i = 1; i < sizeof sizes / sizeof *sizes; i++) {
#if !defined(__SANITIZE_ADDRESS__)
    if (n >= MF_HEAP_HUGE_MIN)
      ASSERT_EQ((uintptr_t)p % (2 * MB), 0);
#endif
    unsigned char *q = mf_heap_realloc(h, p, n, sizes[i]);
    ASSERT(q != NULL);
    size_t kept = n < sizes[i] ? n : sizes[i];
    ASSERT(intact(q, kept, 7));
#if !defined(__SANITIZE_ADDRESS__)
    if (i == 1) /* 3.5 MB still fits the 4 MB of the first */
      ASSERT(q == p);
#endif
    fill(q, sizes[i], 7);
    p = q;
    n = sizes[i];
  }
  ASSERT(mf_heap_realloc(h, p, n, 0) == NULL);
  ASSERT_EQ(small_blocks(h), 0);
  mf_heap_delete(h);
}

TEST(a_state_gives_back_every_block_when_it_closes) {
  mf_heap *h = mf_heap_new();
  ASSERT(h != NULL);
  lua_State *L = lua_newstate(mf_heap_realloc, h);
  ASSERT(L != NULL);
  luaL_openlibs(L);
  ASSERT_EQ(luaL_loadstring(L, busy_chunk), LUA_OK);
  ASSERT_EQ(lua_pcall(L, 0, 1, 0), LUA_OK);
  ASSERT_EQ(lua_tointeger(L, -1), 5002);
  ASSERT_GT(small_blocks(h), 1000);
  lua_close(L);
  ASSERT_EQ(small_blocks(h), 0);
  mf_heap_delete(h);
}

/* mfl_heap_newstate's state warns as luaL_newstate's does: not until
 * "@on", then "Lua warning: " and the parts of the message. */
TEST(a_new_state_warns_as_lua_does) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  int saved = dup(2);
  ASSERT(saved >= 0);
  ASSERT(dup2(fds[1], 2) >= 0);
  lua_State *L = mfl_heap_newstate(0);
  ASSERT(L != NULL);
  luaL_openlibs(L);
  int status = luaL_dostring(L, "warn('not shown') warn('@on')"
                                " warn('shown', ' in parts') warn('@off')"
                                " warn('hidden')");
  mfl_heap_close(L);
  fflush(stderr);
  dup2(saved, 2);
  close(fds[1]);
  char out[256] = {0};
  ssize_t n = read(fds[0], out, sizeof out - 1);
  close(fds[0]);
  ASSERT_EQ(status, LUA_OK);
  ASSERT(n > 0);
  ASSERT_STR_EQ(out, "Lua warning: shown in parts\n");
}

#if !defined(__SANITIZE_ADDRESS__)
/* The engine's records' heap takes regions made ahead of need (heap.h):
 * one wanted once its region is a quarter used, used before it maps one
 * itself; more wanted once it had to map one itself. */
TEST(regions_made_ahead_are_taken_first) {
  enum { N = 60000, M = 90000 };
  static char *blocks[N];
  mf_heap *h = mf_heap_new();
  ASSERT(h != NULL);
  mf_heap_huge_regions(h, 1, UINT_MAX);
  ASSERT_EQ(mf__heap_regions_wanted(h), 0);
  int i = 0, wanted_at = -1;
  for (; i < N && wanted_at < 0; i++) {
    ASSERT((blocks[i] = mf_heap_realloc(h, NULL, 0, 48)) != NULL);
    if (mf__heap_regions_wanted(h) == 1)
      wanted_at = i;
  }
  ASSERT(wanted_at > 1000); /* (not at once: a quarter of a region) */
  char *region = mf__heap_region_new();
  ASSERT(region != NULL);
  mf__heap_region_give(h, region);
  ASSERT_EQ(mf__heap_regions_wanted(h), 0);
  int in_region = 0;
  for (; i < N; i++) {
    ASSERT((blocks[i] = mf_heap_realloc(h, NULL, 0, 48)) != NULL);
    in_region += blocks[i] >= region && blocks[i] < region + (2 << 20);
  }
  ASSERT(in_region > 0);
  mf_heap_stats s;
  mf_heap_get_stats(h, &s);
  ASSERT_GE(s.regions, 2);
  ASSERT_EQ(mf__heap_regions_wanted(h), 1); /* (the spare came in time) */
  static char *more[M]; /* about two regions more: one mapped by itself */
  for (i = 0; i < M; i++)
    ASSERT((more[i] = mf_heap_realloc(h, NULL, 0, 48)) != NULL);
  ASSERT_EQ(mf__heap_regions_wanted(h), MF__HEAP_SPARES_MAX);
  for (i = 0; i < M; i++)
    mf_heap_realloc(h, more[i], 48, 0);
  for (i = 0; i < N; i++)
    mf_heap_realloc(h, blocks[i], 48, 0);
  mf__heap_region_give(h, mf__heap_region_new());
  mf_heap_delete(h); /* (a spare still held goes too) */
}
#endif

/* mf_heap_holds: the heap's small blocks, not malloc's nor freed
 * regions'. */
TEST(the_heap_knows_its_blocks) {
  mf_heap *h = mf_heap_new();
  ASSERT(h != NULL);
  void *mine = mf_heap_realloc(h, NULL, LUA_TTABLE, 48);
  void *theirs = malloc(48);
  ASSERT(mine && theirs);
  ASSERT(mf_heap_holds(h, mine));
  ASSERT(!mf_heap_holds(h, theirs));
  ASSERT(!mf_heap_holds(h, &h));
  mf_heap *other = mf_heap_new();
  ASSERT(other != NULL);
  ASSERT(!mf_heap_holds(other, mine));
  mf_heap_delete(other);
  mf_heap_realloc(h, mine, 48, 0);
  free(theirs);
  mf_heap_delete(h);
}

/* A state of luaL_newstate (stock lua5.4's), which has allocated, taken
 * over (mfl_heap_adopt): the blocks made before and after live side by
 * side; the old ones go back to the old allocator, freed or moved; the
 * heap goes with lua_close (under the sanitizers a leak would show). */
TEST(a_stock_state_is_taken_over) {
  const char *saved = getenv("MOONFLOW_LUA_ALLOC");
  setenv("MOONFLOW_LUA_ALLOC", "heap", 1); /* (ASan's default is malloc) */
  lua_State *L = luaL_newstate();
  ASSERT(L != NULL);
  luaL_openlibs(L);
  ASSERT_EQ(luaL_dostring(L, "before = {} for i = 1, 1000 do"
                             " before[i] = ('x'):rep(i % 50) .. i end"),
            LUA_OK);
  ASSERT(mfl_heap_of(L) == NULL);
  ASSERT_EQ(mfl_heap_adopt(L), 1);
  mf_heap *h = mfl_heap_of(L);
  ASSERT(h != NULL);
  ASSERT_EQ(mfl_heap_adopt(L), 0); /* once */
  ASSERT_EQ(luaL_dostring(L, "after = {} for i = 1, 1000 do"
                             " after[i] = {i, tostring(i) .. 'z'} end"),
            LUA_OK);
  ASSERT(small_blocks(h) >= 2000);
  ASSERT_EQ(luaL_dostring(L, "for i = 1, 1000 do before[i] = before[i] .. i"
                             " after[i][3] = ('y'):rep(i % 600) end"
                             " before = nil collectgarbage()"
                             " local n = 0"
                             " for i = 1, 1000 do n = n + #after[i][3] end"
                             " assert(n == 259900, n)"),
            LUA_OK);
  lua_close(L);
  if (saved)
    setenv("MOONFLOW_LUA_ALLOC", saved, 1);
  else
    unsetenv("MOONFLOW_LUA_ALLOC");
}

/* A state with an allocator of its own (a host's) is left alone. */
TEST(a_host_state_is_left_alone) {
  mf_heap *h = mf_heap_new();
  ASSERT(h != NULL);
  lua_State *L = lua_newstate(mf_heap_realloc, h);
  ASSERT(L != NULL);
  ASSERT_EQ(mfl_heap_adopt(L), 0);
  ASSERT(mfl_heap_of(L) == h);
  lua_close(L);
  mf_heap_delete(h);
}

TEST_MAIN("heap")

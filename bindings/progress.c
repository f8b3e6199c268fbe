/*
 * progress.c -- the live status lines of the moonflow program: one per
 * top-level flow, redrawn on stderr ten times a second, erased before the
 * script prints, and replaced by a one-line summary when the flow ends.
 * Only when stderr is a terminal and --quiet was not given.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "progress.h"

#define MAX_FLOWS 8
#define TICK_MS 100

typedef struct progress {
  uv_timer_t timer;
  mf_engine *engine;
  int lines_drawn;     /* status lines on screen now */
  mf_run *watched[64]; /* flows that have a summary callback */
  size_t watched_count;
} progress;

static progress the_progress;
static int active;

void mf_progress_erase(void) {
  progress *p = &the_progress;
  if (!active || p->lines_drawn == 0)
    return;
  for (int i = 0; i < p->lines_drawn; i++)
    fputs(i ? "\x1b[A\r\x1b[K" : "\r\x1b[K", stderr);
  p->lines_drawn = 0;
  fflush(stderr);
}

static void counts(char *buf, size_t size, const mf_flow_stats *s,
                   double elapsed) {
  size_t done = s->completed + s->failed + s->cancelled;
  char cancelled[64] = "";
  if (s->cancelled)
    snprintf(cancelled, sizeof cancelled, ", %zu cancelled", s->cancelled);
  snprintf(buf, size,
           "%zu completed, %zu running, %zu failed%s, %zu waiting; %.0f/s; "
           "%.1f s",
           s->completed, s->running, s->failed, cancelled, s->waiting,
           elapsed > 0 ? (double)done / elapsed : 0.0, elapsed);
}

static void on_flow_done(mf_run *flow, void *data) {
  progress *p = data;
  mf_flow_stats s;
  if (!active || mf_run_flow_stats(flow, &s) != 0)
    return;
  mf_progress_erase();
  char name[128], line[256];
  mf_run_name(flow, name, sizeof name);
  counts(line, sizeof line, &s, mf_engine_now(p->engine) - s.started_at);
  fprintf(stderr, "moonflow: flow %s %s: %s\n", name,
          mf_state_name_string(mf_run_state_name(flow)), line);
  fflush(stderr);
  for (size_t i = 0; i < p->watched_count; i++)
    if (p->watched[i] == flow)
      p->watched[i] = p->watched[--p->watched_count];
}

static void watch(progress *p, mf_run *flow) {
  for (size_t i = 0; i < p->watched_count; i++)
    if (p->watched[i] == flow)
      return;
  if (p->watched_count == sizeof p->watched / sizeof *p->watched)
    return;
  if (mf_run_on_done(flow, on_flow_done, p) == 0)
    p->watched[p->watched_count++] = flow;
}

static void on_tick(uv_timer_t *timer) {
  progress *p = timer->data;
  mf_run *flows[MAX_FLOWS];
  size_t n = mf_engine_top_flows(p->engine, flows, MAX_FLOWS);
  if (n > MAX_FLOWS)
    n = MAX_FLOWS;
  mf_progress_erase();
  double now = mf_engine_now(p->engine);
  for (size_t i = 0; i < n; i++) {
    mf_flow_stats s;
    if (mf_run_flow_stats(flows[i], &s) != 0)
      continue;
    watch(p, flows[i]);
    char name[128], line[256];
    mf_run_name(flows[i], name, sizeof name);
    counts(line, sizeof line, &s, now - s.started_at);
    fprintf(stderr, "%s%s: %s", p->lines_drawn ? "\n" : "", name, line);
    p->lines_drawn++;
  }
  fflush(stderr);
}

static int l_erase(lua_State *L) {
  (void)L;
  mf_progress_erase();
  return 0;
}

/* print and io.write erase the status lines first. */
static void wrap_output(lua_State *L) {
  static const char source[] =
      "local erase = ...\n"
      "local print0, write0 = print, io.write\n"
      "print = function(...) erase() return print0(...) end\n"
      "io.write = function(...) erase() return write0(...) end\n";
  if (luaL_loadbuffer(L, source, sizeof source - 1, "=progress") != LUA_OK) {
    lua_pop(L, 1);
    return;
  }
  lua_pushcfunction(L, l_erase);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK)
    lua_pop(L, 1);
}

void mf_progress_start(lua_State *L) {
  progress *p = &the_progress;
  memset(p, 0, sizeof *p);
  p->engine = mfl_state_get(L)->engine;
  uv_timer_init(mf_engine_loop(p->engine), &p->timer);
  p->timer.data = p;
  uv_timer_start(&p->timer, on_tick, TICK_MS, TICK_MS);
  uv_unref((uv_handle_t *)&p->timer); /* never keeps the program alive */
  active = 1;
  wrap_output(L);
}

void mf_progress_stop(void) {
  if (!active)
    return;
  mf_progress_erase();
  active = 0;
  uv_close((uv_handle_t *)&the_progress.timer, NULL);
}

/* {====== The runs still going ====== */

static int by_id(const void *a, const void *b) {
  uint64_t x = mf_run_id(*(mf_run *const *)a);
  uint64_t y = mf_run_id(*(mf_run *const *)b);
  return x < y ? -1 : x > y;
}

/* Every run that is not final has its Future pinned (binding.h): the pins
 * table lists them. */
size_t mf_progress_push_live(lua_State *L, size_t max) {
  mfl_state *S = mfl_state_get(L);
  size_t n = 0, cap = 16;
  mf_run **runs = malloc(cap * sizeof *runs);
  if (!runs) {
    lua_pushliteral(L, "");
    return 0;
  }
  mfl_push_pins(L, S);
  int pins = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, pins)) {
    mfl_future *f = mfl_to_future(L, -1);
    lua_pop(L, 1);
    if (!f || !f->run || mf_run_is_final(f->run))
      continue;
    if (n == cap) {
      mf_run **grown = realloc(runs, (cap *= 2) * sizeof *runs);
      if (!grown) {
        lua_pop(L, 1); /* the key */
        break;
      }
      runs = grown;
    }
    runs[n++] = f->run;
  }
  lua_pop(L, 1); /* the pins */
  qsort(runs, n, sizeof *runs, by_id);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n && i < max; i++) {
    char name[256];
    mf_run_name(runs[i], name, sizeof name);
    luaL_addstring(&b, i ? ", " : "");
    luaL_addstring(&b, name);
  }
  if (n > max) {
    char more[64];
    snprintf(more, sizeof more, " and %zu more", n - max);
    luaL_addstring(&b, more);
  }
  luaL_pushresult(&b);
  free(runs);
  return n;
}

/* }====== */

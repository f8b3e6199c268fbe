/*
 * store_lua.c -- the run store seen from the bindings: opening it
 * (mf.configure{store = path}, the program's default), the engine observer
 * that turns every state of a Lua run into a store event, what a submit
 * records (the task, its tags, a summary of the arguments), the notes that
 * carry a run's error and kept result to its final state, and
 * core.store_flush / core.store_stats.
 *
 * The observer runs inside the engine and never enters Lua: everything it
 * needs from Lua was copied into C before (task.c before a submit, the
 * runner's store_error and the cache's encoding before a run ends).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "binding.h"
#include "store.h"

/* What the next submit records: filled by mfl_store_before_submit.
 * shared: the task's name and tags as the store keeps them (NULL: in task
 * and tags). */
typedef struct mfl_submit_note {
  mf_run *run;
  const char *shared;
  char task[128], tags[128], params[192];
} mfl_submit_note;

static double wall_now(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* {====== Notes ====== */

mfl_note *mfl_note_of(mfl_run *lr) {
  if (!lr->note)
    lr->note = calloc(1, sizeof *lr->note);
  return lr->note;
}

static void note_free(mfl_run *lr) {
  mfl_note *n = lr->note;
  lr->note = NULL;
  if (!n)
    return;
  free(n->message);
  free(n->traceback);
  free(n->key);
  free(n->value);
  free(n);
}

void mfl_note_error(lua_State *L, mfl_run *lr, int err, int tb) {
  if (!lr->S->store)
    return;
  mfl_note *n = mfl_note_of(lr);
  if (!n)
    return;
  free(n->message);
  free(n->traceback);
  n->message = strdup(mfl_describe(L, err));
  lua_pop(L, 1);
  n->traceback =
      tb && lua_type(L, tb) == LUA_TSTRING ? strdup(lua_tostring(L, tb)) : NULL;
}

/* }====== */

/* {====== Submits ====== */

/* Appends the len bytes of text at p, cut to room - 1, and a NUL; returns
 * the end.  (snprintf's "%s" cost about 590 instructions per submit: a
 * chain's runs each take a Future, summarized by its type name.) */
static char *append(char *p, size_t room, const char *text, size_t len) {
  if (len >= room)
    len = room - 1;
  memcpy(p, text, len);
  p[len] = 0;
  return p + len;
}

/* Appends a short text of the value at idx to buf. */
static void summarize(lua_State *L, int idx, char *buf, size_t size) {
  size_t used = strlen(buf);
  if (used + 1 >= size)
    return;
  char *p = buf + used;
  size_t room = size - used;
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx) && room > 21) { /* the usual: no printf */
      lua_Integer v = lua_tointeger(L, idx);
      unsigned long long u =
          v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
      char digits[24];
      int n = 0;
      do
        digits[n++] = (char)('0' + u % 10);
      while ((u /= 10) != 0);
      if (v < 0)
        *p++ = '-';
      while (n)
        *p++ = digits[--n];
      *p = 0;
    } else if (lua_isinteger(L, idx))
      snprintf(p, room, "%lld", (long long)lua_tointeger(L, idx));
    else
      snprintf(p, room, "%.14g", (double)lua_tonumber(L, idx));
    break;
  case LUA_TSTRING: { /* "text", or its first 32 bytes and "..." */
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    char *end = p + room - 1; /* (where the NUL goes at most) */
    p = append(p, room, "\"", 1);
    /* (as printf's %.32s: up to a NUL inside the text) */
    p = append(p, (size_t)(end - p) + 1, s, strnlen(s, len > 32 ? 32 : len));
    if (len > 32)
      p = append(p, (size_t)(end - p) + 1, "...", 3);
    append(p, (size_t)(end - p) + 1, "\"", 1);
    break;
  }
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx))
      append(p, room, "true", 4);
    else
      append(p, room, "false", 5);
    break;
  case LUA_TNIL:
    append(p, room, "nil", 3);
    break;
  case LUA_TTABLE:
    append(p, room, "{...}", 5);
    break;
  default: {
    const char *name = luaL_typename(L, idx);
    append(p, room, name, strlen(name));
  }
  }
}

/* The task's name and tags into n->task and n->tags. */
static void task_text(lua_State *L, int task_idx, mfl_submit_note *n) {
  lua_getiuservalue(L, task_idx, MFL_TASK_UV_NAME);
  size_t len;
  const char *task = lua_tolstring(L, -1, &len);
  if (len >= sizeof n->task)
    len = sizeof n->task - 1;
  memcpy(n->task, task, len);
  n->task[len] = 0;
  lua_getiuservalue(L, task_idx, MFL_TASK_UV_OPTS);
  if (lua_getfield(L, -1, "tags") == LUA_TTABLE) {
    for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
      size_t used = strlen(n->tags);
      snprintf(n->tags + used, sizeof n->tags - used, "%s%s", used ? "," : "",
               lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 3);
}

void mfl_store_before_submit(lua_State *L, mfl_state *S, mf_run *run,
                             int task_idx, int first, int nargs) {
  if (!S->submit && !(S->submit = calloc(1, sizeof *S->submit)))
    return;
  mfl_submit_note *n = S->submit;
  n->run = run;
  n->task[0] = n->tags[0] = n->params[0] = 0;
  /* A task's name and tags are the same for all its runs: read once per
   * store, which keeps them once (a task's options are its own copy). */
  mfl_task *t = lua_touserdata(L, task_idx);
  uint64_t serial = mfl_store_serial(S->store);
  if (t->store_serial != serial) {
    task_text(L, task_idx, n);
    size_t task_len = strlen(n->task);
    size_t len = task_len + strlen(n->tags) + 2;
    char both[sizeof n->task + sizeof n->tags];
    memcpy(both, n->task, task_len + 1);
    memcpy(both + task_len + 1, n->tags, len - task_len - 1);
    t->store_shared = mfl_store_intern(S->store, both, len);
    t->store_serial = serial;
  }
  n->shared = t->store_shared;
  if (!n->shared && !n->task[0])
    task_text(L, task_idx, n); /* the store keeps no more */
  for (int i = 0; i < nargs && i < 8; i++) {
    if (i)
      strncat(n->params, ", ", sizeof n->params - strlen(n->params) - 1);
    summarize(L, first + i, n->params, sizeof n->params);
  }
  if (nargs > 8)
    strncat(n->params, ", ...", sizeof n->params - strlen(n->params) - 1);
}

/* }====== */

/* {====== The observer ====== */

static int is_final(const mf_state *s) {
  return s->type >= MF_COMPLETED || s->name == MF_NAME_NOT_READY;
}

static void record_submit(mfl_state *S, mf_run *run, mfl_run *lr,
                          const mf_state *state) {
  char name[256];
  size_t name_len = mf_run_name(run, name, sizeof name);
  mf_run *parent = mf_run_parent(run);
  mfl_store_submit s = {.id = mf_run_id(run),
                        .parent = parent ? mf_run_id(parent) : 0,
                        .is_flow = lr->kind == MFL_FLOW,
                        .time = state->timestamp,
                        .name = name,
                        .name_len =
                            name_len < sizeof name ? name_len : (size_t)-1,
                        .params_len = (size_t)-1};
  mfl_submit_note *n = S->submit;
  if (n && n->run == run) {
    s.shared = n->shared;
    s.task = n->task;
    s.tags = n->tags;
    s.params = n->params;
    n->run = NULL;
  } else {
    s.task = lr->kind == MFL_EXTERNAL ? "(future)" : name;
  }
  mfl_store_submit_run(S->store, &s);
}

static void observe(mf_run *run, const mf_state *state, void *data) {
  mfl_state *S = data;
  if (mf_run_data(run) != S)
    return; /* not a run of this Lua state's */
  mfl_run *lr = mf_run_body(run);
  if (state->type == MF_PENDING && state->name == MF_NAME_PENDING) {
    if (S->store && !lr->quiet)
      record_submit(S, run, lr, state);
    return;
  }
  mfl_note *note = lr->note;
  int final = is_final(state);
  mfl_store_result result = {0}, *keep = NULL;
  if (final && note && note->value && state->type == MF_COMPLETED) {
    mfl_cache_remember(S, note);
    result.key = note->key;
    result.value = note->value;
    result.len = note->len;
    result.expires = note->expires;
    note->key = note->value = NULL;
    keep = &result;
  }
  if (S->store && !lr->quiet) {
    const char *message = note ? note->message : NULL;
    const char *traceback = note ? note->traceback : NULL;
    int code = mf_run_error_code(run);
    if (!message && code && (final || state->name == MF_NAME_AWAITING_RETRY))
      message = mf_strerror(code);
    if (!final && state->name != MF_NAME_AWAITING_RETRY)
      message = traceback = NULL;
    mfl_store_state(S->store, mf_run_id(run), state, mf_run_attempt(run),
                    message, final ? traceback : NULL, keep);
  }
  if (keep) { /* not taken by a store */
    free(result.key);
    free(result.value);
  }
  if (final)
    note_free(lr);
  else if (note && state->name == MF_NAME_AWAITING_RETRY) {
    free(note->message); /* told with this state */
    free(note->traceback);
    note->message = note->traceback = NULL;
  }
}

void mfl_store_renamed(mfl_state *S, mf_run *run) {
  if (!S->store || !mf_run_id(run) || mf_run_data(run) != S ||
      ((mfl_run *)mf_run_body(run))->quiet)
    return;
  char name[256];
  mf_run_name(run, name, sizeof name);
  mfl_store_rename(S->store, mf_run_id(run), name);
}

/* The engine's start gate: runs to start wait while the writer is behind
 * (they would fill the ring, and the loop would wait for room).  A writer
 * that frees its batch within a millisecond is waited for here: the
 * gate's timer would leave the loop idle for a whole millisecond.  But not
 * past the pass's budget: a wait at the end of a pass made it 1 to 4 ms
 * longer than its budget (bench/compare.lua --stall, store on). */
#define STORE_GATE_WAIT_NS 1000000

static int store_gate(mf_engine *engine, void *data) {
  mfl_state *S = data;
  if (!S->store || !mfl_store_busy(S->store))
    return 0;
  uint64_t left = (uint64_t)(mf_engine_pass_left(engine) * 1e9);
  if (left == 0)
    return 1; /* (a wait of 0 would be a wait without limit) */
  return !mfl_store_wait_room(
      S->store, left < STORE_GATE_WAIT_NS ? left : STORE_GATE_WAIT_NS);
}

void mfl_store_observe(mfl_state *S) {
  if (S->observing || !S->engine)
    return;
  S->observing = 1;
  mf_engine_observe(S->engine, observe, S);
  mf_engine_set_start_gate(S->engine, store_gate, S);
}

void mfl_store_log_line(mfl_state *S, mf_run *run, int level,
                        const char *message) {
  if (!S->store)
    return;
  if (run && (mf_run_data(run) != S || ((mfl_run *)mf_run_body(run))->quiet))
    run = NULL;
  mfl_store_log(S->store, run ? mf_run_id(run) : 0, level, wall_now(), message);
}

/* }====== */

/* {====== Opening and closing ====== */

int mfl_store_configure(lua_State *L, mfl_state *S, const char *path) {
  if (S->store) {
    mfl_store_close(S->store);
    S->store = NULL;
  }
  if (!path || strcmp(path, "off") == 0)
    return 0;
  char err[512];
  mfl_store *st = mfl_store_open(path, err, sizeof err);
  if (!st) {
    lua_pushfstring(L, "run store %s: %s", path, err);
    return -1;
  }
  S->store = st;
  mfl_store_observe(S);
  return 0;
}

void mfl_store_shutdown(mfl_state *S) {
  if (S->engine && S->observing) {
    mf_engine_observe(S->engine, NULL, NULL);
    mf_engine_set_start_gate(S->engine, NULL, NULL);
  }
  S->observing = 0;
  mfl_store_close(S->store);
  S->store = NULL;
  free(S->submit);
  S->submit = NULL;
  mfl_cache_free(S);
}

/* core.store_configure(path or "off") */
static int l_store_configure(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  const char *path = luaL_optstring(L, 1, NULL);
  if (mfl_store_configure(L, S, path) != 0)
    return mfl_raise(L, "StoreError", "%s", lua_tostring(L, -1));
  return 0;
}

/* core.store_flush(): waits until what was recorded is committed */
static int l_store_flush(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  if (S->store)
    mfl_store_flush(S->store);
  return 0;
}

/* core.store_stats() -> { path, events, commits, checkpoints, waits,
 * writer_cpu, pruned, pruning, keep, error } or nil */
static int l_store_stats(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  if (!S->store)
    return 0;
  mfl_store_stats st;
  mfl_store_get_stats(S->store, &st);
  lua_createtable(L, 0, 9);
  lua_pushstring(L, mfl_store_path(S->store));
  lua_setfield(L, -2, "path");
  lua_pushinteger(L, (lua_Integer)st.events);
  lua_setfield(L, -2, "events");
  lua_pushinteger(L, (lua_Integer)st.commits);
  lua_setfield(L, -2, "commits");
  lua_pushinteger(L, (lua_Integer)st.checkpoints);
  lua_setfield(L, -2, "checkpoints");
  lua_pushinteger(L, (lua_Integer)st.waits);
  lua_setfield(L, -2, "waits");
  lua_pushnumber(L, st.writer_cpu);
  lua_setfield(L, -2, "writer_cpu");
  lua_pushinteger(L, (lua_Integer)st.pruned);
  lua_setfield(L, -2, "pruned");
  lua_pushboolean(L, st.pruning);
  lua_setfield(L, -2, "pruning");
  lua_pushnumber(L, st.keep);
  lua_setfield(L, -2, "keep");
  if (st.error) {
    lua_pushstring(L, st.error);
    lua_setfield(L, -2, "error");
  }
  return 1;
}

static const luaL_Reg store_functions[] = {
    {"store_configure", l_store_configure},
    {"store_flush", l_store_flush},
    {"store_stats", l_store_stats},
    {NULL, NULL}};

void mfl_open_store(lua_State *L) {
  mfl_setfuncs(L, store_functions);
  mfl_open_store_reader(L);
}

/* }====== */

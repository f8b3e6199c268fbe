/*
 * origin.c -- where a run's error was first raised.
 *
 * An error travels between runs unchanged: result() raises the error of run
 * X again inside run R, a flow fails with the error of a run inside it that
 * nobody handled.  R notes "this value came from X"; when R then fails with
 * that same value (rawequal: the same table, or an equal string), its
 * failure info links to X (info.from, info.how).  Reports follow the links
 * back to the run that raised the error first (lua/moonflow/report.lua); the
 * State's traceback of R keeps X's traceback after its own, for tools.
 *
 * The failure info also keeps what a report needs of the run (its name,
 * kind, attempts), so that a report can still be made while the Lua state
 * closes, when the Futures' finalizers have already run.
 */
#include <string.h>

#include "binding.h"

/* Weak-keyed: the Future of R -> { [err] = { from = X's Future, how } }. */
static const char noted_key = 0;
/* Outside any run (stock lua5.4's main chunk, a callback): the last one,
 * { err, from, how }. */
static const char top_key = 0;
/* Weak-valued: a failed run (light userdata) -> its Future, for a run
 * that never started because of it (a run's address is not reused while
 * its Future lives: the Future holds a reference). */
static const char failed_key = 0;

static void push_weak(lua_State *L, const char *key, const char *mode) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE)
    return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 4);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

int mfl_push_failed_future(lua_State *L, mf_run *run) {
  push_weak(L, &failed_key, "v");
  lua_rawgetp(L, -1, run);
  lua_remove(L, -2);
  if (lua_isuserdata(L, -1))
    return 1;
  lua_pop(L, 1);
  return 0;
}

static void push_noted(lua_State *L) { push_weak(L, &noted_key, "k"); }

/* Calls moonflow.report[fn](the value at arg, opts?) protected; pushes
 * the text, or nil. */
static void push_report(lua_State *L, const char *fn, int arg, int opts) {
  arg = lua_absindex(L, arg);
  int top = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonflow.report");
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
    lua_getfield(L, -1, fn);
    lua_pushvalue(L, arg);
    if (opts)
      lua_pushvalue(L, opts);
    else
      lua_pushnil(L);
    if (lua_pcall(L, 2, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
      lua_replace(L, top + 1);
      lua_settop(L, top + 1);
      return;
    }
  }
  lua_settop(L, top);
  lua_pushnil(L);
}

/* {====== An error raised at top level ====== */

/* Whether the error about to be raised will most likely end the script:
 * on the main thread, no C function between this call and the chunk (no
 * pcall, no require, no sort comparator), and the chunk called from C (a
 * host such as lua.c, which prints only the error and the top level's
 * frames). */
static int escapes_to_host(lua_State *L) {
  int main_thread = lua_pushthread(L);
  lua_pop(L, 1);
  if (!main_thread)
    return 0;
  lua_Debug ar;
  int level = 1, below_c = 0;
  while (lua_getstack(L, level, &ar)) {
    if (below_c)
      return 0; /* a C function with a frame under it */
    if (!lua_getinfo(L, "S", &ar))
      return 0;
    below_c = ar.what[0] == 'C';
    level++;
  }
  return below_c && level > 2;
}

/* The top level raises the error of the run at from_box: where it was
 * first raised goes to the host's error sink (stderr) before the host
 * prints the error itself. */
static void report_escaping(lua_State *L, mfl_state *S, int from_box) {
  if (!escapes_to_host(L))
    return;
  push_report(L, "failure", from_box, 0);
  if (lua_isstring(L, -1))
    mf_engine_report(S->engine, lua_tostring(L, -1));
  lua_pop(L, 1);
}

/* }====== */

void mfl_note_reraise(lua_State *L, mfl_state *S, int err, int from_box,
                      const char *how) {
  err = lua_absindex(L, err);
  from_box = lua_absindex(L, from_box);
  mf_run *run = S->callback_depth > 0 ? NULL : mf_engine_current(S->engine);
  lua_createtable(L, 0, 3); /* the note */
  lua_pushvalue(L, from_box);
  lua_setfield(L, -2, "from");
  lua_pushstring(L, how);
  lua_setfield(L, -2, "how");
  if (!run) {
    lua_pushvalue(L, err);
    lua_setfield(L, -2, "err");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &top_key);
    if (S->callback_depth == 0 && strcmp(how, "result") == 0)
      report_escaping(L, S, from_box);
    return;
  }
  if (!mfl_is_key(L, err)) {
    lua_pop(L, 1); /* nil or NaN cannot be a key: such an error has no origin */
    return;
  }
  ((mfl_run *)mf_run_body(run))->noted = 1;
  push_noted(L);
  mfl_push_future_of(L, run);
  if (lua_rawget(L, -2) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    mfl_push_future_of(L, run);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_pushvalue(L, err);
  lua_pushvalue(L, -4);
  lua_rawset(L, -3); /* notes[err] = note */
  lua_pop(L, 3);
}

/* Sets info.from and info.how when the run at box passed on the error at
 * err; forgets the run's notes. */
static void take_reraise(lua_State *L, mf_run *run, int box, int err,
                         int info) {
  mfl_run *lr = mf_run_body(run);
  if (!lr->noted)
    return;
  lr->noted = 0;
  push_noted(L);
  lua_pushvalue(L, box);
  if (lua_rawget(L, -2) == LUA_TTABLE && mfl_is_key(L, err)) {
    lua_pushvalue(L, err);
    if (lua_rawget(L, -2) == LUA_TTABLE) {
      lua_getfield(L, -1, "from");
      lua_setfield(L, info, "from");
      lua_getfield(L, -1, "how");
      lua_setfield(L, info, "how");
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushvalue(L, box);
  lua_pushnil(L);
  lua_rawset(L, -3); /* an attempt's notes end with it */
  lua_pop(L, 1);
}

void mfl_forget_reraises(lua_State *L, mfl_run *lr, int box) {
  if (!lr->noted) /* the common case costs one test */
    return;
  lr->noted = 0;
  box = lua_absindex(L, box);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &noted_key) == LUA_TTABLE) {
    lua_pushvalue(L, box);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
}

static const char *kind_name(const mfl_run *lr) {
  switch ((mfl_kind)lr->kind) {
  case MFL_TASK:
    return "task";
  case MFL_FLOW:
    return "flow";
  default:
    return "run";
  }
}

void mfl_link_origin(lua_State *L, mf_run *run, int box, int err, int info) {
  box = lua_absindex(L, box);
  err = lua_absindex(L, err);
  info = lua_absindex(L, info);
  mfl_run *lr = mf_run_body(run);
  mfl_run_name(L, run);
  lua_setfield(L, info, "name");
  lua_pushstring(L, kind_name(lr));
  lua_setfield(L, info, "kind");
  lua_pushboolean(L, lr->quiet);
  lua_setfield(L, info, "internal");
  lua_pushinteger(L, mf_run_attempt(run));
  lua_setfield(L, info, "attempts");
  take_reraise(L, run, box, err, info);
  push_weak(L, &failed_key, "v");
  lua_pushvalue(L, box);
  lua_rawsetp(L, -2, run);
  lua_pop(L, 1);
}

/* The run a cascade of runs that never started began with. */
static mf_run *root_cause(mf_run *run) {
  mf_run *root = mf_run_cause(run);
  while (root && mf_run_state_name(root) == MF_NAME_NOT_READY &&
         mf_run_cause(root))
    root = mf_run_cause(root);
  return root;
}

void mfl_keep_cause(lua_State *L, mf_run *run, int box) {
  /* (Called as the run becomes final, before its NotReady state is
   * recorded: a cause is what says it never started.) */
  if (!mf_run_cause(run))
    return;
  box = lua_absindex(L, box);
  if (!mfl_push_failed_future(L, root_cause(run)))
    return;
  if (lua_getiuservalue(L, box, MFL_UV_INFO) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, box, MFL_UV_INFO);
  }
  lua_insert(L, -2);
  lua_setfield(L, -2, "cause");
  lua_pop(L, 1);
}

/* Links shown in full in a State's traceback: the ones nearest the run,
 * then the origin.  A 10,000-deep recursion that re-raises is not 10,000
 * tracebacks, and a State is made in time linear in the chain (each run
 * keeps only its own traceback and its link). */
#define SHOWN_LINKS 3

/* Pushes the info field key of the Future at idx (nil if none). */
static int push_info_field(lua_State *L, int idx, const char *key) {
  if (lua_getiuservalue(L, idx, MFL_UV_INFO) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return LUA_TNIL;
  }
  int type = lua_getfield(L, -1, key);
  lua_remove(L, -2);
  return type;
}

/* Pushes "\n(the error came from run NAME:\nTRACEBACK)" of the Future at
 * idx. */
static void push_link_text(lua_State *L, int idx) {
  push_info_field(L, idx, "name");
  push_info_field(L, idx, "traceback");
  lua_pushfstring(L, "\n(the error came from run %s:\n%s)",
                  lua_isstring(L, -2) ? lua_tostring(L, -2) : "?",
                  lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
  lua_replace(L, -3);
  lua_pop(L, 1);
}

void mfl_push_full_traceback(lua_State *L, int box) {
  box = lua_absindex(L, box);
  int top = lua_gettop(L);
  luaL_checkstack(L, 2 * SHOWN_LINKS + 12, NULL);
  push_info_field(L, box, "traceback"); /* top+1: the run's own */
  if (push_info_field(L, box, "from") != LUA_TUSERDATA) {
    lua_pop(L, 1);
    return;
  }
  /* top+2: the link followed now; pieces from top+3 */
  if (!lua_isstring(L, top + 1)) {
    lua_pushliteral(L, "");
    lua_replace(L, top + 1);
  }
  lua_pushvalue(L, top + 1);
  int pieces = 1;
  unsigned long links = 0;
  while (lua_type(L, top + 2) == LUA_TUSERDATA && links < 10000000) {
    links++;
    int is_last = push_info_field(L, top + 2, "from") != LUA_TUSERDATA;
    int added = 0;
    if (is_last && links > SHOWN_LINKS + 1) {
      lua_pushfstring(L, "\n(... passed on by %d more runs)",
                      (int)(links - SHOWN_LINKS - 1));
      added++;
    }
    if (links <= SHOWN_LINKS || is_last) {
      push_link_text(L, top + 2);
      added++;
    }
    lua_rotate(L, -(added + 1), -1); /* the next link on top */
    lua_replace(L, top + 2);
    pieces += added;
  }
  lua_concat(L, pieces);
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
}

const char *mfl_describe_error(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TTABLE) {
    if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
      lua_pop(L, 1);
      return mfl_describe(L, idx);
    }
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "moonflow.show");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
      lua_getfield(L, -1, "error_text");
      lua_pushvalue(L, idx);
      if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
        lua_replace(L, top + 1);
        lua_settop(L, top + 1);
        return lua_tostring(L, -1);
      }
    }
    lua_settop(L, top);
  }
  return mfl_describe(L, idx);
}

/* {====== Lua side ====== */

/* core.note_reraise(fut, how, err): the current run passes on err, the
 * error of the final run fut (result(nil, false) gave it: an error made
 * for the call, such as UpstreamFailed, is a new table at each call); how
 * says why ("unhandled", "returned"). */
static int l_note_reraise(lua_State *L) {
  mfl_run *lr = mf_run_body(mfl_check_future(L, 1)->run);
  const char *how = luaL_checkstring(L, 2);
  lua_settop(L, 3);
  mfl_note_reraise(L, lr->S, 3, 1, how);
  return 0;
}

/* core.last_reraised() -> { err, from, how } or nil: outside any run. */
static int l_last_reraised(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &top_key);
  return 1;
}

/* core.failure(fut) -> what a report needs of a final run that did not
 * complete: { name, kind, internal, attempts, state, error, traceback,
 * from, how, message }, and for a run that never started upstream,
 * upstream_state, root, root_state (the run the cascade began with) and
 * cause (its Future); nil when it is not such a run.  Works on a
 * Future whose finalizer ran (the Lua state closing) from what its failure
 * info kept. */
static int l_failure(lua_State *L) {
  mfl_future *f = mfl_check_future(L, 1);
  mf_run *run = f->run;
  lua_settop(L, 1);
  if (run && (!mf_run_is_final(run) || mf_run_state_type(run) == MF_COMPLETED))
    return 0;
  lua_createtable(L, 0, 12);
  int t = lua_gettop(L);
  if (lua_getiuservalue(L, 1, MFL_UV_INFO) == LUA_TTABLE) {
    static const char *const fields[] = {"name",     "kind",      "internal",
                                         "attempts", "traceback", "from",
                                         "how",      "message",   NULL};
    for (int i = 0; fields[i]; i++) {
      lua_getfield(L, -1, fields[i]);
      lua_setfield(L, t, fields[i]);
    }
  } else if (!run) {
    return 0;
  }
  lua_settop(L, t);
  if (!run) {
    lua_getiuservalue(L, 1, MFL_UV_RESULT);
    lua_setfield(L, t, "error");
    lua_pushliteral(L, "Failed");
    lua_setfield(L, t, "state");
    return 1;
  }
  mfl_run *lr = mf_run_body(run);
  mfl_run_name(L, run);
  lua_setfield(L, t, "name");
  lua_pushstring(L, kind_name(lr));
  lua_setfield(L, t, "kind");
  lua_pushboolean(L, lr->quiet);
  lua_setfield(L, t, "internal");
  lua_pushinteger(L, mf_run_attempt(run));
  lua_setfield(L, t, "attempts");
  lua_pushstring(L, mf_state_name_string(mf_run_state_name(run)));
  lua_setfield(L, t, "state");
  mfl_push_error_value(L, 1);
  lua_setfield(L, t, "error");
  if (mf_run_state_name(run) == MF_NAME_NOT_READY && mf_run_cause(run)) {
    /* The upstream run, and the failed run the cascade began with. */
    mf_run *up = mf_run_cause(run), *root = up;
    mfl_run_name(L, up);
    lua_setfield(L, t, "upstream");
    lua_pushstring(L, mf_state_name_string(mf_run_state_name(up)));
    lua_setfield(L, t, "upstream_state");
    root = root_cause(run);
    if (root != up) {
      mfl_run_name(L, root);
      lua_setfield(L, t, "root");
      lua_pushstring(L, mf_state_name_string(mf_run_state_name(root)));
      lua_setfield(L, t, "root_state");
    }
    if (lua_getiuservalue(L, 1, MFL_UV_INFO) == LUA_TTABLE &&
        lua_getfield(L, -1, "cause") == LUA_TUSERDATA)
      lua_setfield(L, t, "cause");
    else if (mfl_push_failed_future(L, root))
      lua_setfield(L, t, "cause");
    lua_settop(L, t);
  }
  return 1;
}

void mfl_open_origin(lua_State *L) {
  /* core -> core */
  mfl_pushcfunction(L, l_note_reraise);
  lua_setfield(L, -2, "note_reraise");
  lua_pushcfunction(L, l_last_reraised);
  lua_setfield(L, -2, "last_reraised");
  lua_pushcfunction(L, l_failure);
  lua_setfield(L, -2, "failure");
}

/* }====== */

/* The report of a failed run's Future at box, for the module's own lines
 * (the state closing with unhandled failures); pushes it or nil. */
void mfl_push_failure_report(lua_State *L, int box) {
  box = lua_absindex(L, box);
  lua_createtable(L, 0, 1);
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "unhandled");
  int opts = lua_gettop(L);
  push_report(L, "failure", box, opts);
  lua_remove(L, opts);
}

/*
 * args.c -- futures inside a run's arguments.  At submit the arguments are
 * searched (plain tables too, to any depth; tables with a metatable are not)
 * and every future found becomes an input of the run.  When the inputs are
 * final the arguments are resolved: each future is replaced by its first
 * result, and a table holding futures by a copy holding results.
 *
 * The wrappers quote (pass unsearched), allow_failure (start even if that
 * upstream fails, receiving its error) and unmapped (same value for every
 * run of a map) are one-element tables with their own metatables.
 */
#include "binding.h"

/* Where the futures found go: straight into a run's inputs, or into a
 * collector table {future, allow_failure, ...} to be added to many runs. */
typedef struct scan_target {
  mf_run *run;
  int collector; /* stack index, or 0 */
  int collected;
  int seen; /* stack slot of the table of searched tables (nil until made) */
  int seen_made;
  int root; /* stack index of the first plain table, 0 before, -1 after */
} scan_target;

/* Adds Future f, at idx, to the target. */
static void add_input(lua_State *L, scan_target *t, int idx, mfl_future *f,
                      int allow) {
  if (t->run) {
    if (mf_run_add_input(t->run, f->run, allow) != 0)
      luaL_error(L, "moonflow: out of memory");
    return;
  }
  lua_pushvalue(L, idx);
  lua_rawseti(L, t->collector, ++t->collected);
  lua_pushboolean(L, allow);
  lua_rawseti(L, t->collector, ++t->collected);
}

static int scan(lua_State *L, int idx, scan_target *t, int depth);

static int scan_wrapper(lua_State *L, int idx, scan_target *t, int depth) {
  if (mfl_list_expand(L, idx)) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, i);
      mfl_future *f = mfl_to_future(L, -1);
      if (f)
        add_input(L, t, lua_gettop(L), f, 0);
      lua_pop(L, 1);
    }
    return 1;
  }
  if (mfl_is_kind(L, idx, &mfl_key_allow_mt)) {
    lua_rawgeti(L, idx, 1);
    int inner = lua_gettop(L);
    mfl_future *f = mfl_to_future(L, inner);
    if (f) {
      add_input(L, t, inner, f, 1);
    } else if (mfl_list_expand(L, inner)) {
      lua_Integer n = (lua_Integer)lua_rawlen(L, inner);
      for (lua_Integer i = 1; i <= n; i++) { /* each allowed to fail */
        lua_rawgeti(L, inner, i);
        mfl_future *g = mfl_to_future(L, -1);
        if (g)
          add_input(L, t, lua_gettop(L), g, 1);
        lua_pop(L, 1);
      }
    } else {
      scan(L, inner, t, depth + 1);
    }
    lua_pop(L, 1);
    return 1;
  }
  if (mfl_is_kind(L, idx, &mfl_key_quote_mt))
    return 1;
  if (mfl_is_kind(L, idx, &mfl_key_unmapped_mt)) {
    lua_rawgeti(L, idx, 1);
    scan(L, lua_gettop(L), t, depth + 1);
    lua_pop(L, 1);
    return 1;
  }
  return 0; /* someone else's metatable: passed as it is */
}

static int scan_table(lua_State *L, int idx, scan_target *t, int depth) {
  if (depth > MFL_MAX_DEPTH)
    return mfl_raise(L, "UsageError",
                     "argument tables nest deeper than %d levels (pass such "
                     "a table through mf.quote: it is then not searched)",
                     MFL_MAX_DEPTH);
  luaL_checkstack(L, 8, "argument tables nest too deep");
  /* The first plain table (a group of futures, most often) holds no other:
   * the table of searched tables is made when one is met inside it, with
   * the first marked as being searched. */
  int is_root = t->root == 0;
  if (is_root) {
    t->root = idx;
  } else {
    if (!t->seen_made) {
      lua_newtable(L);
      lua_replace(L, t->seen);
      t->seen_made = 1;
      if (t->root > 0) {
        lua_pushvalue(L, t->root);
        lua_pushboolean(L, 0);
        lua_rawset(L, t->seen);
      }
    }
    lua_pushvalue(L, idx);
    if (lua_rawget(L, t->seen) != LUA_TNIL) {
      int found = lua_toboolean(L, -1);
      lua_pop(L, 1);
      return found;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 0);
    lua_rawset(L, t->seen);
  }
  int found = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    found |= scan(L, lua_gettop(L), t, depth + 1); /* the value */
    int key_type = lua_type(L, -2);
    if (key_type == LUA_TTABLE || key_type == LUA_TUSERDATA)
      found |= scan(L, lua_gettop(L) - 1, t, depth + 1); /* the key */
    lua_pop(L, 1);
  }
  if (is_root)
    t->root = -1; /* its slot may be reused: never marked later */
  if (t->seen_made) {
    lua_pushvalue(L, idx);
    lua_pushboolean(L, found);
    lua_rawset(L, t->seen);
  }
  return found;
}

static int scan(lua_State *L, int idx, scan_target *t, int depth) {
  switch (lua_type(L, idx)) {
  case LUA_TUSERDATA: {
    mfl_future *f = mfl_to_future(L, idx);
    if (!f)
      return 0;
    add_input(L, t, idx, f, 0);
    return 1;
  }
  case LUA_TTABLE:
    if (lua_getmetatable(L, idx)) {
      lua_pop(L, 1);
      return scan_wrapper(L, idx, t, depth);
    }
    return scan_table(L, idx, t, depth);
  default:
    return 0;
  }
}

int mfl_scan_arg(lua_State *L, int idx, mf_run *run) {
  int type = lua_type(L, idx);
  if (type != LUA_TTABLE && type != LUA_TUSERDATA)
    return 0;                  /* the fast path: numbers, strings, ... */
  if (type == LUA_TUSERDATA) { /* a future, the chain's case */
    mfl_future *f = mfl_to_future(L, idx);
    if (f && mf_run_add_input(run, f->run, 0) != 0)
      luaL_error(L, "moonflow: out of memory");
    return f != NULL;
  }
  idx = lua_absindex(L, idx);
  int top = lua_gettop(L);
  lua_pushnil(L); /* the slot of the table of searched tables */
  scan_target t = {run, 0, 0, top + 1, 0, 0};
  int found = scan(L, idx, &t, 0);
  lua_settop(L, top);
  return found;
}

/* Scans the value at idx into a new collector table (pushed); returns
 * whether it needs resolving. */
int mfl_scan_collect(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_newtable(L);
  int top = lua_gettop(L);
  lua_pushnil(L); /* the slot of the table of searched tables */
  scan_target t = {NULL, top, 0, top + 1, 0, 0};
  int found = scan(L, idx, &t, 0);
  lua_settop(L, top);
  return found;
}

/* Adds the futures of a collector table (at idx) as inputs of run. */
void mfl_add_collected(lua_State *L, int idx, mf_run *run) {
  lua_Integer n = luaL_len(L, idx);
  for (lua_Integer i = 1; i < n; i += 2) {
    lua_rawgeti(L, idx, i);
    lua_rawgeti(L, idx, i + 1);
    mfl_future *f = lua_touserdata(L, -2);
    if (mf_run_add_input(run, f->run, lua_toboolean(L, -1)) != 0)
      luaL_error(L, "moonflow: out of memory");
    lua_pop(L, 2);
  }
}

/* {====== Resolution ====== */

/* Where a resolution keeps its memo (tables to their replacements, for
 * cycles and sharing): a stack slot, nil until a plain table is met inside
 * the first one (root), which is then marked as being resolved. */
typedef struct resolving {
  int memo;
  int root; /* stack slot of the first plain table, 0 before, -1 after */
} resolving;

static void resolve(lua_State *L, resolving *r, int depth);

/* Resolves the key and value on top (key value -> key' value'). */
static void resolve_pair(lua_State *L, resolving *r, int depth) {
  resolve(L, r, depth);
  int key_type = lua_type(L, -2);
  if (key_type == LUA_TTABLE || key_type == LUA_TUSERDATA) {
    lua_insert(L, -2);
    resolve(L, r, depth);
    lua_insert(L, -2);
  }
}

/* Replaces the plain table on top by a copy with resolved keys and values,
 * if any of them changes.  Never raises but out of memory: deeper than the
 * scan allowed (a table changed after submit), or with no stack left, it
 * is left as it is. */
static void resolve_table(lua_State *L, resolving *r, int depth) {
  int t = lua_gettop(L);
  if (depth > MFL_MAX_DEPTH || !lua_checkstack(L, 8))
    return;
  int is_root = r->root == 0;
  if (is_root) {
    r->root = t;
  } else {
    if (lua_isnil(L, r->memo)) {
      lua_newtable(L);
      lua_replace(L, r->memo);
      if (r->root > 0) {
        lua_pushvalue(L, r->root);
        lua_pushvalue(L, r->root);
        lua_rawset(L, r->memo);
      }
    }
    lua_pushvalue(L, t);
    if (lua_rawget(L, r->memo) != LUA_TNIL) {
      lua_replace(L, t);
      return;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, t);
    lua_pushvalue(L, t);
    lua_rawset(L, r->memo); /* provisional: a cycle sees the original */
  }
  /* First pass: does anything change?  Second pass (only then): copy. */
  int changed = 0;
  lua_pushnil(L);
  while (!changed && lua_next(L, t)) { /* key value */
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2); /* key value key value */
    resolve_pair(L, r, depth + 1);
    changed = !lua_rawequal(L, -1, -3) || !lua_rawequal(L, -2, -4);
    lua_pop(L, 3);
  }
  lua_settop(L, t);
  if (changed) {
    lua_createtable(L, (int)lua_rawlen(L, t), 0);
    int copy = t + 1;
    lua_pushnil(L);
    while (lua_next(L, t)) {      /* key value */
      if (lua_isinteger(L, -2)) { /* an array's key: nothing to resolve */
        resolve(L, r, depth + 1);
        lua_rawseti(L, copy, lua_tointeger(L, -2));
        continue;
      }
      lua_pushvalue(L, -2);
      lua_insert(L, -2); /* key key value */
      resolve_pair(L, r, depth + 1);
      if (mfl_is_key(L, -2))
        lua_rawset(L, copy); /* key */
      else
        lua_pop(L, 2); /* a key's future gave nil or NaN */
    }
    if (!lua_isnil(L, r->memo)) {
      lua_pushvalue(L, t);
      lua_pushvalue(L, copy);
      lua_rawset(L, r->memo);
    }
    lua_replace(L, t);
  }
  if (is_root)
    r->root = -1; /* its slot is reused: never marked later */
  lua_settop(L, t);
}

static void resolve(lua_State *L, resolving *r, int depth) {
  int top = lua_gettop(L);
  mfl_future *f;
  switch (lua_type(L, top)) {
  case LUA_TUSERDATA:
    if ((f = mfl_to_future(L, top)) != NULL) {
      mfl_push_results_of(L, top, f, 0, 1);
      lua_replace(L, top);
    }
    return;
  case LUA_TTABLE:
    break;
  default:
    return;
  }
  if (!lua_getmetatable(L, top))
    return resolve_table(L, r, depth);
  lua_pop(L, 1);
  if (mfl_list_expand(L, top)) {
    /* A FutureList stands for the array of its runs' first results. */
    lua_Integer n = (lua_Integer)lua_rawlen(L, top);
    lua_createtable(L, (int)n, 1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, top, i);
      if ((f = mfl_to_future(L, -1)) != NULL) {
        mfl_push_results_of(L, lua_gettop(L), f, 0, 1);
        lua_remove(L, -2);
      }
      lua_rawseti(L, -2, i);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    lua_replace(L, top);
  } else if (mfl_is_kind(L, top, &mfl_key_quote_mt)) {
    lua_rawgeti(L, top, 1);
    lua_replace(L, top);
  } else if (mfl_is_kind(L, top, &mfl_key_allow_mt) ||
             mfl_is_kind(L, top, &mfl_key_unmapped_mt)) {
    lua_rawgeti(L, top, 1);
    resolve(L, r, depth + 1);
    lua_replace(L, top);
  }
}

void mfl_resolve_value(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  int type = lua_type(L, idx);
  mfl_future *f = type == LUA_TUSERDATA ? mfl_to_future(L, idx) : NULL;
  if (f) {
    mfl_push_results_of(L, idx, f, 0, 1); /* the chain's case: no memo */
    lua_replace(L, idx);
    return;
  }
  if (type != LUA_TTABLE)
    return;
  lua_pushnil(L); /* the memo, made when a second plain table is met */
  resolving r = {lua_gettop(L), 0};
  lua_pushvalue(L, idx);
  resolve(L, &r, 0);
  lua_replace(L, idx);
  lua_settop(L, r.memo - 1);
}

/* core.resolve(value) -> value with its final futures replaced by results
 * (used for what a flow returns) */
static int l_resolve(lua_State *L) {
  lua_settop(L, 1);
  mfl_resolve_value(L, 1);
  return 1;
}

/* }====== */

/* {====== Wrappers ====== */

static int wrap(lua_State *L, const char *key) {
  lua_settop(L, 1);
  lua_createtable(L, 1, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  lua_setmetatable(L, -2);
  return 1;
}

static int l_quote(lua_State *L) { return wrap(L, &mfl_key_quote_mt); }
static int l_unmapped(lua_State *L) { return wrap(L, &mfl_key_unmapped_mt); }
static int l_allow_failure(lua_State *L) {
  if (!mfl_to_future(L, 1) &&
      !(lua_type(L, 1) == LUA_TTABLE && mfl_is_kind(L, 1, &mfl_key_list_mt)))
    return mfl_raise(L, "UsageError",
                     "allow_failure expects a Future or a FutureList, got %s",
                     luaL_typename(L, 1));
  return wrap(L, &mfl_key_allow_mt);
}

/* core.is_allowed(v): v is an allow_failure wrapper */
static int l_is_allowed(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE &&
                         mfl_is_kind(L, 1, &mfl_key_allow_mt));
  return 1;
}

static void new_wrapper_mt(lua_State *L, const char *key, const char *name) {
  lua_createtable(L, 0, 1);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  mfl_register_mt(L, key);
}

void mfl_open_args(lua_State *L) {
  new_wrapper_mt(L, &mfl_key_quote_mt, "moonflow.quote");
  new_wrapper_mt(L, &mfl_key_unmapped_mt, "moonflow.unmapped");
  new_wrapper_mt(L, &mfl_key_allow_mt, "moonflow.allow_failure");
  mfl_pushcfunction(L, l_quote);
  lua_setfield(L, -2, "quote");
  mfl_pushcfunction(L, l_unmapped);
  lua_setfield(L, -2, "unmapped");
  mfl_pushcfunction(L, l_allow_failure);
  lua_setfield(L, -2, "allow_failure");
  lua_pushcfunction(L, l_is_allowed);
  lua_setfield(L, -2, "is_allowed");
  mfl_pushcfunction(L, l_resolve);
  lua_setfield(L, -2, "resolve");
}

/* }====== */

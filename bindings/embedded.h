/*
 * embedded.h -- the Lua modules of lua/, compiled into the binary by
 * cmake/embed_lua.c (their text and their bytecode) or cmake/embed.cmake
 * (their text only), and made loadable by require through package.preload.
 */
#ifndef MF_EMBEDDED_H
#define MF_EMBEDDED_H

#include <stddef.h>

typedef struct mf_embedded_module {
  const char *name;   /* "moonflow.flow" */
  const char *source; /* the file's text */
  size_t size;
  const unsigned char *bytecode; /* its lua_dump, or NULL */
  size_t bytecode_size;
} mf_embedded_module;

/* Terminated by an entry whose name is NULL. */
extern const mf_embedded_module mf_embedded_modules[];

/* The chunk names: "=[moonflow] moonflow.flow". */
#define MF_EMBEDDED_CHUNKNAME "=[moonflow] "

/* A chunk whose dump, made when the bytecode was, is compared with the
 * dump the running Lua makes of it: the bytecode is loaded only when the
 * two are equal (the same compiler, so the same instructions), else the
 * text is compiled.  It uses the common kinds of instruction. */
#define MF_EMBEDDED_PROBE                                                      \
  "local t, s = {...}, 0 "                                                     \
  "for i = 1, #t do s = s + t[i] * 2 // 1 % 7 end "                            \
  "for k, v in pairs(t) do t[k] = v .. tostring(s) end "                       \
  "local function f(a, ...) return a and select('#', ...) or -a, "             \
  "t.x ~= nil, a == 1.5, a < 2, a <= 3, #a, not a, a & 1 | 2 ~ 3 << 1 >> 1 "   \
  "end "                                                                       \
  "local o <close> = nil "                                                     \
  "while s > 0 do s = s - 1 if s == 3 then break end goto next ::next:: end "  \
  "return f, setmetatable(t, {__index = function() return f(1) end})"

/* The dump of MF_EMBEDDED_PROBE made with the bytecode (size 0: none). */
extern const unsigned char *const mf_embedded_probe;
extern const size_t mf_embedded_probe_size;

#endif

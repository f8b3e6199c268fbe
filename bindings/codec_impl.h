/*
 * codec_impl.h -- what the files of the value codec share: the tags of the
 * format, the encoder's and decoder's state, and the paths of error
 * messages.  codec.c has the entry points and the registry of metatables,
 * codec_encode.c and codec_decode.c the two directions for data, and
 * codec_fn.c functions, modules and the global table.
 */
#ifndef MFL_CODEC_IMPL_H
#define MFL_CODEC_IMPL_H

#include <stdint.h>

#include <lauxlib.h>

#include "codec.h"

#define MFLC_INTERNAL __attribute__((visibility("hidden")))

#define MFLC_MAGIC 0x6d
#define MFLC_VERSION 1

enum {
  MFLC_NIL = 0x00,
  MFLC_FALSE,
  MFLC_TRUE,
  MFLC_INT8,
  MFLC_INT16,
  MFLC_INT32,
  MFLC_INT64,
  MFLC_FLOAT,
  MFLC_STRING,
  MFLC_REF,
  MFLC_TABLE,
  MFLC_TABLE_MT,
  MFLC_CUSTOM,
  MFLC_LFUNCTION,
  MFLC_UPJOIN,
  MFLC_CFUNCTION,
  MFLC_GLOBALS,
  MFLC_MODULE,
  MFLC_FIXINT = 0x80 /* 0x80 + n: the integer n, 0 <= n <= 127 */
};

/* Strings of these lengths are refs (repeated keys cost a few bytes);
 * shorter ones are not worth it, longer ones rarely repeat. */
#define MFLC_STRREF_MIN 3
#define MFLC_STRREF_MAX 1024
#define mflc_string_is_ref(len)                                                \
  ((len) >= MFLC_STRREF_MIN && (len) <= MFLC_STRREF_MAX)

/* One step of the path to the value being encoded, for error messages; the
 * steps live on the C stack of the recursion. */
typedef enum mflc_step {
  MFLC_AT_ROOT,
  MFLC_AT_INDEX,   /* [n] of the array part */
  MFLC_AT_KEY,     /* the value of the key at stack index idx */
  MFLC_AT_IN_KEY,  /* inside the key itself */
  MFLC_AT_UPVALUE, /* .upvalue[name] */
  MFLC_AT_ENCODED  /* what a registered codec's encode returned */
} mflc_step;

typedef struct mflc_path {
  const struct mflc_path *up;
  mflc_step step;
  int idx;          /* MFLC_AT_KEY: stack index of the key */
  lua_Integer n;    /* MFLC_AT_INDEX, MFLC_AT_UPVALUE: the number */
  const char *name; /* MFLC_AT_UPVALUE: its name */
} mflc_path;

/* The values met so far, by address (lua_topointer), with their refs (or
 * -1 - ref while a custom value's encoding is under way): a C hash table,
 * for a Lua table costs most of the time of encoding many small tables.
 * Addresses stay those of the same values because every value met is
 * reachable from the value being encoded, or anchored (what the encode
 * functions of codecs return).  Freed by mfl_encode. */
typedef struct mflc_slot {
  const void *key;
  lua_Integer ref;
} mflc_slot;

/* Small messages need no allocation for it. */
#define MFLC_SEEN_SMALL_BITS 5

typedef struct mflc_enc {
  lua_State *L;
  mfl_buffer *b;
  unsigned flags;
  const char *root;
  mflc_slot *seen; /* first seen_small, then malloc'ed */
  size_t seen_count;
  int seen_bits; /* 1 << seen_bits slots */
  mflc_slot seen_small[1 << MFLC_SEEN_SMALL_BITS];
  /* Stack slots filled when first needed (nil until then): */
  int anchors;  /* what encode functions returned */
  int upvalues; /* upvalue id -> ref * 256 + n */
  int names;    /* C function -> { module, field }, module -> its name */
  int codecs;   /* the registry of metatables */
  lua_Integer nrefs, nanchors;
  int depth;
  int names_fresh; /* names was rebuilt during this call */
  int code;        /* the MFL_CODEC_* of the error being raised */
} mflc_enc;

typedef struct mflc_dec {
  lua_State *L;
  const unsigned char *start, *p, *end;
  unsigned flags;
  int refs;   /* stack index: ref + 1 -> value */
  int codecs; /* stack index: the registry of metatables */
  lua_Integer nrefs;
  int depth;
  int code;
} mflc_dec;

/* codec.c: pushes the registry of metatables, which maps each registered
 * name and metatable to its entry { name, mt, encode, decode }. */
MFLC_INTERNAL void mflc_push_codecs(lua_State *L);

/* codec_encode.c */
MFLC_INTERNAL void mflc_put(mflc_enc *e, const void *p, size_t n);
MFLC_INTERNAL void mflc_put_varint(mflc_enc *e, uint64_t v);
MFLC_INTERNAL void mflc_encode_value(mflc_enc *e, int idx,
                                     const mflc_path *path);
MFLC_INTERNAL void mflc_encode_string(mflc_enc *e, int idx);
/* Writes a ref when the value at idx was seen (returns 1), else gives it
 * the next ref (returns 0).  A custom value under way is a cycle the
 * decoder could not rebuild: a UsageError. */
MFLC_INTERNAL int mflc_ref(mflc_enc *e, int idx, const mflc_path *path);
MFLC_INTERNAL void mflc_enter(mflc_enc *e, const mflc_path *path);
/* Raises a UsageError "<path>: <message>"; code is the MFL_CODEC_*. */
MFLC_INTERNAL void mflc_refuse(mflc_enc *e, const mflc_path *path, int code,
                               const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));

/* codec_decode.c */
MFLC_INTERNAL void mflc_decode_value(mflc_dec *d);
/* Pushes a string (a string or a ref to one), named what for errors. */
MFLC_INTERNAL void mflc_decode_name(mflc_dec *d, const char *what);
MFLC_INTERNAL int mflc_get_byte(mflc_dec *d, const char *what);
MFLC_INTERNAL uint64_t mflc_get_varint(mflc_dec *d, const char *what);
MFLC_INTERNAL const unsigned char *mflc_get(mflc_dec *d, size_t n,
                                            const char *what);
MFLC_INTERNAL void mflc_enter_dec(mflc_dec *d);
/* Raises a DecodeError with the message (which says at which byte). */
MFLC_INTERNAL void mflc_bad(mflc_dec *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
#define mflc_offset(d) ((size_t)((d)->p - (d)->start))

/* codec_fn.c */
MFLC_INTERNAL void mflc_encode_function(mflc_enc *e, int idx,
                                        const mflc_path *path);
/* In MFL_CODEC_FUNCTIONS mode: writes the global table or a loaded module
 * by name and returns 1, else returns 0. */
MFLC_INTERNAL int mflc_encode_by_name(mflc_enc *e, int idx);
MFLC_INTERNAL void mflc_decode_lfunction(mflc_dec *d);
MFLC_INTERNAL void mflc_decode_cfunction(mflc_dec *d);
MFLC_INTERNAL void mflc_decode_module(mflc_dec *d);

#endif

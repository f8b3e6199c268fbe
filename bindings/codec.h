/*
 * codec.h -- the value codec: a Lua value to bytes and back, so that a value
 * can travel to another lua_State (a worker thread, a worker process, a
 * file, the network).
 *
 * What travels: nil, booleans, integers and floats exactly (the float's
 * bits: NaN, infinities, -0.0), strings with any bytes, tables nested to
 * MFL_CODEC_MAX_DEPTH with shared references and cycles kept (within one
 * message), tables whose metatable is registered (mfl_codec_register), and
 * values (tables or userdata) whose registered codec turns them into a
 * value that travels and back.  With MFL_CODEC_FUNCTIONS also: Lua
 * functions as bytecode with their upvalues copied by value (upvalues two
 * closures of the message share stay shared), C functions found in a
 * loaded module (package.loaded[mod][name]: print, string.format, ...) by
 * name, loaded modules (tables of package.loaded) by name, and the global
 * table (an _ENV upvalue) as the receiving state's.  Bytecode keeps its
 * debug information unless MFL_CODEC_STRIP, so that tracebacks name lines.
 *
 * What does not (a UsageError naming the path, e.g. "args[2].conn"):
 * coroutines, userdata without a registered codec, light userdata, tables
 * with an unregistered metatable, functions without MFL_CODEC_FUNCTIONS, C
 * functions in no loaded module, nesting deeper than MFL_CODEC_MAX_DEPTH.
 *
 * Sharing is found by address: a value that Lua code run during the
 * encoding (a codec's encode function, a finalizer) changes comes out as
 * some mix of before and after (never a crash).
 *
 * The decoder trusts nothing in its input: every length, count, reference
 * and depth is checked against what remains, and bad input is a
 * DecodeError ("truncated at byte 12 ...", "bad tag 0x7f at byte 9"),
 * never a crash or a read past the end.  Except bytecode: loading it is
 * unsafe on untrusted input (Lua does not verify it), so the decoder takes
 * functions only with MFL_CODEC_FUNCTIONS, which a caller passes only for
 * bytes it produced itself (the thread and process runners), never for
 * bytes read back from a file or the network.
 *
 * The format (version 1), little-endian; a varint is unsigned LEB128 (7
 * bits a byte, at most 10 bytes), a name is a string value (or a ref to one):
 *   message = 6d 01 value                 (magic, version, one value)
 *   value   = tag payload; the tag 80+n is the integer n (0..127)
 *   nil 00 | false 01 | true 02 | int8 03 | int16 04 | int32 05 | int64 06
 *   float 07 (its IEEE 754 bits) | string 08 varint-length bytes
 *   ref 09 varint (an earlier table, function, custom value or string)
 *   table 0a varint-narr varint-nhash narr*value nhash*(key value)
 *   table with a registered metatable 0b name, then as a table
 *   custom 0c name value (what the registered encode function returned)
 *   Lua function 0d u32-length bytecode u8-nups nups*(value | join)
 *   join 0e varint-function-ref u8-upvalue (shares that function's upvalue)
 *   C function 0f module-name field-name | globals 10 | module 11 name
 * Refs number tables, Lua functions, custom values and strings of 3 to 1024
 * bytes from 0, in the order they first appear.
 */
#ifndef MFL_CODEC_H
#define MFL_CODEC_H

#include <stddef.h>

#include <lua.h>

/* Bytes owned with malloc/realloc/free (not by a Lua state), so that they
 * can be handed from one thread's state to another's.  A zeroed struct is
 * an empty buffer. */
typedef struct mfl_buffer {
  char *data;
  size_t len, cap;
} mfl_buffer;

/* Flags of mfl_encode and mfl_decode. */
enum {
  MFL_CODEC_FUNCTIONS = 1, /* functions, modules and the global table */
  MFL_CODEC_STRIP = 2,     /* encode: bytecode without debug information */
  MFL_CODEC_REQUIRE = 4    /* decode: a module the message names that is not
                              loaded in this state is required (a worker
                              loads what the sender's functions use) */
};

/* Results of mfl_encode and mfl_decode. */
enum {
  MFL_CODEC_OK = 0,
  MFL_CODEC_EVALUE = -1, /* a value that cannot travel: UsageError */
  MFL_CODEC_EDEPTH = -2, /* nesting deeper than MFL_CODEC_MAX_DEPTH */
  MFL_CODEC_EINPUT = -3, /* decode: bad or truncated input: DecodeError */
  MFL_CODEC_ERROR = -4   /* a registered codec function raised, or memory
                            ran out: the value it raised */
};

/* Tables, functions and custom values nested in one another, both ways. */
#define MFL_CODEC_MAX_DEPTH 200

/* Makes room for extra more bytes; 0, or -1 when memory ran out. */
int mfl_buffer_reserve(mfl_buffer *b, size_t extra);

/* Frees the bytes; the buffer is empty again. */
void mfl_buffer_free(mfl_buffer *b);
/* Pushes a userdata holding an empty buffer, whose bytes are freed when
 * the userdata is collected: a memory error while it fills cannot leak
 * them.  Free them before raising any other error (mfl_buffer_free): a
 * userdata made while the state closes (in a finalizer) gets no
 * finalizer of its own. */
mfl_buffer *mfl_push_buffer(lua_State *L);

/* Appends the encoding of the value at idx to out.  root_name starts the
 * path in error messages ("args" gives "args[2].conn"; NULL: "value").
 * Returns MFL_CODEC_OK and pushes nothing, or an error code and pushes the
 * error (a moonflow error table with kind, message and path for EVALUE
 * and EDEPTH), out->len unchanged.  Never raises (it runs protected);
 * needs 3 free stack slots. */
int mfl_encode(lua_State *L, int idx, mfl_buffer *out, unsigned flags,
               const char *root_name);

/* Decodes one message of len bytes and pushes its value: MFL_CODEC_OK, or
 * an error code with the error pushed instead (a DecodeError table for
 * EINPUT and EDEPTH).  The bytes are copied: nothing keeps pointing into
 * them.  Never raises; needs 3 free stack slots. */
int mfl_decode(lua_State *L, const char *bytes, size_t len, unsigned flags);

/* Registers the metatable at mt under name, in this state: a table with it
 * travels, and gets the metatable registered under the same name in the
 * receiving state.  With encode and decode (stack indices of functions, 0
 * for none): encode(value) returns a value that travels in its place, and
 * the receiving side calls decode(that value) for the value; userdata need
 * these.  A name registered again replaces the old entry; mt 0 removes the
 * name.  Raises on bad arguments.  moonflow's error metatable is registered
 * as "moonflow.Error" by mfl_open_codec. */
void mfl_codec_register(lua_State *L, const char *name, int mt, int encode,
                        int decode);

#endif

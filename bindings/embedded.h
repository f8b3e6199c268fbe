/*
 * embedded.h -- the Lua modules of lua/, compiled into the binary by
 * cmake/embed.cmake and made loadable by require through package.preload.
 */
#ifndef MF_EMBEDDED_H
#define MF_EMBEDDED_H

#include <stddef.h>

typedef struct mf_embedded_module {
  const char *name;   /* "moonflow.flow" */
  const char *source; /* the file's text */
  size_t size;
} mf_embedded_module;

/* Terminated by an entry whose name is NULL. */
extern const mf_embedded_module mf_embedded_modules[];

#endif

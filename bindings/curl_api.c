/*
 * curl_api.c -- loads libcurl at the first HTTP request (curl_api.h says
 * why).  The library stays loaded until the process ends: its global
 * state and its handles' callbacks must never point into unmapped code.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "curl_api.h"

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static mfl_curl_api api;
static int loaded;
const mfl_curl_api *const mfl_curl = &api;
static char failure[512];

/* Each function, by its name without curl_ (a field of mfl_curl_api). */
/* clang-format off */
#define FUNCTIONS(X)                                                           \
  X(global_init)                                                               \
  X(multi_init) X(multi_setopt) X(multi_socket_action) X(multi_add_handle)     \
  X(multi_remove_handle) X(multi_assign) X(multi_info_read) X(multi_cleanup)   \
  X(multi_strerror)                                                            \
  X(easy_init) X(easy_setopt) X(easy_getinfo) X(easy_reset) X(easy_cleanup)   \
  X(easy_strerror)                                                             \
  X(slist_append) X(slist_free_all)                                            \
  X(url) X(url_set) X(url_get) X(url_cleanup) X(free)
/* clang-format on */

static void *open_library(void) {
  const char *asked = getenv("MOONFLOW_LIBCURL");
  if (asked && *asked) {
    void *lib = dlopen(asked, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
      snprintf(failure, sizeof failure, "cannot load libcurl: %s", dlerror());
    return lib;
  }
  static const char *const names[] = {"libcurl.so.4", "libcurl-gnutls.so.4"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    void *lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (lib)
      return lib;
  }
  snprintf(failure, sizeof failure,
           "cannot load libcurl (libcurl.so.4 or libcurl-gnutls.so.4; Debian: "
           "libcurl4): %s",
           dlerror());
  return NULL;
}

/* One function of lib into api, or a failure (in load).  POSIX: the
 * pointer dlsym gives converts to a function pointer. */
#define RESOLVE(name)                                                          \
  api.name = (__typeof__(api.name))dlsym(lib, "curl_" #name);                  \
  if (!api.name) {                                                             \
    snprintf(failure, sizeof failure, "libcurl has no curl_%s", #name);        \
    return;                                                                    \
  }

static void load(void) {
  void *lib = open_library();
  if (!lib)
    return;
  FUNCTIONS(RESOLVE)
  if (api.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(failure, sizeof failure, "libcurl failed to initialise");
    return;
  }
  loaded = 1;
}

int mfl_curl_load(const char **why) {
  pthread_once(&load_once, load);
  if (!loaded)
    *why = failure;
  return loaded;
}

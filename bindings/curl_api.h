/*
 * curl_api.h -- the libcurl functions mf.http uses, loaded at the first
 * request (dlopen) rather than linked: libcurl brings some thirty
 * libraries (TLS, HTTP/2, LDAP, Kerberos, SSH...) whose loading and
 * relocation were about half of every program's start, HTTP or not.
 * curl.h gives the types and constants only.
 */
#ifndef MFL_CURL_API_H
#define MFL_CURL_API_H

#include <curl/curl.h>

#include "binding.h"

typedef struct mfl_curl_api {
  CURLcode (*global_init)(long flags);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_setopt)(CURLM *multi, CURLMoption option, ...);
  CURLMcode (*multi_socket_action)(CURLM *multi, curl_socket_t s, int mask,
                                   int *running);
  CURLMcode (*multi_add_handle)(CURLM *multi, CURL *easy);
  CURLMcode (*multi_remove_handle)(CURLM *multi, CURL *easy);
  CURLMcode (*multi_assign)(CURLM *multi, curl_socket_t s, void *data);
  CURLMsg *(*multi_info_read)(CURLM *multi, int *queued);
  CURLMcode (*multi_cleanup)(CURLM *multi);
  const char *(*multi_strerror)(CURLMcode code);
  CURL *(*easy_init)(void);
  CURLcode (*easy_setopt)(CURL *easy, CURLoption option, ...);
  CURLcode (*easy_getinfo)(CURL *easy, CURLINFO info, ...);
  void (*easy_reset)(CURL *easy);
  void (*easy_cleanup)(CURL *easy);
  const char *(*easy_strerror)(CURLcode code);
  struct curl_slist *(*slist_append)(struct curl_slist *list,
                                     const char *string);
  void (*slist_free_all)(struct curl_slist *list);
  CURLU *(*url)(void);
  CURLUcode (*url_set)(CURLU *url, CURLUPart part, const char *content,
                       unsigned int flags);
  CURLUcode (*url_get)(const CURLU *url, CURLUPart part, char **content,
                       unsigned int flags);
  void (*url_cleanup)(CURLU *url);
  void (*free)(void *p);
} mfl_curl_api;

/* Loads libcurl and initialises it (curl_global_init), once per process,
 * from any thread: $MOONFLOW_LIBCURL when set, else libcurl.so.4, else
 * libcurl-gnutls.so.4.  Returns 1, or 0 when none loads or a function is
 * missing (*why then says what failed: a static string). */
MFL_INTERNAL int mfl_curl_load(const char **why);

/* The functions: filled by mfl_curl_load, to be used only after a call of
 * it returned 1 on the calling thread (or in callbacks of what that
 * thread started since). */
MFL_INTERNAL extern const mfl_curl_api *const mfl_curl;

#endif

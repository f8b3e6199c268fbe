/*
 * test_config.c -- the version and mf_config's size field: what lets a host
 * built against one header use a later library.  mf_engine_new reads only
 * the bytes the host's struct has, takes 0 for the first layout, and
 * refuses settings it does not know (non-zero bytes past its struct).
 */
#include "test.h"

/* A host whose header's mf_config has more fields than this library's. */
typedef struct newer_config {
  mf_config known;
  unsigned char later_fields[16];
} newer_config;

TEST(version) {
  char expected[32];
  snprintf(expected, sizeof expected, "%d.%d.%d", MF_VERSION_MAJOR,
           MF_VERSION_MINOR, MF_VERSION_PATCH);
  CHECK(strcmp(MF_VERSION, expected) == 0);
  CHECK(strcmp(mf_version_string(), MF_VERSION) == 0);
  CHECK(mf_version() == MF_VERSION_HEX);
  CHECK(MF_VERSION_HEX == ((MF_VERSION_MAJOR << 16) | (MF_VERSION_MINOR << 8) |
                           MF_VERSION_PATCH));
}

/* Creates an engine from cfg; returns mf_engine_new's code.  On success
 * checks that it runs on loop (when given) and closes it. */
static int try_config(const mf_config *cfg, uv_loop_t *loop) {
  mf_engine *engine = NULL;
  int rc = mf_engine_new(&engine, cfg);
  if (rc != 0)
    return rc;
  if (loop)
    CHECK(mf_engine_loop(engine) == loop);
  else
    CHECK(mf_engine_loop(engine) != NULL);
  CHECK(mf_engine_run(engine) == 0);
  mf_engine_close(engine);
  if (loop)
    uv_run(loop, UV_RUN_DEFAULT); /* the engine's handles close */
  return 0;
}

TEST(sizes) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  CHECK(try_config(NULL, NULL) == 0);

  mf_config sized = {.size = sizeof sized, .loop = &loop};
  CHECK(try_config(&sized, &loop) == 0);

  mf_config first_layout = {.loop = &loop}; /* size 0 */
  CHECK(try_config(&first_layout, &loop) == 0);

  mf_config too_small = {.size = 1, .loop = &loop};
  CHECK(try_config(&too_small, &loop) == MF_EINVAL);

  newer_config newer;
  memset(&newer, 0, sizeof newer);
  newer.known.size = sizeof newer;
  newer.known.loop = &loop;
  CHECK(try_config(&newer.known, &loop) == 0); /* later fields all zero */
  newer.later_fields[3] = 1; /* a setting this library cannot honour */
  CHECK(try_config(&newer.known, &loop) == MF_EINVAL);

  CHECK(uv_loop_close(&loop) == 0);
}

TEST_MAIN("config")

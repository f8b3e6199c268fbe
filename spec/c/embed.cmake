# Tests of embedding the engine in a C host (included by spec/CMakeLists.txt).
find_package(Threads REQUIRED)

# Fault tests of the embedding API, with Lua: each test in a child process.
add_executable(test_embed ${CMAKE_CURRENT_LIST_DIR}/test_embed.c)
target_link_libraries(test_embed PRIVATE moonflow_bindings Threads::Threads)
add_test(NAME c.embed COMMAND test_embed)
set_tests_properties(c.embed PROPERTIES TIMEOUT 600)

# The small-block heap (engine/heap.c) and moonflow's Lua states on it.
add_executable(test_heap ${CMAKE_CURRENT_LIST_DIR}/test_heap.c)
target_link_libraries(test_heap PRIVATE moonflow_bindings)
add_test(NAME c.heap COMMAND test_heap)
set_tests_properties(c.heap PROPERTIES TIMEOUT 300)

# mf_engine_post from other threads under ThreadSanitizer: the engine alone
# (C runs, no Lua), built with -fsanitize=thread (moonflow_engine_tsan, in
# tests.cmake).  TSan cannot be mixed with ASan, so only in the build without
# MF_SANITIZE.
if(NOT MF_SANITIZE)
  add_executable(test_post_tsan ${CMAKE_CURRENT_LIST_DIR}/test_post_tsan.c)
  target_link_libraries(test_post_tsan PRIVATE moonflow_engine_tsan)
  add_test(NAME c.post_tsan COMMAND test_post_tsan)
  set_tests_properties(c.post_tsan PROPERTIES TIMEOUT 600
                       ENVIRONMENT "TSAN_OPTIONS=halt_on_error=1")
endif()

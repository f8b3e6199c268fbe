# The C tests of the engine: C task bodies, no Lua, one file per area, each
# on the harness spec/c/test.h (included by spec/CMakeLists.txt).  Each but
# test_config is built twice: against the engine (c.NAME) and, in the build
# without MF_SANITIZE, against the engine compiled with ThreadSanitizer
# (c.NAME_tsan; TSan cannot be mixed with ASan).
find_package(Threads REQUIRED)

set(MF_C_TESTS engine config life retry timeout limits cancel deadlock park
               timers)

# test_cancel makes the engine's own allocations fail while it closes:
# malloc, calloc and realloc of the objects linked in are wrapped.
set(MF_WRAP_ALLOC -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc)

function(mf_c_test name engine suffix)
  set(target test_${name}${suffix})
  add_executable(${target} ${CMAKE_CURRENT_LIST_DIR}/test_${name}.c)
  target_link_libraries(${target} PRIVATE ${engine} Threads::Threads)
  if(name STREQUAL "cancel")
    target_link_options(${target} PRIVATE ${MF_WRAP_ALLOC})
  endif()
  add_test(NAME c.${name}${suffix} COMMAND ${target})
  set_tests_properties(c.${name}${suffix} PROPERTIES TIMEOUT 900
                       ENVIRONMENT "TSAN_OPTIONS=halt_on_error=1")
endfunction()

# The engine alone compiled again with -fsanitize=thread (test_post_tsan,
# in embed.cmake, links it too).
if(NOT MF_SANITIZE)
  add_library(moonflow_engine_tsan STATIC ${MF_ENGINE_SOURCES})
  target_include_directories(moonflow_engine_tsan PUBLIC
                             ${MF_ENGINE_INCLUDE_DIRS})
  target_compile_options(moonflow_engine_tsan PUBLIC -fsanitize=thread
                         -fno-omit-frame-pointer)
  target_link_options(moonflow_engine_tsan PUBLIC -fsanitize=thread)
  target_link_libraries(moonflow_engine_tsan PUBLIC PkgConfig::LIBUV m
                        Threads::Threads)
endif()

foreach(name IN LISTS MF_C_TESTS)
  mf_c_test(${name} moonflow_engine "")
  if(NOT MF_SANITIZE AND NOT name STREQUAL "config")
    mf_c_test(${name} moonflow_engine_tsan "_tsan")
  endif()
endforeach()

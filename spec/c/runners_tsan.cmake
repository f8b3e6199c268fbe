# The threads runner under ThreadSanitizer (included by spec/CMakeLists.txt):
# the engine and the bindings compiled again with -fsanitize=thread, and a
# host that runs worker threads through their paces (test_runners_tsan.c).
# TSan cannot be mixed with ASan: only in the build without MF_SANITIZE.
if(MF_SANITIZE)
  return()
endif()
find_package(Threads REQUIRED)
# Generated in the top directory: marked so here too (CMP0118 is OLD under
# cmake_minimum_required 3.18), else a fresh build tree fails to generate.
set_source_files_properties(${MF_EMBEDDED_C} PROPERTIES GENERATED TRUE)
add_executable(test_runners_tsan ${CMAKE_CURRENT_LIST_DIR}/test_runners_tsan.c
               ${MF_ENGINE_SOURCES} ${MF_BINDING_SOURCES} ${MF_EMBEDDED_C})
target_include_directories(test_runners_tsan PRIVATE ${PROJECT_SOURCE_DIR}/bindings
                           ${MF_ENGINE_INCLUDE_DIRS} ${MF_LUA_INCLUDE_DIRS}
                           ${CURL_INCLUDE_DIRS})
# (the generated file's rule belongs to the top directory's objects)
add_dependencies(test_runners_tsan moonflow_bindings_objects)
target_compile_options(test_runners_tsan PRIVATE -fsanitize=thread
                       -fno-omit-frame-pointer)
target_link_options(test_runners_tsan PRIVATE -fsanitize=thread -rdynamic)
target_link_libraries(test_runners_tsan PRIVATE PkgConfig::LIBUV PkgConfig::LUA
                      PkgConfig::SQLITE3 m dl Threads::Threads)
add_test(NAME c.runners_tsan COMMAND test_runners_tsan)
set_tests_properties(c.runners_tsan PROPERTIES TIMEOUT 600
                     ENVIRONMENT "TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=${CMAKE_CURRENT_LIST_DIR}/runners_tsan.supp")

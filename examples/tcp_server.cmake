# The TCP server example (issue 5): tcp_server answers a line protocol with
# a Lua flow per request (or in plain C with --plain), tcp_load hammers it
# with 200 concurrent connections and checks every answer; tcp_test.sh runs
# both modes on ephemeral ports and always stops the server.
add_executable(tcp_server tcp_server.c)
target_link_libraries(tcp_server PRIVATE moonflow::moonflow)
# The flow file, found without a --script argument from any directory.
target_compile_definitions(tcp_server PRIVATE
  TCP_SERVER_SCRIPT="${CMAKE_CURRENT_SOURCE_DIR}/tcp_server.lua")

add_executable(tcp_load tcp_load.c)
target_link_libraries(tcp_load PRIVATE PkgConfig::LIBUV m)

if(MF_BUILD_TESTS)
  add_test(NAME example.tcp_server
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/tcp_test.sh
                   $<TARGET_FILE:tcp_server> $<TARGET_FILE:tcp_load>)
  # The script bounds itself (about 45 s when answers are lost, with its
  # generous grace periods; seconds when all goes well); this is the backstop.
  set_tests_properties(example.tcp_server PROPERTIES TIMEOUT 300)
endif()

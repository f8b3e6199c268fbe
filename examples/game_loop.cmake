# examples/game_loop.cmake -- a 60 Hz game loop hosting the engine, with
# per-frame cost figures (run it with no arguments) and a short checking
# run as a test.
add_executable(game_loop game_loop.c)
target_link_libraries(game_loop PRIVATE moonflow::moonflow m) # it uses libm itself
# The game logic's path, so that the program finds it from any directory.
target_compile_definitions(game_loop PRIVATE
  GAME_LOOP_SCRIPT="${CMAKE_CURRENT_SOURCE_DIR}/game_loop.lua")
if(MF_BUILD_TESTS)
  add_test(NAME example.game_loop COMMAND game_loop --frames 120 --check
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  # A backstop against hangs (it took 52 s under the sanitizers at load 25).
  set_tests_properties(example.game_loop PROPERTIES TIMEOUT 300)
endif()

# spec/fuzz/fuzz.cmake: the API fuzzer in the test suite.  A bounded time of
# random and hostile calls (spec/fuzz/api_fuzz.lua) under stock lua5.4 and
# under the moonflow program, in child processes that must not crash, hang,
# print a sanitizer report or break a contract (spec/fuzz/run_fuzz.sh).
# The suite's seeds are fixed (the same cases on every run, a prefix of them
# on a slower machine), so a test run never fails on a find it has not seen
# before; `make fuzz` takes seeds from the clock to look for new ones.  A
# failing batch prints its seed and the command that replays it.  The
# timeout is generous: the driver stops starting
# batches after --seconds, and a hang is one batch running --hang seconds
# past its budget.
set(MF_FUZZ_DRIVER ${CMAKE_CURRENT_LIST_DIR}/run_fuzz.sh)
set(MF_FUZZ_ENV "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23"
    "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1")
set(MF_FUZZ_LUA_ENV ${MF_FUZZ_ENV} "MF_MODULE_DIR=${PROJECT_BINARY_DIR}")
if(MF_SANITIZE)
  # The sanitizer runtime is preloaded into lua5.4 only, not into the
  # driver's shell tools (their leaks are not ours).
  list(APPEND MF_FUZZ_LUA_ENV "FUZZ_LD_PRELOAD=${MF_LIBASAN}")
endif()
add_test(NAME fuzz.lua
         COMMAND sh ${MF_FUZZ_DRIVER} --seconds 12 --batch 6 --abandon-every 2
                 --seed 20261201 -- ${LUA_INTERPRETER} spec/fuzz/api_fuzz.lua --trace
         WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
add_test(NAME fuzz.moonflow
         COMMAND sh ${MF_FUZZ_DRIVER} --seconds 12 --batch 6 --abandon-every 2
                 --seed 20261202 -- $<TARGET_FILE:moonflow> spec/fuzz/api_fuzz.lua --trace
         WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(fuzz.lua PROPERTIES ENVIRONMENT "${MF_FUZZ_LUA_ENV}"
                     TIMEOUT 900)
set_tests_properties(fuzz.moonflow PROPERTIES ENVIRONMENT "${MF_FUZZ_ENV}"
                     TIMEOUT 900)
# One fuzzer at a time: the machine is shared.
set_tests_properties(fuzz.lua fuzz.moonflow PROPERTIES RESOURCE_LOCK fuzz)

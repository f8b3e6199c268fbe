# The install test (spec/install_test.sh): installs this build into a
# temporary prefix and builds and runs outside hosts against it.  It needs
# every part built and the install rules.  Not under the sanitizers: there
# the installed libraries and module are instrumented, so every outside
# program that loads them (the host, stock lua5.4, luarocks' build) would
# need the sanitizer runtime preloaded; what is tested is the packaging,
# which the normal build covers.
if(NOT MF_SANITIZE AND MF_INSTALL AND MF_BUILD_SHARED AND MF_BUILD_STATIC
   AND MF_BUILD_MODULE AND MF_BUILD_PROGRAM)
  add_test(NAME install COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/install_test.sh
           ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
  # It compiles the library twice more (add_subdirectory, luarocks make).
  set_tests_properties(install PROPERTIES TIMEOUT 1200)
endif()

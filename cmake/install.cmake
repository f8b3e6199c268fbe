# install.cmake -- what `cmake --install` (and `make install`) puts under the
# prefix, as libuv and luv lay it out:
#   bin/moonflow, share/man/man1/moonflow.1        the program
#   lib/lua/5.4/moonflow.so                        the Lua module
#   lib/libmoonflow.so.*, lib/libmoonflow.a        engine + bindings, for hosts
#   include/moonflow.h, moonflow_lua.h, moonflow_version.h
#   lib/pkgconfig/moonflow.pc, lib/cmake/moonflow/ (find_package(moonflow))
#   share/doc/moonflow/                            LICENSE, the reference docs
include(CMakePackageConfigHelpers)

if(MF_BUILD_PROGRAM)
  install(TARGETS moonflow RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  # The man page, with the project version in its title line.
  configure_file(${PROJECT_SOURCE_DIR}/docs/moonflow.1.in
                 ${PROJECT_BINARY_DIR}/moonflow.1 @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/moonflow.1
          DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
endif()

if(MF_BUILD_MODULE)
  install(TARGETS moonflow_module LIBRARY DESTINATION ${MF_INSTALL_LUA_CMOD_DIR})
endif()

set(MF_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/moonflow)
set(MF_HOST_TARGETS)
foreach(target moonflow_shared moonflow_static)
  if(TARGET ${target})
    list(APPEND MF_HOST_TARGETS ${target})
  endif()
endforeach()

if(MF_HOST_TARGETS)
  install(TARGETS ${MF_HOST_TARGETS} EXPORT moonflowTargets
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(FILES ${MF_PUBLIC_HEADERS} ${MF_GENERATED_INCLUDE_DIR}/moonflow_version.h
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

  # find_package(moonflow): the targets, the config that finds libuv and
  # Lua again, and the version file.
  install(EXPORT moonflowTargets NAMESPACE moonflow:: DESTINATION ${MF_CMAKE_DIR})
  configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/moonflowConfig.cmake.in
    ${PROJECT_BINARY_DIR}/moonflowConfig.cmake INSTALL_DESTINATION ${MF_CMAKE_DIR})
  # 0.x: only the same minor version is compatible.
  if(PROJECT_VERSION_MAJOR EQUAL 0)
    set(MF_COMPATIBILITY SameMinorVersion)
  else()
    set(MF_COMPATIBILITY SameMajorVersion)
  endif()
  write_basic_package_version_file(${PROJECT_BINARY_DIR}/moonflowConfigVersion.cmake
    COMPATIBILITY ${MF_COMPATIBILITY})
  install(FILES ${PROJECT_BINARY_DIR}/moonflowConfig.cmake
                ${PROJECT_BINARY_DIR}/moonflowConfigVersion.cmake
          DESTINATION ${MF_CMAKE_DIR})

  # moonflow.pc, written at install time: its prefix is the one given to
  # `cmake --install --prefix`, not the one configured.
  install(CODE "
    set(MF_PC_TEMPLATE \"${PROJECT_SOURCE_DIR}/cmake/moonflow.pc.in\")
    set(MF_PC_OUT \"${PROJECT_BINARY_DIR}/pkgconfig/moonflow.pc\")
    set(MF_PC_VERSION \"${PROJECT_VERSION}\")
    set(MF_PC_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
    set(MF_PC_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
    include(\"${PROJECT_SOURCE_DIR}/cmake/install_pc.cmake\")")
endif()

install(FILES ${PROJECT_SOURCE_DIR}/LICENSE ${PROJECT_SOURCE_DIR}/docs/README.md
              ${PROJECT_SOURCE_DIR}/docs/lua-api.md ${PROJECT_SOURCE_DIR}/docs/c-api.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

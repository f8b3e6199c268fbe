# install_pc.cmake -- run by `cmake --install`: writes moonflow.pc for the
# prefix being installed to, and installs it (DESTDIR respected).
# In: MF_PC_TEMPLATE, MF_PC_OUT, MF_PC_VERSION, MF_PC_LIBDIR,
#     MF_PC_INCLUDEDIR, and CMAKE_INSTALL_PREFIX as the install sets it.
set(MF_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${MF_PC_${dir}}")
    set(MF_PC_${dir}_PATH "${MF_PC_${dir}}")
  else()
    set(MF_PC_${dir}_PATH "\${prefix}/${MF_PC_${dir}}")
  endif()
endforeach()
if(IS_ABSOLUTE "${MF_PC_LIBDIR}")
  set(MF_PC_DESTINATION "${MF_PC_LIBDIR}/pkgconfig")
else()
  set(MF_PC_DESTINATION "${CMAKE_INSTALL_PREFIX}/${MF_PC_LIBDIR}/pkgconfig")
endif()
configure_file("${MF_PC_TEMPLATE}" "${MF_PC_OUT}" @ONLY)
file(INSTALL "${MF_PC_OUT}" DESTINATION "${MF_PC_DESTINATION}")

# Checks that the #include lines keep ligerd's layers pointing one way (common/CMakeLists.txt):
# linking catches a wrong dependency only when a symbol is used, not a header-only one (a constant,
# an inline function). Run as a test: cmake -DROOT=<repository root> -P cmake/CheckLayering.cmake
#
# Each rule: the files it covers and the quoted includes of ours they may use (a regular
# expression matched against the whole include path). Includes of others (absl/, google/, grpc
# headers, the system's) are not checked.
if(NOT ROOT)
  message(FATAL_ERROR "usage: cmake -DROOT=<repository root> -P CheckLayering.cmake")
endif()

set(ours "^(common|proto|kernels|client|server|python_client|ligerd)/")
# ligerd_kernels_core: the kernels/ headers a client may use (kernels/CMakeLists.txt).
set(core "kernels/tensor_view\\.h|kernels/status_macros\\.h|kernels/cuda_driver\\.h|kernels/cuda_driver_functions\\.inc")
set(proto "proto/.*|ligerd/v1/.*")  # ring_layout.h and the generated gRPC headers

set(violations)
set(checked 0)
function(check_rule allowed)
  foreach(f IN LISTS ARGN)
    math(EXPR checked "${checked} + 1")
    file(STRINGS "${ROOT}/${f}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
    foreach(line IN LISTS lines)
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]*)\".*" "\\1" inc "${line}")
      if(inc MATCHES "${ours}" AND NOT inc MATCHES "^(${allowed})$")
        list(APPEND violations "${f}: #include \"${inc}\"")
      endif()
    endforeach()
  endforeach()
  set(violations ${violations} PARENT_SCOPE)
  set(checked ${checked} PARENT_SCOPE)
endfunction()

function(sources out)
  file(GLOB_RECURSE found RELATIVE "${ROOT}" ${ARGN})
  set(${out} ${found} PARENT_SCOPE)
endfunction()

# common/: the bottom layer.
sources(common "${ROOT}/common/*.h" "${ROOT}/common/*.cc")
check_rule("common/.*" ${common})

# proto/ligerd/ring_layout.h: the ring's wire format, shared by client and server; self-contained.
check_rule("(none)" proto/ligerd/ring_layout.h)

# kernels/: the core files (linked by the client) stay among themselves; the rest of kernels/ may
# use all of kernels/ and common/, nothing above.
set(core_files kernels/tensor_view.h kernels/status_macros.h kernels/cuda_driver.h
    kernels/cuda_driver_functions.inc kernels/cuda_driver.cc)
check_rule("${core}|common/.*" ${core_files})
sources(kernels "${ROOT}/kernels/*.h" "${ROOT}/kernels/*.cc" "${ROOT}/kernels/*.cuh" "${ROOT}/kernels/*.inc")
list(REMOVE_ITEM kernels ${core_files})
check_rule("kernels/.*|common/.*" ${kernels})

# client/: ligerd_client uses kernels/ only through the core; ligerctl also links ligerd_kernels.
sources(client "${ROOT}/client/*.h" "${ROOT}/client/*.cc")
list(REMOVE_ITEM client client/ligerctl.cc)
check_rule("client/.*|common/.*|${proto}|${core}" ${client})
check_rule("client/.*|common/.*|${proto}|kernels/.*" client/ligerctl.cc)

# server/: never the client.
sources(server "${ROOT}/server/*.h" "${ROOT}/server/*.cc")
check_rule("server/.*|common/.*|${proto}|kernels/.*" ${server})

# python_client/csrc: the remote glue is a client; the extension runs kernels and reaches the
# client only through remote_client.h (which names no protobuf type, see there).
check_rule("python_client/csrc/remote_client\\.h|client/.*|common/.*|${proto}|${core}"
           python_client/csrc/remote_client.h python_client/csrc/remote_client.cc)
check_rule("python_client/csrc/remote_client\\.h|kernels/.*|common/.*" python_client/csrc/ligerd_ext.cc)

if(violations)
  list(JOIN violations "\n  " text)
  message(FATAL_ERROR "layering: includes against the dependency direction (common/CMakeLists.txt):\n  ${text}")
endif()
message(STATUS "layering: ${checked} files checked, every include points down")

# The Debian package: `cpack -G DEB` in a build folder makes
# dctx_VERSION_ARCH.deb of what `cmake --install` installs (the library,
# headers, pkg-config and CMake files, rpcd). scripts/package builds it
# for /usr, where Debian keeps its libraries (lib/<multiarch>).
#
# Depends names the Debian 12 packages of the libraries libdctx and rpcd
# load; Recommends, the development packages that building against dctx
# needs (its pkg-config and CMake files name nng, protobuf-c and
# libsodium): apt installs them unless told --no-install-recommends, which
# leaves what rpcd alone needs.
set(CPACK_PACKAGE_NAME dctx)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Go's context package in C, made distributed")
set(CPACK_PACKAGE_DESCRIPTION
    "A context tree (cancel, deadline, values) with Go's semantics, and an RPC on nng
whose calls carry their context: a cancel or a deadline at the edge reaches every
service a call touched. With rpcd, its daemon and command-line client.")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "dctx developers <dctx@localhost>")
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libc6 (>= 2.34), libnng1 (>= 1.5.2), libprotobuf-c1 (>= 1.4), libsodium23 (>= 1.0.18)")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "libnng-dev, libprotobuf-c-dev, libsodium-dev, pkg-config")
if(DCTX_GRPC) # libdctx_grpc and rpcd load gRPC's C core
  string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS ", libgrpc29 (>= 1.51)")
  string(APPEND CPACK_DEBIAN_PACKAGE_RECOMMENDS ", libgrpc-dev")
endif()
set(CPACK_GENERATOR DEB)
include(CPack)

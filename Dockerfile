# Dockerfile - rpcd built from this source tree, on Debian 12 with Debian's
# packages only. Two stages: "build" has the compilers and the -dev packages
# and builds dctx with CMake, its gRPC edge included (libgrpc-dev: gRPC's C
# core, for rpcd serve --grpc-listen); the runtime image has rpcd, libdctx,
# libdctx_grpc and the runtime libraries, nothing else (see
# docker-compose.yml for its use).
#
#   docker build -t dctx-rpcd:local .
#   docker run --rm dctx-rpcd:local rpcd --help

# ---- build --------------------------------------------------------------------
FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config \
        libnng-dev libprotobuf-c-dev protobuf-c-compiler libsodium-dev libgrpc-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# What the library, rpcd and the always-built examples need; no tests, no
# benchmarks (.dockerignore keeps build trees and .git out of the context).
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY proto/ proto/
COPY lib/ lib/
COPY rpcd/ rpcd/
COPY examples/ examples/
# DCTX_GRPC=ON: fail here rather than build an rpcd without --grpc-listen.
# The install puts libdctx.so* and libdctx_grpc.so* in lib/; the headers,
# CMake and pkg-config files and static libraries (libdctx_grpc.a too) are
# left out of the image.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr/local \
        -DDCTX_BUILD_TESTS=OFF -DDCTX_BUILD_BENCH=OFF -DDCTX_GRPC=ON \
 && cmake --build /build -j"$(nproc)" \
 && DESTDIR=/staging cmake --install /build \
 && rm -rf /staging/usr/local/include /staging/usr/local/lib/cmake \
           /staging/usr/local/lib/pkgconfig /staging/usr/local/lib/*.a \
 && LD_LIBRARY_PATH=/staging/usr/local/lib /staging/usr/local/bin/rpcd --version

# ---- runtime ------------------------------------------------------------------
FROM debian:12-slim
# The shared libraries libdctx links (libnng1 brings its mbedtls libraries),
# and gRPC's C core that libdctx_grpc links (libgrpc29: libgrpc and libgpr,
# with the libraries they need as its dependencies).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libnng1 libprotobuf-c1 libsodium23 libgrpc29 \
 && rm -rf /var/lib/apt/lists/*
# rpcd, libdctx.so* and libdctx_grpc.so* into /usr/local; ldconfig makes
# the libraries found.
COPY --from=build /staging/usr/local/ /usr/local/
RUN ldconfig && rpcd --version
# Not root: rpcd needs no privilege (ports above 1024, logs to stderr).
USER 65534:65534
# 7000-7003: dctx (--listen); 8000: gRPC (the gateway's --grpc-listen).
EXPOSE 7000-7003 8000
CMD ["rpcd", "--help"]

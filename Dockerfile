# Dockerfile - rpcd built from this source tree, on Debian 12 with Debian's
# packages only. Two stages: "build" has the compilers and the -dev packages
# and builds dctx with CMake; the runtime image has rpcd, libdctx and the
# runtime libraries, nothing else (see docker-compose.yml for its use).
#
#   docker build -t dctx-rpcd:local .
#   docker run --rm dctx-rpcd:local rpcd --help

# ---- build --------------------------------------------------------------------
FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config \
        libnng-dev libprotobuf-c-dev protobuf-c-compiler libsodium-dev \
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
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr/local \
        -DDCTX_BUILD_TESTS=OFF -DDCTX_BUILD_BENCH=OFF \
 && cmake --build /build -j"$(nproc)" \
 && DESTDIR=/staging cmake --install /build \
 && rm -rf /staging/usr/local/include /staging/usr/local/lib/cmake \
           /staging/usr/local/lib/pkgconfig /staging/usr/local/lib/*.a \
 && LD_LIBRARY_PATH=/staging/usr/local/lib /staging/usr/local/bin/rpcd --version

# ---- runtime ------------------------------------------------------------------
FROM debian:12-slim
# The shared libraries libdctx links (libnng1 brings its mbedtls libraries).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libnng1 libprotobuf-c1 libsodium23 \
 && rm -rf /var/lib/apt/lists/*
# rpcd and libdctx.so* into /usr/local; ldconfig makes the library found.
COPY --from=build /staging/usr/local/ /usr/local/
RUN ldconfig && rpcd --version
# Not root: rpcd needs no privilege (ports above 1024, logs to stderr).
USER 65534:65534
EXPOSE 7000-7003
CMD ["rpcd", "--help"]

# wsgate container image: build on Debian 12, run on debian:bookworm-slim as a non-root user.
#   docker build -t wsgate .
#   docker run -p 8080:8080 -v $PWD/examples/wsgate.yaml:/etc/wsgate/wsgate.yaml:ro wsgate
FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      libevent-dev libssl-dev libyaml-cpp-dev prometheus-cpp-dev libgtest-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF \
 && cmake --build /build -j"$(nproc)" \
 && strip /build/wsgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libevent-2.1-7 libevent-core-2.1-7 \
      libevent-extra-2.1-7 libevent-openssl-2.1-7 libevent-pthreads-2.1-7 libssl3 \
      libyaml-cpp0.7 libprometheus-cpp-core1.0 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin wsgate \
 && mkdir -p /etc/wsgate
COPY --from=build /build/wsgate /usr/local/bin/wsgate
COPY examples/wsgate.yaml /etc/wsgate/wsgate.yaml
USER wsgate
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/wsgate"]
CMD ["-c", "/etc/wsgate/wsgate.yaml"]

# wsgate container image. Build stage: Debian 12 runs scripts/build-release.sh, the same release
# build CI runs, which also produces the Debian package. Runtime stage: debian:bookworm-slim
# installs that package (its Depends pull in exactly the shared libraries the binary needs).
#   docker build -t wsgate .
#   docker run -p 8080:8080 -v "$PWD/my.yaml:/etc/wsgate/wsgate.yaml:ro" wsgate
FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config dpkg-dev \
      file libevent-dev libssl-dev libyaml-cpp-dev prometheus-cpp-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/build-release.sh /build /build/staging

FROM debian:bookworm-slim
COPY --from=build /build/wsgate_*.deb /tmp/
RUN apt-get update \
 && apt-get install -y --no-install-recommends /tmp/wsgate_*.deb ca-certificates \
 && rm -rf /var/lib/apt/lists/* /tmp/wsgate_*.deb \
 && rm -f /etc/wsgate/admin.token && sed -i '/^  token_file:/d' /etc/wsgate/wsgate.yaml \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin wsgate
# /etc/wsgate/wsgate.yaml comes from the package (packaging/wsgate.yaml); mount your own over it.
# Without systemd there is no credential to read the admin token from, and postinst's token would
# be the same in every container: both go. The admin listener stays on the container's loopback.
# Numeric, so Kubernetes' runAsNonRoot can verify it (examples/kubernetes/deployment.yaml).
USER 10001:10001
# 8080: the public WebSocket listener. 9901: the admin listener (/healthz, /readyz, /metrics);
# the shipped config binds it to loopback, so publish it only after setting admin.token and
# address 0.0.0.0:9901.
EXPOSE 8080 9901
# SIGTERM drains (docs/operations.md); give `docker stop -t` more than the drain takes (45s with
# the shipped config).
STOPSIGNAL SIGTERM
# bash's /dev/tcp: no HTTP client needed in the image. Needs the admin listener on 127.0.0.1:9901.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9901 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/bin/wsgate"]
CMD ["-c", "/etc/wsgate/wsgate.yaml"]

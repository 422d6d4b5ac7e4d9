# examples/demo_backend.py (greeting echo server) for the Compose demo.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-websockets \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10002 --no-create-home --shell /usr/sbin/nologin demo
COPY examples/demo_backend.py /usr/local/bin/demo_backend.py
USER 10002
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "/usr/local/bin/demo_backend.py"]

# The demo auth hook (examples/compose/fleet/auth_hook.py).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10003 --no-create-home --shell /usr/sbin/nologin auth
COPY examples/compose/fleet/auth_hook.py /usr/local/bin/auth_hook.py
USER 10003
ENTRYPOINT ["python3", "/usr/local/bin/auth_hook.py", "--host", "0.0.0.0", "--port", "9000"]

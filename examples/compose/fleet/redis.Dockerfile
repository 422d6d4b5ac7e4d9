# Redis for the fleet demo, from Debian 12's package. No persistence: the registry is rebuilt
# by the instances after a restart (docs/fleet.md).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER redis
ENTRYPOINT ["redis-server", "--bind", "0.0.0.0", "--port", "6379", "--save", "", \
            "--appendonly", "no", "--requirepass", "fleet-demo-redis"]

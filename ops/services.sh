#!/usr/bin/env bash
# Start the local Redis, PostgreSQL and RabbitMQ the tests talk to, when they are installed but down.
set -uo pipefail
if command -v redis-server >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "ferqueue: starting redis-server" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
fi
if command -v pg_ctlcluster >/dev/null && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "ferqueue: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
if command -v rabbitmq-server >/dev/null && ! rabbitmqctl -q status >/dev/null 2>&1; then
  echo "ferqueue: starting RabbitMQ" >&2
  rabbitmq-server -detached >/dev/null 2>&1 || true
  rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1 || true
fi
for _ in $(seq 1 60); do
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null \
    && { ! command -v rabbitmqctl >/dev/null || rabbitmqctl -q status >/dev/null 2>&1; } && exit 0
  sleep 1
done
echo "ferqueue: Redis, PostgreSQL or RabbitMQ is not reachable; tests that need them will skip (or fail under FERQUEUE_REQUIRE_SERVICES=1)" >&2

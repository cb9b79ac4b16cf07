#!/usr/bin/env bash
# Starts the local services the integration tests use when one is down (this kind of machine
# has them installed; a laptop without them still runs `make demo`, which needs none).
set -uo pipefail
status=0
up() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
wait_up() { for _ in $(seq 1 60); do up "$1" && return 0; sleep 0.5; done; echo "services: $2 still down on :$1" >&2; status=1; }
if ! up 3306; then
  echo "services: starting MariaDB" >&2
  install -d -o mysql -g mysql /run/mysqld 2>/dev/null || mkdir -p /run/mysqld
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_up 3306 MariaDB
fi
if ! up 6379; then
  echo "services: starting Redis" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_up 6379 Redis
fi
# Prometheus, Alertmanager and Pushgateway for the alert tests (tests/support/prometheus.py starts
# them on free loopback ports; installing them starts no daemon here); chromium for the report test.
missing=()
for pkg in prometheus prometheus-alertmanager prometheus-pushgateway chromium; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "services: installing ${missing[*]}" >&2
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >&2; then
    echo "services: could not install ${missing[*]}" >&2
    status=1
  fi
fi
exit $status

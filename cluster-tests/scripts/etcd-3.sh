#!/usr/bin/env bash
# A 3-member etcd cluster on loopback, for side-by-side benchmarks with shoal-bench:
#   cluster-tests/scripts/etcd-3.sh start DIR   # prints the client endpoints
#   shoal-bench etcd-put --clients 64 --endpoints "$(cat DIR/endpoints)"
#   cluster-tests/scripts/etcd-3.sh stop DIR
# Needs Debian's etcd-server (apt-get install etcd-server). Ports 23790-23792 (clients) and
# 23800-23802 (peers).
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?directory}
case "$cmd" in
start)
  command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 2; }
  mkdir -p "$dir"
  cluster="e1=http://127.0.0.1:23800,e2=http://127.0.0.1:23801,e3=http://127.0.0.1:23802"
  endpoints=""
  for i in 0 1 2; do
    name="e$((i + 1))"
    client="http://127.0.0.1:2379$i"
    peer="http://127.0.0.1:2380$i"
    etcd --name "$name" --data-dir "$dir/$name" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token shoal-bench \
      --log-level error >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
    endpoints="${endpoints:+$endpoints,}$client"
  done
  echo "$endpoints" >"$dir/endpoints"
  for _ in $(seq 1 100); do
    if curl -sf -XPOST "http://127.0.0.1:23790/v3/kv/put" -d '{"key":"cmVhZHk=","value":"MQ=="}' >/dev/null; then
      echo "$endpoints"
      exit 0
    fi
    sleep 0.1
  done
  echo "etcd did not become ready; see $dir/*.log" >&2
  exit 1
  ;;
stop)
  for f in "$dir"/e*.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac

#!/usr/bin/env bash
# Drive parley's TURN relay and Debian's coturn with coturn's own load tool,
# turnutils_uclient, with the same parameters, on 127.0.0.1 only, and print
# a markdown table: relay CPU (utime+stime from /proc/PID/stat over the
# uclient run), loss and round-trip time as uclient reports them.
#
#   interop/bench_relay.sh PARLEY_BINARY [STREAMS...]   (default 50 200 500)
#
# Needs: coturn (turnserver, turnutils_uclient, turnutils_peer) and a parley
# binary with the relay command. Every process it starts is stopped on exit.
set -euo pipefail

parley=${1:?usage: $0 PARLEY_BINARY [STREAMS...]}
shift
if [ $# -gt 0 ]; then streams=("$@"); else streams=(50 200 500); fi
msgs=${MSGS:-500}  # per stream: 500 x 20 ms = 10 s
len=${LEN:-120}    # Opus-sized payload
secret=bench-secret-0123456789abcdef
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

cat >"$dir/coturn.conf" <<EOF
listening-ip=127.0.0.1
listening-port=3478
relay-ip=127.0.0.1
min-port=44000
max-port=44999
realm=parley
use-auth-secret
static-auth-secret=$secret
allow-loopback-peers
allowed-peer-ip=127.0.0.1
no-multicast-peers
no-tls
no-dtls
no-cli
no-rfc5780
no-stun-backward-compatibility
fingerprint
userdb=$dir/turndb
pidfile=$dir/turnserver.pid
log-file=$dir/coturn.log
simple-log
no-stdout-log
EOF

turnutils_peer -L 127.0.0.1 -p 3480 >"$dir/peer.log" 2>&1 &
pids+=($!)
turnserver -c "$dir/coturn.conf" >/dev/null 2>&1 &
pids+=($!)
coturn_pid=$!
PARLEY_HOME="$dir/home" PARLEY_RELAY_SECRET=$secret "$parley" relay \
  --relay-ip 127.0.0.1 --listen-udp 127.0.0.1:3479 --listen-tcp 127.0.0.1:3479 \
  --libp2p-listen /ip4/127.0.0.1/tcp/4111 --allow-cidr 127.0.0.0/8 --ports 45000-45999 \
  --max-allocations -1 --user-quota -1 --ip-quota -1 >"$dir/parley.log" 2>&1 &
pids+=($!)
parley_pid=$!
sleep 2

tck=$(getconf CLK_TCK)
cpu_ms() { awk -v t="$tck" '{print ($14+$15)*1000/t}' "/proc/$1/stat"; }

echo "| server | streams | relayed pkts | wall s | server CPU s | server %CPU/stream | server µs/pkt | lost | avg RTT ms | uclient CPU s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for m in "${streams[@]}"; do
  for srv in coturn:3478:$coturn_pid parley:3479:$parley_pid; do
    IFS=: read -r name port pid <<<"$srv"
    c0=$(cpu_ms "$pid")
    t0=$(date +%s.%N)
    out=$( { /usr/bin/time -f "UCPU %U %S" timeout 300 turnutils_uclient -W "$secret" -u bench \
      -m "$m" -n "$msgs" -l "$len" -z 20 -c -X -e 127.0.0.1 -r 3480 -p "$port" 127.0.0.1; } 2>&1 || true)
    t1=$(date +%s.%N)
    c1=$(cpu_ms "$pid")
    lost=$(grep -o 'Total lost packets [0-9]* ([0-9.]*%)' <<<"$out" | tail -1 | sed 's/Total lost packets //')
    rtt=$(grep -o 'Average round trip delay [0-9.]*' <<<"$out" | tail -1 | awk '{print $5}')
    ucpu=$(grep -o 'UCPU [0-9.]* [0-9.]*' <<<"$out" | awk '{print $2+$3}')
    awk -v n="$name" -v m="$m" -v msgs="$msgs" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" \
      -v lost="$lost" -v rtt="$rtt" -v ucpu="$ucpu" 'BEGIN {
        pk = 2 * m * msgs; wall = t1 - t0; cpu = (c1 - c0) / 1000
        printf "| %s | %d | %d | %.1f | %.2f | %.3f | %.1f | %s | %s | %s |\n", n, m, pk, wall, cpu, 100 * cpu / wall / m, 1e6 * cpu / pk, lost, rtt, ucpu }'
    sleep 1
  done
done

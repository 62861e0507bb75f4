#!/usr/bin/env bash
# Drive parley's TURN relay and Debian's coturn with coturn's own load tool,
# turnutils_uclient, with the same parameters, and print a markdown table
# per run. Clients reach both servers on 127.0.0.1; the UDP echo peer runs
# in a network namespace this script creates (veth pair, 198.18.77.1 on
# the host side and 198.18.77.2 inside, RFC 2544's benchmarking range),
# because parley's relay never sends to any port of the host's own
# addresses. Needs root for the namespace.
#
#   interop/bench_relay.sh PARLEY_BINARY [STREAMS...]   (default 50 200 500)
#   MSGS=1000 LEN=120 interop/bench_relay.sh ...        (messages per stream, bytes)
#
# Each uclient session allocates on the server, binds a channel to a UDP
# echo peer (turnutils_peer on 198.18.77.2:3480) and sends LEN-byte messages
# every 20 ms; the peer echoes them, so the server relays two datagrams per
# message. uclient starts and ends its sessions staggered, so the steady
# figures use only the seconds in which uclient's send rate (from its
# once-a-second progress lines) is at least 90% of its peak: server CPU
# (utime+stime from /proc/PID/stat, sampled every 0.5 s) and the messages
# uclient reports sent plus received in that window. Whole-run CPU and the
# datagrams on the link to the echo peer (both ways: each one is a
# datagram the server relayed, whatever uclient loses later) are reported
# too; on a loaded host, where uclient's rate is never steady, the
# whole-run µs/pkt is the figure to compare. Relay port ranges hold 10000 ports each: at
# 500 sessions a 1000-port range runs out (508). Needs coturn (turnserver,
# turnutils_uclient, turnutils_peer) and a parley binary with the relay
# command; every process it starts is stopped on exit (KEEP=1 keeps the
# logs).
set -euo pipefail

parley=${1:?usage: $0 PARLEY_BINARY [STREAMS...]}
shift
if [ $# -gt 0 ]; then streams=("$@"); else streams=(50 200 500); fi
msgs=${MSGS:-1000} # per stream: 1000 x 20 ms = 20 s
len=${LEN:-120}    # Opus-sized payload
secret=bench-secret-0123456789abcdef
dir=$(mktemp -d)
pids=()
ns=pbench$$
host_ip=198.18.77.1
peer_ip=198.18.77.2
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "logs in $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap "exit 1" INT TERM

if [ "$(id -u)" != 0 ]; then echo "$0: needs root (network namespace for the echo peer)" >&2; exit 1; fi
ip netns add "$ns"
ip link add "pbh$$" type veth peer name "pbn$$" netns "$ns"
ip addr add "$host_ip/24" dev "pbh$$"
ip link set "pbh$$" up
ip -n "$ns" addr add "$peer_ip/24" dev "pbn$$"
ip -n "$ns" link set "pbn$$" up
ip -n "$ns" link set lo up

cat >"$dir/coturn.conf" <<EOF
listening-ip=127.0.0.1
listening-port=3478
relay-ip=$host_ip
min-port=40000
max-port=49999
realm=parley
use-auth-secret
static-auth-secret=$secret
allowed-peer-ip=$peer_ip
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

ip netns exec "$ns" turnutils_peer -L "$peer_ip" -p 3480 >"$dir/peer.log" 2>&1 &
pids+=($!)
turnserver -c "$dir/coturn.conf" >/dev/null 2>&1 &
pids+=($!)
coturn_pid=$!
PARLEY_HOME="$dir/home" PARLEY_RELAY_SECRET=$secret "$parley" relay \
  --relay-ip "$host_ip" --listen-udp 127.0.0.1:3479 --listen-tcp 127.0.0.1:3479 \
  --libp2p-listen /ip4/127.0.0.1/tcp/4111 --allow-cidr "$peer_ip/32" --ports 50000-59999 \
  --max-allocations -1 --user-quota -1 --ip-quota -1 >"$dir/parley.log" 2>&1 &
pids+=($!)
parley_pid=$!
sleep 2

tck=$(getconf CLK_TCK)
cpu_ms() { awk -v t="$tck" '{print ($14+$15)*1000/t}' "/proc/$1/stat"; }
# Datagrams on the link to the echo peer, both ways: each is one datagram
# the server relayed (to the peer, or from it toward a client), whatever
# uclient loses later, so they count the server's work even on a loaded
# host.
link_pkts() { echo $(($(cat "/sys/class/net/pbh$$/statistics/tx_packets") + $(cat "/sys/class/net/pbh$$/statistics/rx_packets"))); }

echo "| server | streams | msgs/stream | peak msgs/s (steady window) | steady relayed pkts/s | steady server %CPU | steady %CPU/stream | steady µs/pkt | whole-run server CPU s | whole-run relayed pkts | whole-run µs/pkt | lost | avg RTT ms | uclient CPU s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for m in "${streams[@]}"; do
  for srv in coturn:3478:$coturn_pid parley:3479:$parley_pid; do
    IFS=: read -r name port pid <<<"$srv"
    log="$dir/uclient-$name-$m.log"
    samples="$dir/cpu-$name-$m.txt"
    (while kill -0 "$pid" 2>/dev/null; do echo "$(date +%s.%N) $(cpu_ms "$pid") $(link_pkts)"; sleep 0.5; done) >"$samples" &
    sampler=$!
    c0=$(cpu_ms "$pid")
    v0=$(link_pkts)
    { /usr/bin/time -f "UCPU %U %S" timeout 600 turnutils_uclient -W "$secret" -u bench \
      -m "$m" -n "$msgs" -l "$len" -z 20 -c -X -e "$peer_ip" -r 3480 -p "$port" 127.0.0.1 2>&1 || true; } |
      while IFS= read -r line; do echo "$(date +%s.%N) $line"; done >"$log"
    c1=$(cpu_ms "$pid")
    v1=$(link_pkts)
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    awk -v n="$name" -v m="$m" -v msgs="$msgs" -v c0="$c0" -v c1="$c1" -v vp=$((v1 - v0)) '
      FNR == NR { st[++ns] = $1; sc[ns] = $2; sv[ns] = $3; next }   # samples: time cpu_ms link_pkts
      /start_mclient: msz=/ {
        s = $0; sub(/.*tot_send_msgs=/, "", s); sub(/,.*/, "", s)
        r = $0; sub(/.*tot_recv_msgs=/, "", r); sub(/,.*/, "", r)
        lt[++nl] = $1; ls[nl] = s + 0; lr[nl] = r + 0
      }
      /Total lost packets/ { lost = $0; sub(/.*Total lost packets /, "", lost); sub(/, total.*/, "", lost) }
      /Average round trip delay/ { rtt = $0; sub(/.*delay /, "", rtt); sub(/ ms.*/, "", rtt) }
      /UCPU/ { ucpu = $3 + $4 }
      function cpuat(t,   i) { for (i = 1; i <= ns; i++) if (st[i] >= t) return sc[i]; return sc[ns] }
      function linkat(t,   i) { for (i = 1; i <= ns; i++) if (st[i] >= t) return sv[i]; return sv[ns] }
      END {
        # The steady window: the one-second intervals sending at least 90%
        # of the peak rate (sessions start and stop staggered).
        peak = 0
        for (i = 2; i <= nl; i++) { rate[i] = (ls[i] - ls[i-1]) / (lt[i] - lt[i-1]); if (rate[i] > peak) peak = rate[i] }
        a = 0; b = 0
        for (i = 2; i <= nl; i++) if (rate[i] >= 0.9 * peak) { if (!a) a = i - 1; b = i }
        w = lt[b] - lt[a]; pk = (ls[b] - ls[a]) + (lr[b] - lr[a]); cpu = (cpuat(lt[b]) - cpuat(lt[a])) / 1000
        whole = sprintf("%.2f | %d | %.1f", (c1 - c0) / 1000, vp, vp > 0 ? (c1 - c0) * 1000 / vp : 0)
        if (!a || w <= 0 || pk <= 0) { printf "| %s | %d | %d | no steady window | | | | | %s | %s | %s | %s |\n", n, m, msgs, whole, lost, rtt, ucpu; exit }
        printf "| %s | %d | %d | %.0f (%.0fs) | %.0f | %.1f | %.3f | %.1f | %s | %s | %s | %.2f |\n",
          n, m, msgs, peak, w, pk / w, 100 * cpu / w, 100 * cpu / w / m, 1e6 * cpu / pk, whole, lost, rtt, ucpu
      }' "$samples" "$log"
    sleep 2
  done
done

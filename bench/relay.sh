#!/usr/bin/env bash
# Relay throughput, Postern and Postfix side by side, same run.
#
#   bench/relay.sh [--destinations D] [MESSAGES] [SESSIONS] [SIZE]   (default 1, 5000 20 4096)
#
# Each system (a fresh instance on 127.0.0.1) takes MESSAGES messages of SIZE
# bytes from Postfix's load generator smtp-source over SESSIONS concurrent
# sessions (one message per connection, as bench/throughput.sh) and relays
# them with its smtp client to Postfix's smtp-sink:
#   D = 1   one destination, relayhost = [127.0.0.1]:PORT, recipient bench@dest.test
#   D > 1   dest1.test ... destD.test, each with its own smtp-sink port, routed by
#           transport_maps = hash:... (dest_i.test smtp:[127.0.0.1]:PORT_i; Postfix
#           needs postmap, Postern reads the text). Messages are spread round-robin
#           in chunks of CHUNK (default 10): chunk c goes to dest(c mod D + 1) and
#           SESSIONS workers each run one `smtp-source -s 1 -m CHUNK` at a time,
#           taking the chunks in order, so all destinations are fed all along.
# Both systems keep their defaults for the smtp client (Postfix: smtp(8) with
# its connection cache on demand, initial_destination_concurrency 5 growing to
# default_destination_concurrency_limit 20); no chroot for either.
# Reported per system:
#   relayed     messages counted by the smtp-sink(s) (`smtp-sink -c` counter)
#   msgs/s      relayed / time from smtp-source's start until the sink(s) got the
#               last message (per destination: the mtime of its counter file
#               when it reached its count)
#   cpu/msg     user+system CPU seconds of the system's whole process tree (every
#               process under its master: utime+stime of the live ones plus
#               cutime+cstime of the reaped ones, /proc/PID/stat), from just before
#               smtp-source starts until 1 s after the last message was relayed,
#               divided by the messages; smtp-source and smtp-sink are not counted
#   peak PSS    summed PSS of the process tree, sampled every 100 ms
#   (D > 1)     last-delivery time of each destination: min / median / max
#   log         status=sent/deferred/bounced lines and warning/error/fatal/panic
#               lines in the system's log; files left in its queue afterwards
# and a final line
#   ratio postern/postfix: relayed X.XXx  cpu/msg X.XXx  memory X.XXx
# (relayed: msgs/s ratio, above 1 = Postern faster; cpu/msg and memory: above
# 1 = Postern uses more).
# Needs root (Postfix), Debian's postfix package (also gives smtp-source and
# smtp-sink), and a release build (the script builds it; NO_BUILD=1 skips).
# Bounded: starting a system waits at most 30 s, sending at most 300 s, the
# relaying after the sending ended at most 300 s (and gives up after STALL,
# default 60, seconds without progress). KEEP=1 keeps the scratch directory.
set -euo pipefail

D=1
if [ "${1:-}" = "--destinations" ]; then D=${2:?--destinations needs a number}; shift 2; fi
N=${1:-5000}
S=${2:-20}
SIZE=${3:-4096}
CHUNK=${CHUNK:-10}
STALL=${STALL:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$D$N$S$SIZE$CHUNK" in *[!0-9]*) echo "usage: $0 [--destinations D] [MESSAGES] [SESSIONS] [SIZE]" >&2; exit 2;; esac
[ "$D" -ge 1 ] || { echo "--destinations must be at least 1" >&2; exit 2; }

if [ "$(id -u)" != 0 ]; then echo "run as root (Postfix needs it)" >&2; exit 1; fi
if ! command -v smtp-source >/dev/null || ! command -v smtp-sink >/dev/null || ! command -v postfix >/dev/null; then
    echo "installing Debian's postfix (for postfix, smtp-source and smtp-sink)" >&2
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi
# The binaries only: the test-harness crate (postern-tests) is not needed here.
[ -n "${NO_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --workspace --exclude postern-tests -q)
BIN="$ROOT/target/release"

WORK=$(mktemp -d /var/tmp/postern-relay.XXXXXX)
POSTERN_PID=""
POSTFIX_UP=""
SINK_PIDS=()
cleanup() {
    set +e
    [ -n "$POSTERN_PID" ] && kill "$POSTERN_PID" 2>/dev/null && wait "$POSTERN_PID" 2>/dev/null
    [ -n "$POSTFIX_UP" ] && postfix -c "$WORK/postfix-etc" stop >/dev/null 2>&1
    stop_sinks
    sleep 1
    [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 300); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    echo "nothing listens on 127.0.0.1:$1 after 30 s" >&2; return 1
}

# start_sinks NAME: D smtp-sinks, one per destination; writes $WORK/NAME.sinks
# ("index port counterfile" lines).
start_sinks() {
    local name=$1 i port
    : > "$WORK/$name.sinks"
    for i in $(seq "$D"); do
        port=$(free_port)
        smtp-sink -4 -c -u nobody "127.0.0.1:$port" 256 > "$WORK/$name.sink$i.count" 2> "$WORK/$name.sink$i.err" &
        SINK_PIDS+=($!)
        echo "$i $port $WORK/$name.sink$i.count" >> "$WORK/$name.sinks"
    done
    while read -r i port _; do wait_port "$port"; done < "$WORK/$name.sinks"
}
stop_sinks() {
    local p
    for p in "${SINK_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    SINK_PIDS=()
}
sink_port() { awk -v i="$2" '$1 == i {print $2}' "$WORK/$1.sinks"; }
rcpt_domain() { if [ "$D" = 1 ]; then echo dest.test; else echo "dest$1.test"; fi; }
write_transport() {   # write_transport NAME FILE
    : > "$2"
    local i
    for i in $(seq "$D"); do echo "dest$i.test smtp:[127.0.0.1]:$(sink_port "$1" "$i")" >> "$2"; done
}

# The measuring side: runs the load, watches the sinks' counters, samples
# PSS, reads the CPU of the process tree. Writes one JSON line.
cat > "$WORK/monitor.py" <<'EOF'
import json, os, queue, re, subprocess, sys, threading, time

root, port, sinks_file, out, log = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
N, S, SIZE, D, CHUNK, STALL = (int(os.environ[k]) for k in ("N", "S", "SIZE", "D", "CHUNK", "STALL"))
TICK = os.sysconf("SC_CLK_TCK")

def procs():
    """pid -> (ppid, own cpu ticks + reaped children's cpu ticks)"""
    r = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            s = open(f"/proc/{p}/stat").read()
        except OSError:
            continue
        f = s[s.rindex(")") + 2:].split()
        r[int(p)] = (int(f[1]), int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]))
    return r

def tree(ps):
    kids = {}
    for p, (pp, _) in ps.items():
        kids.setdefault(pp, []).append(p)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in ps:
            out.append(p)
            todo.extend(kids.get(p, []))
    return out

def cpu():
    ps = procs()
    return sum(ps[p][1] for p in tree(ps)) / TICK

def pss():
    total = 0
    for p in tree(procs()):
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
    return total

sinks = []  # [index, counter file, expected]
for line in open(sinks_file):
    i, _, path = line.split()
    sinks.append([int(i), path, 0])
# The load: chunk c -> destination c mod D (D = 1: one smtp-source with S sessions).
if D == 1:
    chunks = [(0, N, S)]
else:
    chunks = [(c % D, min(CHUNK, N - c * CHUNK), 1) for c in range((N + CHUNK - 1) // CHUNK)]
for d, n, _ in chunks:
    sinks[d][2] += n
work = queue.Queue()
for c in chunks:
    work.put(c)
failures = []
logf = open(log, "a")

def domain(d):
    return "dest.test" if D == 1 else f"dest{d + 1}.test"

def worker():
    while True:
        try:
            d, n, s = work.get_nowait()
        except queue.Empty:
            return
        left = 300 - (time.time() - t0)
        if left <= 0:
            failures.append(f"not sent (300 s): {n} to {domain(d)}")
            continue
        cmd = ["smtp-source", "-s", str(s), "-m", str(n), "-l", str(SIZE), "-f", "sender@remote.example",
               "-t", f"bench@{domain(d)}", f"127.0.0.1:{port}"]
        try:
            rc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=left).returncode
            if rc != 0:
                failures.append(f"smtp-source exit {rc}: {n} to {domain(d)}")
        except subprocess.TimeoutExpired:
            failures.append(f"smtp-source killed (300 s): {n} to {domain(d)}")

files = [open(path, "rb") for _, path, _ in sinks]
count_re = re.compile(rb"mesg=(\d+)\r")

def count(k):
    f = files[k]
    size = os.fstat(f.fileno()).st_size
    f.seek(max(0, size - 120))
    m = count_re.findall(f.read())
    return int(m[-1]) if m else 0

cpu0 = cpu()
t0 = time.time()
threads = [threading.Thread(target=worker) for _ in range(1 if D == 1 else S)]
for t in threads:
    t.start()
done = [None] * len(sinks)
got = [0] * len(sinks)
peak = pss()
last_progress = t0
load_end = None
stop_reason = "all relayed"
it = 0
while True:
    now = time.time()
    for k, (_, path, expected) in enumerate(sinks):
        if done[k] is not None:
            continue
        c = count(k)
        if c != got[k]:
            got[k] = c
            last_progress = now
        if c >= expected:
            done[k] = os.stat(path).st_mtime_ns / 1e9
    if all(x is not None for x in done):
        break
    if load_end is None and not any(t.is_alive() for t in threads):
        load_end = now
    if load_end is not None and now - load_end > 300:
        stop_reason = "gave up: 300 s after the sending ended"
        break
    if load_end is not None and now - last_progress > STALL:
        stop_reason = f"gave up: no progress for {STALL} s"
        break
    if it % 5 == 0:
        peak = max(peak, pss())
    it += 1
    time.sleep(0.02)
if load_end is None:
    for t in threads:
        t.join()
    load_end = time.time()
t_end = max(x for x in done if x is not None) if any(x is not None for x in done) else last_progress
if stop_reason != "all relayed":
    t_end = last_progress
time.sleep(1)
peak = max(peak, pss())
cpu1 = cpu()
got = [count(k) for k in range(len(sinks))]
json.dump({"n": N, "got": sum(got), "t_load": load_end - t0, "t_end": t_end - t0, "cpu": cpu1 - cpu0,
           "pss": peak, "done": [None if x is None else x - t0 for x in done], "stop": stop_reason,
           "failures": failures, "short": [f"{domain(k)}: {got[k]}/{sinks[k][2]}" for k in range(len(sinks))
                                           if got[k] < sinks[k][2]]}, open(out, "w"))
EOF

# report NAME LOG QUEUE_DIR: per-system lines from the monitor's JSON and the logs.
report() {
    local name=$1 log=$2 qdir=$3
    local sent deferred bounced warn left
    sent=$(grep -c 'status=sent' "$log" 2>/dev/null || true)
    deferred=$(grep -c 'status=deferred' "$log" 2>/dev/null || true)
    bounced=$(grep -c 'status=bounced' "$log" 2>/dev/null || true)
    warn=$(grep -Eic 'warning|error|fatal|panic' "$log" 2>/dev/null || true)
    left=$(find "$qdir"/incoming "$qdir"/active "$qdir"/deferred "$qdir"/hold -type f 2>/dev/null | wc -l)
    python3 - "$name" "$WORK/$name.json" "${sent:-0}" "${deferred:-0}" "${bounced:-0}" "${warn:-0}" "$left" <<'EOF'
import json, statistics, sys
name, path, sent, deferred, bounced, warn, left = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
r = json.load(open(path))
n, got = r["n"], r["got"]
rate = got / r["t_end"] if r["t_end"] > 0 else 0
print(f"{name:8s} relayed {got}/{n}  msgs/s {rate:7.1f}  (sent by {r['t_load']:.2f} s, last relayed {r['t_end']:.2f} s)  "
      f"cpu/msg {r['cpu'] / max(got, 1):.6f} s (cpu {r['cpu']:.2f} s)  peak PSS {r['pss'] / 1024:.0f} MiB")
done = [x for x in r["done"] if x is not None]
if len(r["done"]) > 1:
    if done:
        print(f"{'':8s} {len(r['done'])} destinations, {len(done)} complete: last delivery "
              f"min {min(done):.2f} s  median {statistics.median(done):.2f} s  max {max(done):.2f} s")
    else:
        print(f"{'':8s} {len(r['done'])} destinations, none complete")
print(f"{'':8s} log: {sent} sent, {deferred} deferred, {bounced} bounced, {warn} warning/error lines; "
      f"queue left: {left} files; {r['stop']}")
for f in r["failures"][:5] + r["short"][:10]:
    print(f"{'':8s}   {f}")
json.dump({"rate": rate, "cpumsg": r["cpu"] / max(got, 1), "pss": r["pss"]}, open(path + ".sum", "w"))
EOF
    if [ "${warn:-0}" -gt 0 ]; then
        grep -Ei 'warning|error|fatal|panic' "$log" | sed -E 's/^.*(postern|postfix)\/([a-z0-9-]+)\[[0-9]+\]: /  \1\/\2: /; s/[0-9A-F]{10,}/ID/g' \
            | sort | uniq -c | sort -rn | head -5 | sed 's/^/         /'
    fi
}

# monitor NAME PORT ROOTPID
monitor() {
    N=$N S=$S SIZE=$SIZE D=$D CHUNK=$CHUNK STALL=$STALL \
        python3 "$WORK/monitor.py" "$3" "$2" "$WORK/$1.sinks" "$WORK/$1.json" "$WORK/$1.source.log"
}

if [ "$D" = 1 ]; then
    echo "== $N messages of $SIZE bytes over $S sessions, relayed to one smtp-sink, $(nproc) cores =="
else
    echo "== $N messages of $SIZE bytes over $S sessions, relayed to $D destinations (smtp-sink each, round-robin in chunks of $CHUNK), $(nproc) cores =="
fi
echo "   postern $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'), $(postconf -d -h mail_version 2>/dev/null | sed 's/^/postfix /')"
chmod 755 "$WORK"

# ---- Postern ---------------------------------------------------------------
P="$WORK/postern"
mkdir -p "$P/mail" "$P/queue" "$P/data"
start_sinks postern
PPORT=$(free_port)
if [ "$D" = 1 ]; then
    ROUTE="relayhost = [127.0.0.1]:$(sink_port postern 1)"
else
    write_transport postern "$P/transport"
    ROUTE="transport_maps = hash:$P/transport"
fi
cat > "$P/main.cf" <<EOF
queue_directory = $P/queue
daemon_directory = $BIN
data_directory = $P/data
maillog_file = $P/maillog
myhostname = mail.example.test
mydomain = example.test
mydestination = \$myhostname, localhost
mynetworks = 127.0.0.0/8
inet_interfaces = loopback-only
alias_maps = hash:$P/aliases
users_file = $P/users
local_recipient_maps = \$alias_maps
virtual_mailbox_base = $P/mail
home_mailbox = Maildir/
$ROUTE
${POSTERN_EXTRA:-}
EOF
cat > "$P/master.cf" <<EOF
127.0.0.1:$PPORT inet n - n - - smtpd
cleanup unix - - n - 0 cleanup
qmgr unix - - n 300 1 qmgr
local unix - n n - - local
smtp unix - - n - - smtp
auth unix - - n - - auth
EOF
echo "postmaster: bench" > "$P/aliases"
echo "bench:{PLAIN}x::::::" > "$P/users"
chmod 755 "$P"
chown nobody "$P/mail"
"$BIN/postern" -c "$P" install >/dev/null
"$BIN/master" -c "$P" -f &
POSTERN_PID=$!
wait_port "$PPORT"
monitor postern "$PPORT" "$POSTERN_PID"
report postern "$P/maillog" "$P/queue"
kill "$POSTERN_PID"; wait "$POSTERN_PID" || true; POSTERN_PID=""
stop_sinks

# ---- Postfix ---------------------------------------------------------------
F="$WORK/postfix-etc"
mkdir -p "$F" "$WORK/postfix-spool" "$WORK/postfix-data"
chown postfix "$WORK/postfix-data"
cp /etc/postfix/master.cf "$F/master.cf" 2>/dev/null || cp /usr/share/postfix/master.cf.dist "$F/master.cf"
: > "$F/main.cf"
start_sinks postfix
FPORT=$(free_port)
postconf -c "$F" -e \
    "compatibility_level = 3.6" \
    "queue_directory = $WORK/postfix-spool" \
    "data_directory = $WORK/postfix-data" \
    "maillog_file = $WORK/postfix.log" \
    "myhostname = mail.example.test" \
    "mydomain = example.test" \
    "mydestination = \$myhostname, localhost" \
    "inet_interfaces = loopback-only" \
    "inet_protocols = ipv4" \
    "mynetworks = 127.0.0.0/8" \
    "alias_maps =" "alias_database =" \
    "smtpd_banner = \$myhostname ESMTP"
if [ "$D" = 1 ]; then
    postconf -c "$F" -e "relayhost = [127.0.0.1]:$(sink_port postfix 1)"
else
    write_transport postfix "$F/transport"
    postmap -c "$F" "hash:$F/transport"
    postconf -c "$F" -e "transport_maps = hash:$F/transport"
fi
# Same socket layout as Postern: no chroot, smtpd on our port, nothing on 25.
postconf -c "$F" -M# smtp/inet
postconf -c "$F" -M "127.0.0.1:$FPORT/inet = 127.0.0.1:$FPORT inet n - n - - smtpd"
postconf -c "$F" -F '*/*/chroot = n'
postfix -c "$F" check >/dev/null 2>&1 || true
POSTFIX_UP=1
postfix -c "$F" start >/dev/null 2>&1
wait_port "$FPORT"
monitor postfix "$FPORT" "$(tr -d ' ' < "$WORK/postfix-spool/pid/master.pid")"
report postfix "$WORK/postfix.log" "$WORK/postfix-spool"
postfix -c "$F" stop >/dev/null 2>&1 || true
POSTFIX_UP=""
stop_sinks

python3 - "$WORK/postern.json.sum" "$WORK/postfix.json.sum" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
div = lambda x, y: x / y if y else float("nan")
print(f"ratio postern/postfix: relayed {div(a['rate'], b['rate']):.2f}x  cpu/msg {div(a['cpumsg'], b['cpumsg']):.2f}x  "
      f"memory {div(a['pss'], b['pss']):.2f}x")
EOF

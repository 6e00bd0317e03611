#!/usr/bin/env bash
# Accept-and-deliver throughput, Postern and Postfix side by side, same run.
#
#   bench/throughput.sh [MESSAGES] [SESSIONS] [SIZE]      (default 5000 20 4096)
#
# For each system: a fresh instance on 127.0.0.1, delivering to a Maildir
# under a scratch directory, both with their normal durability (queue file
# fsync'd before "250", Maildir file fsync'd before the recipient is done).
# Postfix's own load generator, smtp-source, sends MESSAGES messages of SIZE
# bytes over SESSIONS concurrent SMTP sessions. Reported per system:
#   accepted/s   messages / time until smtp-source finished
#   delivered/s  messages / time until the last one is in Maildir/new
#   peak PSS     memory of the system's process tree (shared pages split), sampled every 100 ms
# Needs root (Postfix), Debian's postfix package (also gives smtp-source),
# and a release build (the script builds it). Run by hand; bounded: each
# phase gives up after 300 s.
set -euo pipefail

N=${1:-5000}
S=${2:-20}
SIZE=${3:-4096}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [ "$(id -u)" != 0 ]; then echo "run as root (Postfix needs it)" >&2; exit 1; fi
if ! command -v smtp-source >/dev/null || ! command -v postfix >/dev/null; then
    echo "installing Debian's postfix (for postfix and smtp-source)" >&2
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi
(cd "$ROOT" && cargo build --release --workspace -q)
BIN="$ROOT/target/release"

WORK=$(mktemp -d /var/tmp/postern-bench.XXXXXX)
trap 'cleanup' EXIT
POSTERN_PID=""
cleanup() {
    [ -n "$POSTERN_PID" ] && kill "$POSTERN_PID" 2>/dev/null || true
    postfix -c "$WORK/postfix-etc" stop >/dev/null 2>&1 || true
    sleep 1
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

# Peak of the summed PSS (proportional set size, KiB: shared pages split
# between the processes sharing them, so the sum is real memory) of the
# process tree under pid $1, sampled every 100 ms until the file $2 exists.
peak_rss() {
    set +e
    local root=$1 stopfile=$2 peak=0 cur pids
    while [ ! -e "$stopfile" ]; do
        pids=$(ps -eo pid=,ppid= | awk -v root="$root" '
            { ppid[$1] = $2 }
            END { for (p in ppid) { q = p; while (q != "" && q != 0 && q != root) q = ppid[q];
                                    if (q == root) print p } }')
        cur=$( (for p in $pids; do cat /proc/$p/smaps_rollup 2>/dev/null; done) | awk '/^Pss:/ {s += $2} END {print s + 0}')
        [ "$cur" -gt "$peak" ] && peak=$cur
        sleep 0.1
    done
    echo "$peak"
}

count_new() { find "$1" -type f 2>/dev/null | wc -l; }

# run_load NAME PORT MAILDIR_NEW MASTER_PID
run_load() {
    local name=$1 port=$2 newdir=$3 rootpid=$4
    local stopfile="$WORK/$name.stop"
    peak_rss "$rootpid" "$stopfile" > "$WORK/$name.rss" &
    local sampler=$!
    local t0 t1 t2
    t0=$(now)
    timeout 300 smtp-source -s "$S" -m "$N" -l "$SIZE" -f sender@remote.example -t bench@example.test "127.0.0.1:$port"
    t1=$(now)
    local deadline=$((SECONDS + 300))
    while [ "$(count_new "$newdir")" -lt "$N" ] && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
    t2=$(now)
    touch "$stopfile"
    wait "$sampler" || true
    local got
    got=$(count_new "$newdir")
    python3 - "$name" "$N" "$got" "$t0" "$t1" "$t2" "$(cat "$WORK/$name.rss")" <<'EOF'
import sys
name, n, got, t0, t1, t2, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *map(float, sys.argv[4:7]), int(sys.argv[7])
print(f"{name:8s} delivered {got}/{n}  accepted/s {n/(t1-t0):7.0f}  delivered/s {got/(t2-t0):7.0f}  "
      f"(accept {t1-t0:.2f} s, deliver {t2-t0:.2f} s)  peak PSS {rss/1024:.0f} MiB")
EOF
    echo "$name $N $got $t0 $t1 $t2 $(cat "$WORK/$name.rss")" >> "$WORK/results"
}

echo "== $N messages of $SIZE bytes over $S sessions, $(nproc) cores =="

# ---- Postern ---------------------------------------------------------------
P="$WORK/postern"
mkdir -p "$P/mail" "$P/queue" "$P/data"
PPORT=$(free_port)
cat > "$P/main.cf" <<EOF
queue_directory = $P/queue
daemon_directory = $BIN
data_directory = $P/data
maillog_file = $P/maillog
myhostname = mail.example.test
mydomain = example.test
mydestination = \$mydomain, \$myhostname, localhost
mynetworks = 127.0.0.0/8
inet_interfaces = loopback-only
alias_maps = hash:$P/aliases
users_file = $P/users
local_recipient_maps = \$alias_maps
virtual_mailbox_base = $P/mail
home_mailbox = Maildir/
# Postfix's virtual agent (the one it is compared with) delivers up to 20 at
# a time to one domain; Postern's local defaults to Postfix's local limit of
# 2 per user, which is for mbox locking, not needed for Maildir.
local_destination_concurrency_limit = 20
${POSTERN_EXTRA:-}
EOF
cat > "$P/master.cf" <<EOF
127.0.0.1:$PPORT inet n - n - - smtpd
cleanup unix - - n - 0 cleanup
qmgr unix - - n 300 1 qmgr
local unix - n n - - local
auth unix - - n - - auth
EOF
echo "postmaster: bench" > "$P/aliases"
echo "bench:{PLAIN}x::::::" > "$P/users"
# Privilege separation as installed (Postfix runs separated too): the
# service users must reach the instance, and users_file users without a
# uid are delivered as default_privs (nobody).
chmod 755 "$WORK" "$P"
chown nobody "$P/mail"
"$BIN/postern" -c "$P" install >/dev/null
"$BIN/master" -c "$P" -f &
POSTERN_PID=$!
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$PPORT") 2>/dev/null && break; sleep 0.1; done
run_load postern "$PPORT" "$P/mail/bench/Maildir/new" "$POSTERN_PID"
kill "$POSTERN_PID"; wait "$POSTERN_PID" || true; POSTERN_PID=""

# ---- Postfix ---------------------------------------------------------------
F="$WORK/postfix-etc"
mkdir -p "$F" "$WORK/postfix-spool" "$WORK/postfix-data" "$WORK/pfmail"
cp /etc/postfix/master.cf "$F/master.cf" 2>/dev/null || cp /usr/share/postfix/master.cf.dist "$F/master.cf"
: > "$F/main.cf"
FPORT=$(free_port)
chown postfix "$WORK/postfix-data"
chmod 755 "$WORK"
chown nobody "$WORK/pfmail"
echo "bench@example.test bench/Maildir/" > "$F/vmailbox"
postconf -c "$F" -e \
    "compatibility_level = 3.6" \
    "queue_directory = $WORK/postfix-spool" \
    "data_directory = $WORK/postfix-data" \
    "maillog_file = $WORK/postfix.log" \
    "myhostname = mail.example.test" \
    "mydomain = example.test" \
    "mydestination =" \
    "inet_interfaces = loopback-only" \
    "inet_protocols = ipv4" \
    "mynetworks = 127.0.0.0/8" \
    "virtual_mailbox_domains = example.test" \
    "virtual_mailbox_base = $WORK/pfmail" \
    "virtual_mailbox_maps = texthash:$F/vmailbox" \
    "virtual_uid_maps = static:$(id -u nobody)" \
    "virtual_gid_maps = static:$(id -g nobody)" \
    "alias_maps =" "alias_database =" \
    "smtpd_banner = \$myhostname ESMTP"
# Same socket layout for the test as Postern: no chroot, smtpd on our port.
postconf -c "$F" -M# smtp/inet
postconf -c "$F" -M "127.0.0.1:$FPORT/inet = 127.0.0.1:$FPORT inet n - n - - smtpd"
postconf -c "$F" -F '*/*/chroot = n'
postfix -c "$F" check >/dev/null 2>&1 || true
postfix -c "$F" start >/dev/null 2>&1
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$FPORT") 2>/dev/null && break; sleep 0.1; done
run_load postfix "$FPORT" "$WORK/pfmail/bench/Maildir/new" "$(tr -d ' ' < "$WORK/postfix-spool/pid/master.pid")"
postfix -c "$F" stop >/dev/null 2>&1 || true

python3 - "$WORK/results" <<'EOF'
import sys
r = {}
for line in open(sys.argv[1]):
    name, n, got, t0, t1, t2, rss = line.split()
    n, got, t0, t1, t2 = int(n), int(got), float(t0), float(t1), float(t2)
    r[name] = (n / (t1 - t0), got / (t2 - t0), int(rss))
if "postern" in r and "postfix" in r:
    a, b = r["postern"], r["postfix"]
    print(f"ratio postern/postfix: accepted {a[0]/b[0]:.2f}x  delivered {a[1]/b[1]:.2f}x  memory {a[2]/max(b[2],1):.2f}x")
EOF

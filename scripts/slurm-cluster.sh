#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for `python -m tlstudy slurm`, its tests, CI and a
# newcomer who wants to try the cluster route before reaching a real cluster:
#
#   sudo scripts/slurm-cluster.sh start    # install Debian's packages if missing, configure, start
#   scripts/slurm-cluster.sh status        # sinfo, and which daemons run
#   sudo scripts/slurm-cluster.sh stop
#
# Debian's slurmctld, slurmd, slurm-client and munge: a munge key, /etc/slurm/slurm.conf with
# this machine's CPUs and memory as one node (from `slurmd -C`), the daemons started directly
# (no systemd needed, so it works in a container), then it waits until the node is idle.
# Processes are tracked without cgroups (proctrack/linuxproc, task/none), so it runs wherever the
# kernel's cgroups are not ours to manage. CPUs are the consumable resource, not memory: a job that
# asks for no memory does not take the whole node. It never overwrites a slurm.conf that it did
# not write. Runs as root (munged and slurmd need it); it says what to run otherwise.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by tlstudy scripts/slurm-cluster.sh"
STATE=/var/lib/tlstudy-slurm
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "slurm-cluster: $*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    say "$1 needs root: run 'sudo $0 $2'"
    exit 1
  fi
}

install() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  if ! command -v apt-get >/dev/null; then
    say "missing ${missing[*]} and no apt-get: install Slurm and munge with your system's packages"
    exit 1
  fi
  say "installing ${missing[*]} from Debian's packages"
  apt-get update -q
  # policy-rc.d in containers refuses to start services at install time; we start them below.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

write_conf() {
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    say "$CONF exists and was not written by this script; not touching it (a cluster is already configured?)"
    exit 1
  fi
  local host node cpus mem
  host=$(hostname -s)
  # `slurmd -C` prints this machine as a node line: CPUs, sockets, cores, threads, RealMemory.
  node=$(slurmd -C | head -n 1)
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  mkdir -p "$(dirname "$CONF")" "$STATE"/{ctld,d,log}
  cat >"$CONF" <<EOF
$MARK
ClusterName=tlstudy
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# No accounting database: finished jobs stay in the controller's memory for a day, which is where
# \`python -m tlstudy slurm status\` reads their end states (with the jobs' own records).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=86400
KillWait=10
# A requeued (preempted) job waits out the credential lifetime before it starts again: 120 s by
# default, 20 s here, where a launch on the one node takes well under a second.
AuthInfo=cred_expire=20
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  say "wrote $CONF: one node $host, $cpus CPUs, $mem MB"
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if ! munge -n </dev/null >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
  fi
  munge -n </dev/null | unmunge >/dev/null
}

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  need_root start start
  install
  write_conf
  start_munge
  running "$STATE/slurmctld.pid" || /usr/sbin/slurmctld
  running "$STATE/slurmd.pid" || /usr/sbin/slurmd
  local host
  host=$(hostname -s)
  for _ in $(seq 1 60); do
    # A node left down by an earlier stop comes back with ReturnToService=2 once slurmd registers.
    if sinfo -h -n "$host" -o "%T" 2>/dev/null | grep -qx "idle\|mixed\|allocated"; then
      sinfo
      return
    fi
    sleep 1
  done
  say "the node did not come up in 60 s; logs: $STATE/log/"
  sinfo || true
  exit 1
}

stop() {
  need_root stop stop
  local pidfile pid
  for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid"; do
    if running "$pidfile"; then
      pid=$(cat "$pidfile")
      kill "$pid"
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
  done
  say "slurmd and slurmctld stopped (munged left running: other software may use it)"
}

status() {
  running "$STATE/slurmctld.pid" && say "slurmctld: running" || say "slurmctld: not running"
  running "$STATE/slurmd.pid" && say "slurmd: running" || say "slurmd: not running"
  sinfo
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac

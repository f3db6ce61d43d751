# Sourced by the nested cases (tests/nested/cases/*.sh), inside L1. Cases are small: source
# this, call boot_guest with kestrel's options, and declare the host-side expectations as
# `#@` lines (see tests/nested/README.md). Env from the L1 init: NESTED_CASE (case name),
# NESTED_INTERACTIVE=1 when the console is the user's terminal (tools/demo.sh).
KESTREL=${KESTREL:-/nested/bin/kestrel}
L2=/l2

# boot_guest [--timeout S] [--append "WORDS"] KESTREL-RUN-OPTIONS...
# Runs `kestrel run OPTIONS --cmdline "console=ttyS0 reboot=k panic=-1 kestrel.token=<unique> WORDS"`
# with the guest console on the L1 console, and prints:
#   NESTED-CMDLINE <the exact command line given>
#   NESTED-KESTREL-EXIT rc=<n> seconds=<kestrel run time> to_init_seconds=<kestrel start to the
#     guest's KESTREL-GUEST-INIT line reaching L1, or -1> (all L1 clock)
# Returns kestrel's exit code: 124 when the limit ended it (SIGTERM first, so kestrel logs
# how it stopped; SIGKILL 10 s later if that did not end it).
boot_guest() {
  local limit=240 append="" token t0 t1 tinit rc cmdline
  while :; do
    case $1 in
      --timeout) limit=$2; shift 2 ;;
      --append) append=$2; shift 2 ;;
      *) break ;;
    esac
  done
  token="kestrel.token=${NESTED_CASE:-case}-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  cmdline="console=ttyS0 reboot=k panic=-1 $token${append:+ $append}"
  # info level: kestrel logs the PCI slot of each device and the features the guest's
  # driver accepted, so the log shows what Linux negotiated, read from the device side.
  case " $* " in *" --log-level "*) ;; *) set -- "$@" --log-level info ;; esac
  echo "NESTED-CMDLINE $cmdline"
  echo "NESTED-KESTREL-RUN $KESTREL run $* --cmdline \"$cmdline\""
  rm -f /tmp/kestrel.rc /tmp/kestrel.t_init
  read -r t0 _ < /proc/uptime
  if [ "${NESTED_INTERACTIVE:-0}" = 1 ]; then
    timeout -k 10 "$limit" "$KESTREL" run "$@" --cmdline "$cmdline"
    echo $? > /tmp/kestrel.rc
  else
    # awk stamps the first KESTREL-GUEST-INIT line with L1's uptime as it passes through.
    { timeout -k 10 "$limit" "$KESTREL" run "$@" --cmdline "$cmdline" < /dev/null 2>&1
      echo $? > /tmp/kestrel.rc; } |
      awk '{ print; fflush() }
           /KESTREL-GUEST-INIT/ && !seen { seen = 1; system("cat /proc/uptime > /tmp/kestrel.t_init") }'
  fi
  read -r t1 _ < /proc/uptime
  rc=$(cat /tmp/kestrel.rc 2>/dev/null || echo 255)
  tinit=-1
  [ -s /tmp/kestrel.t_init ] && read -r tinit _ < /tmp/kestrel.t_init &&
    tinit=$(awk "BEGIN { printf \"%.2f\", $tinit - $t0 }")
  echo "NESTED-KESTREL-EXIT rc=$rc seconds=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") to_init_seconds=$tinit"
  return "$rc"
}

# nested_value KEY VALUE: a figure for the host-side `#@ expect-value` checks (L1 side; the
# guest prints KESTREL-VALUE lines, see tests/nested/guest-lib.sh). Keys: l1.* here, guest.*
# in the guest, so the two sides of a comparison are always distinct lines.
nested_value() {
  echo "NESTED-VALUE $1 $2"
}

# vsock_tell SOCKET PORT MESSAGE: through kestrel's hybrid vsock socket (`CONNECT PORT`), one
# line to a guest listener, retried once a second for up to a minute (a restored or migrated
# guest's kestrel may still be starting); prints what the attempts came to.
vsock_tell() {
  local i=0
  while [ "$i" -lt 60 ]; do
    i=$((i + 1))
    [ -S "$1" ] && printf 'CONNECT %s\n%s\n' "$2" "$3" | timeout 20 socat -t 5 - UNIX-CONNECT:"$1" > /tmp/vsock-tell 2>/dev/null &&
      head -n 1 /tmp/vsock-tell | grep -q '^OK ' && break
    sleep 1
  done
  echo "l1: vsock reply after $i attempt(s): $(head -n 1 /tmp/vsock-tell 2>/dev/null)"
  rm -f /tmp/vsock-tell
}

# nested_sha256 FILE: the hex digest alone.
nested_sha256() {
  sha256sum "$1" | cut -d' ' -f1
}

# nested_alloc_kb FILE: space FILE really occupies (allocated blocks, not its length), KiB.
nested_alloc_kb() {
  du -k "$1" | cut -f1
}

# start_containerd DIR: a containerd of the case's own, everything under DIR (root, state,
# sockets, containerd.log; the shims' logs in DIR/logs), without the CRI plugin. Sets $ctd
# to its pid and waits up to 60 s for DIR/containerd.sock.
start_containerd() {
  mkdir -p "$1/logs"
  cat > "$1/config.toml" <<TOML
version = 2
root = "$1/root"
state = "$1/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$1/containerd.sock"
[ttrpc]
  address = "$1/containerd.sock.ttrpc"
TOML
  KESTREL_SHIM_LOG_DIR=$1/logs containerd --config "$1/config.toml" > "$1/containerd.log" 2>&1 &
  ctd=$!
  local i=0
  while [ ! -S "$1/containerd.sock" ] && [ "$i" -lt 60 ]; do sleep 1; i=$((i + 1)); done
}

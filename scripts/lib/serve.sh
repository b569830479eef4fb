# Sourced by the benchmark scripts: start a server and read what it prints at start-up.
#
#   start_serve OUT [WRAPPER...] -- [SERVE ARGS...]
#     runs `[WRAPPER...] ${SIGHTLINE_BIN:-target/release/sightline} serve --listen
#     127.0.0.1:0 [SERVE ARGS...]` in the background with its stdout in OUT (stderr in
#     OUT.err), sets `pid`, and waits (up to `serve_wait` tenths of a second, 100 unless
#     set) until it has printed its dashboard line, the last of its start-up lines.
#   started OUT NAME
#     the value of a `NAME: value` start-up line (dsn, listening, syslog udp, …).

start_serve() {
  local out=$1 wrapper=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do wrapper+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  SIGHTLINE_LOG=warn "${wrapper[@]}" "${SIGHTLINE_BIN:-target/release/sightline}" serve \
    --listen 127.0.0.1:0 "$@" >"$out" 2>"$out.err" &
  pid=$!
  for _ in $(seq "${serve_wait:-100}"); do
    grep -q '^dashboard:' "$out" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "the server printed no dashboard line; its stderr:" >&2
  cat "$out.err" >&2
  return 1
}

started() {
  sed -n "s/^$2: //p" "$1" | head -n 1
}

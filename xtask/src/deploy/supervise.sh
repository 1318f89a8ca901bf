#!/bin/sh
# Keeps `scaler ROLE` running on a host without systemd. Installed by
# `cargo xtask deploy` as PREFIX/bin/scaler-supervise; started detached
# (setsid) with: scaler-supervise ROLE PREFIX
#
#   PREFIX/run/ROLE-supervisor.pid   this script
#   PREFIX/run/ROLE.pid              the scaler process it runs
#   PREFIX/log/ROLE.log              scaler's output and this script's notes
#                                    (moved to ROLE.log.1 past 10 MB)
#
# If scaler exits it is started again after 1 s, doubling up to 30 s while
# it keeps dying within 10 s of starting. SIGHUP restarts it at once (an
# upgrade); SIGTERM or SIGINT stops it (SIGKILL after 10 s) and exits.
set -u
role=$1
prefix=$2
bin=$prefix/bin/scaler
conf=$prefix/etc/$role.toml
pidfile=$prefix/run/$role.pid
suppid=$prefix/run/$role-supervisor.pid
log=$prefix/log/$role.log
child=
action=run
delay=1

note() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) scaler-supervise: $*" >>"$log"; }

# The state letter of process $1 (R, S, Z...), empty once it is gone.
state() { sed 's/^.*) //; s/ .*//' "/proc/$1/stat" 2>/dev/null; }

# SIGTERM to scaler, SIGKILL after 10 s; returns once it is reaped.
stop_child() {
    [ -n "$child" ] || return 0
    kill -TERM "$child" 2>/dev/null
    i=0
    while s=$(state "$child") && [ -n "$s" ] && [ "$s" != Z ]; do
        i=$((i + 1))
        if [ "$i" -eq 100 ]; then
            note "scaler $role ignored SIGTERM for 10 s; sending SIGKILL"
            kill -KILL "$child" 2>/dev/null
        fi
        sleep 0.1
    done
    wait "$child" 2>/dev/null
    child=
}

trap 'action=stop' TERM INT
trap 'action=restart' HUP

echo $$ >"$suppid.tmp" && mv -f "$suppid.tmp" "$suppid"
note "supervising scaler $role (pid $$)"
while [ "$action" != stop ]; do
    action=run
    if [ -f "$log" ] && [ "$(wc -c <"$log")" -gt 10485760 ]; then
        mv -f "$log" "$log.1"
    fi
    started=$(date +%s)
    "$bin" "$role" --config "$conf" </dev/null >>"$log" 2>&1 &
    child=$!
    echo "$child" >"$pidfile.tmp" && mv -f "$pidfile.tmp" "$pidfile"
    # A trapped signal interrupts `wait`; `action` then says which.
    [ "$action" = run ] && wait "$child"
    status=$?
    if [ "$action" = run ]; then
        child=
        ran=$(($(date +%s) - started))
        [ "$ran" -ge 10 ] && delay=1
        note "scaler $role exited with status $status after ${ran} s; starting it again in ${delay} s"
        sleep "$delay" &
        wait $!
        kill $! 2>/dev/null
        delay=$((delay * 2))
        [ "$delay" -gt 30 ] && delay=30
    else
        stop_child
        if [ "$action" = restart ]; then
            note "restart requested (SIGHUP)"
            delay=1
        fi
    fi
done
rm -f "$pidfile" "$suppid"
note "stopped"

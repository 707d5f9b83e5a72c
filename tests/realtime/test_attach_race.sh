#!/usr/bin/env bash
# Attach from start, from a serial, from {last: N} and live while a publisher races the attach:
# every subscriber sees each message exactly once, in order, from where it asked.
. "$(dirname "$0")/lib.sh"
spool_start
spool_node attach_race.js
spool_stop

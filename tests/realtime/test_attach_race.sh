#!/usr/bin/env bash
# Attach from start, from a serial, from {last: N} and live while a publisher races the attach:
# every subscriber sees each message exactly once, in order, from where it asked. Then a history
# far larger than the send buffer streams to three subscribers without overflowing it.
. "$(dirname "$0")/lib.sh"
spool_start
spool_node attach_race.js
spool_stop
# History larger than the send buffer: pages wait for the connection to drain.
spool_start --send-buffer-bytes 65536 --rate-per-connection 0
spool_node history_paging.js
spool_stop

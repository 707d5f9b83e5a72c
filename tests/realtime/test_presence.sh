#!/usr/bin/env bash
# Presence enter/update/leave, members at a serial, leave after --presence-timeout on a dropped
# connection unless resumed, immediate leave on a clean close.
. "$(dirname "$0")/lib.sh"
spool_start --presence-timeout 2s
spool_node presence.js
spool_stop

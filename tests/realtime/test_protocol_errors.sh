#!/usr/bin/env bash
# Bad input and limits on the realtime protocol: error frames, nacks, 401, close 1009/1007.
. "$(dirname "$0")/lib.sh"
spool_start --max-frame-bytes 4096 --max-message-bytes 200 --max-channels-per-connection 2 \
  --rate-per-connection 20 --max-publish-batch 5 --max-field-bytes 64 --api-keys 'reader:r3ad=*:subscribe'
spool_node protocol_errors.js
spool_stop

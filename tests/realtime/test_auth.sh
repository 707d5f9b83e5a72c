#!/usr/bin/env bash
# JWT auth on the realtime protocol: client id and capabilities from the token, expiry closes the
# connection, resume needs the same identity.
. "$(dirname "$0")/lib.sh"
spool_start --api-keys 'agent:s3cr3t' --heartbeat-interval 500ms
spool_node auth_jwt.js
spool_stop

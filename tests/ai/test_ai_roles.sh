#!/usr/bin/env bash
# Roles and capabilities with JWTs (tests/ai/ai_roles.js): presence roles, author-only edits
# unless edit-any, operator take-over.
. "$SPOOL_SOURCE/tests/realtime/lib.sh"
spool_start --api-keys 'k:s3cr3t'
spool_node "$SPOOL_SOURCE/tests/ai/ai_roles.js"
spool_stop

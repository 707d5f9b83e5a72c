/*
 * Channel names, as every client-facing protocol accepts them (REST paths, WebSocket and SSE
 * attach requests). One rule, one function, so no entry point can let through a name another
 * refuses.
 *
 * A valid name is 1..max bytes of ASCII letters, digits and "-_.:@/=+!~,;$&()[]". Not allowed:
 * spaces and control bytes (logs, headers), '*' and '?' (capability patterns are globs),
 * '%' and '#' (URLs), quotes and backslashes, and non-ASCII bytes. Names are case-sensitive.
 * In a REST path the name is one percent-decoded segment, so "a%2Fb" is the channel "a/b".
 */
#ifndef SPOOL_GATEWAY_CHANNEL_NAME_H
#define SPOOL_GATEWAY_CHANNEL_NAME_H

#include <stdbool.h>
#include <stddef.h>

/* True when name[0..len) is a valid channel name no longer than `max` bytes; otherwise false
 * and *why (if not NULL) is a short static reason for the error body. */
bool spool_channel_name_valid(const char *name, size_t len, size_t max, const char **why);

#endif

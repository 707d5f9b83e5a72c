/* Channel name validation (rule in gateway/channel_name.h). */
#include "gateway/channel_name.h"

#include <string.h>

static bool allowed(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return c != '\0' && strchr("-_.:@/=+!~,;$&()[]", c) != NULL;
}

bool spool_channel_name_valid(const char *name, size_t len, size_t max, const char **why)
{
    const char *reason = NULL;
    if (len == 0) reason = "channel name is empty";
    else if (len > max) reason = "channel name is too long";
    for (size_t i = 0; reason == NULL && i < len; i++)
        if (!allowed((unsigned char)name[i]))
            reason = "channel name may only contain letters, digits and -_.:@/=+!~,;$&()[]";
    if (why != NULL) *why = reason;
    return reason == NULL;
}

#include "cluster/placement.h"

uint32_t spool_slot_of(const char *channel, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)channel[i];
        h *= 0x100000001b3ULL;
    }
    return (uint32_t)(h % SPOOL_SLOTS);
}

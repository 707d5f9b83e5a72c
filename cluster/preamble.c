/*
 * Preamble encoding and the incremental, allocation-free parser; layout in cluster/preamble.h.
 */
#include "cluster/preamble.h"

#include <string.h>

static uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static int printable(uint8_t c) { return c > 0x20 && c < 0x7f; }

/* Fills `err` with "<what> <v>" and returns SPOOL_PREAMBLE_BAD. */
static int bad(struct spool_err *err, const char *what, unsigned long v)
{
    spool_err_set(err, SPOOL_ECORRUPT, "%s %lu", what, v);
    return SPOOL_PREAMBLE_BAD;
}

int spool_preamble_parse(const void *buf, size_t len, struct spool_preamble *out, size_t *size,
                         struct spool_err *err)
{
    const uint8_t *p = buf;
    /* Check each field as soon as its bytes are in, so garbage is refused early. */
    if (len >= 4 && get32(p) != SPOOL_PREAMBLE_MAGIC)
        return bad(err, "bad preamble magic", get32(p));
    if (len >= 5 && p[4] != SPOOL_PREAMBLE_VERSION)
        return bad(err, "unsupported preamble version", p[4]);
    if (len >= 6 && p[5] != SPOOL_PREAMBLE_RAFT && p[5] != SPOOL_PREAMBLE_RPC)
        return bad(err, "unknown preamble kind", p[5]);
    if (len >= 8 && get16(p + 6) != 0)
        return bad(err, "preamble reserved bytes set", 0);
    if (len < SPOOL_PREAMBLE_FIXED) {
        *size = SPOOL_PREAMBLE_FIXED;
        return SPOOL_PREAMBLE_MORE;
    }
    uint16_t alen = get16(p + 20);
    if (alen == 0 || alen > SPOOL_PREAMBLE_MAX_ADDRESS)
        return bad(err, "preamble address length out of range:", alen);
    if (get16(p + 22) != 0)
        return bad(err, "preamble reserved bytes set", 0);
    size_t total = SPOOL_PREAMBLE_FIXED + (size_t)alen;
    /* Validate the address bytes already here, even before all have arrived. */
    size_t avail = len < total ? len - SPOOL_PREAMBLE_FIXED : alen;
    for (size_t i = 0; i < avail; i++)
        if (!printable(p[SPOOL_PREAMBLE_FIXED + i]))
            return bad(err, "preamble address has a non-printable byte at", i);
    if (len < total) {
        *size = total;
        return SPOOL_PREAMBLE_MORE;
    }
    out->kind = p[5];
    out->group = get32(p + 8);
    out->id = get64(p + 12);
    memcpy(out->address, p + SPOOL_PREAMBLE_FIXED, alen);
    out->address[alen] = '\0';
    *size = total;
    return SPOOL_PREAMBLE_OK;
}

size_t spool_preamble_encode(const struct spool_preamble *p, void *buf)
{
    size_t alen = strnlen(p->address, sizeof p->address);
    if (alen == 0 || alen > SPOOL_PREAMBLE_MAX_ADDRESS) return 0;
    for (size_t i = 0; i < alen; i++)
        if (!printable((uint8_t)p->address[i])) return 0;
    uint8_t *b = buf;
    put32(b, SPOOL_PREAMBLE_MAGIC);
    b[4] = SPOOL_PREAMBLE_VERSION;
    b[5] = p->kind;
    put16(b + 6, 0);
    put32(b + 8, p->group);
    put64(b + 12, p->id);
    put16(b + 20, (uint16_t)alen);
    put16(b + 22, 0);
    memcpy(b + SPOOL_PREAMBLE_FIXED, p->address, alen);
    return SPOOL_PREAMBLE_FIXED + alen;
}

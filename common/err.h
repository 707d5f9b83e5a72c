/*
 * Errors are return codes with a message stored beside them (dqlite style): a function that can
 * fail takes a `struct spool_err *` and returns 0 or a SPOOL_E* code, filling the message so the
 * caller can log or return it without guessing what went wrong.
 */
#ifndef SPOOL_COMMON_ERR_H
#define SPOOL_COMMON_ERR_H

enum {
    SPOOL_OK = 0,
    SPOOL_EINVAL = 1,     /* bad argument or input */
    SPOOL_ENOENT = 2,     /* no such channel / entry / file */
    SPOOL_EIO = 3,        /* the operating system failed a read, write or sync */
    SPOOL_ECORRUPT = 4,   /* data on disk or on the wire failed a checksum or did not parse */
    SPOOL_ENOMEM = 5,
    SPOOL_ELIMIT = 6,     /* a configured limit was reached */
    SPOOL_ENOTLEADER = 7, /* this node does not lead the shard */
    SPOOL_EBUSY = 8,      /* try again later (election in progress, queue full) */
    SPOOL_ECLOSED = 9,    /* the object is closing */
    SPOOL_ECONFLICT = 10, /* the state changed under the request (stale epoch, bad sequence) */
    SPOOL_EDENIED = 11,   /* authentication or capability failure */
    SPOOL_ETIMEOUT = 12,
    SPOOL_EMOVED = 13,    /* the channel's slot moved (or is moving) to another shard: route again */
};

struct spool_err {
    int code;
    char msg[256];
};

/* Store a formatted message with the code; returns the code so callers can `return spool_err_set`. */
int spool_err_set(struct spool_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix an existing message with more context, keeping the code; returns the code. */
int spool_err_wrap(struct spool_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void spool_err_clear(struct spool_err *err);
/* A short stable name for a code, e.g. "corrupt", for logs and error bodies. */
const char *spool_err_name(int code);

#endif

/*
 * A minimal intrusive doubly-linked list, shared by the cluster port's two connection owners
 * (rpc.c: peers, connections, calls, queued frames; transport.c: incoming connections, dials,
 * Raft transports). A list head is a `struct link` whose next/prev point at itself when empty;
 * an element embeds a `struct link` and is found back from it with LINK_DATA.
 */
#ifndef SPOOL_CLUSTER_LINK_H
#define SPOOL_CLUSTER_LINK_H

#include <stdbool.h>
#include <stddef.h>

struct link {
    struct link *prev, *next;
};

static inline void link_init(struct link *l) { l->prev = l->next = l; }
static inline bool link_empty(const struct link *l) { return l->next == l; }
static inline void link_push(struct link *head, struct link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}
static inline void link_remove(struct link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    link_init(l);
}
/* Moves every element of `from` to the empty list `to`. */
static inline void link_move(struct link *from, struct link *to)
{
    link_init(to);
    if (link_empty(from)) return;
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    link_init(from);
}
#define LINK_DATA(l, type, field) ((type *)((char *)(l) - offsetof(type, field)))

#endif

/* Intrusive doubly linked lists, circular with a sentinel head (the shape of libuv's queue.h and
 * the Linux kernel's list.h): a node lives inside the object it links, so linking allocates
 * nothing and unlinking needs no search. Header only. */
#ifndef WSL_LIST_H
#define WSL_LIST_H

#include <stdbool.h>
#include <stddef.h>

/* A node, or the head of a list (the sentinel). An unlinked node points at itself. */
typedef struct wsl_list {
    struct wsl_list *next, *prev;
} wsl_list;

/* The object that holds node `n` as its member `member`. */
#define wsl_list_entry(n, type, member) ((type *)((char *)(n)-offsetof(type, member)))

static inline void wsl_list_init(wsl_list *l)
{
    l->next = l->prev = l;
}

static inline bool wsl_list_empty(const wsl_list *l)
{
    return l->next == l;
}

static inline bool wsl_list_linked(const wsl_list *n)
{
    return n->next != n;
}

static inline void wsl_list_push_back(wsl_list *l, wsl_list *n)
{
    n->prev = l->prev;
    n->next = l;
    l->prev->next = n;
    l->prev = n;
}

static inline void wsl_list_push_front(wsl_list *l, wsl_list *n)
{
    wsl_list_push_back(l->next, n);
}

/* Unlink n and leave it pointing at itself, so removing it twice is harmless. */
static inline void wsl_list_remove(wsl_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

/* for (wsl_list *n = l->next, *next; n != l; n = next) with `next` read before the body, so the
 * body may unlink n. */
#define wsl_list_each_safe(n, tmp, l)                                                              \
    for ((n) = (l)->next; (tmp) = (n)->next, (n) != (l); (n) = (tmp))

#endif

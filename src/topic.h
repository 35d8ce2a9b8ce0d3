/* Topics for publish/subscribe: topic name -> its subscribers, and subscriber -> its topics.
 * Subscribers are opaque pointers (connections, to the server), so this is pure bookkeeping,
 * unit-tested on its own. Subscribe, unsubscribe and publish lookups are O(1) on average. */
#ifndef WSL_TOPIC_H
#define WSL_TOPIC_H

#include <stddef.h>

typedef struct wsl_topics wsl_topics;
typedef struct wsl_sub wsl_sub;

/* A subscriber's list of subscriptions: one pointer, embedded in the subscriber, NULL when it
 * has none. Owned by the wsl_topics it was used with. */
typedef struct wsl_sublist {
    wsl_sub *head;
} wsl_sublist;

wsl_topics *wsl_topics_new(void);
void wsl_topics_free(wsl_topics *t); /* every subscriber must have left */

/* 1 subscribed, 0 already was, WSL_ENOMEM. */
int wsl_topics_subscribe(wsl_topics *t, wsl_sublist *l, void *who, const char *name, size_t len);
/* 1 unsubscribed, 0 was not subscribed. */
int wsl_topics_unsubscribe(wsl_topics *t, wsl_sublist *l, const char *name, size_t len);
void wsl_topics_leave_all(wsl_topics *t, wsl_sublist *l);

/* The subscribers of a topic as an array valid until the next subscribe/unsubscribe;
 * *n is 0 (and NULL returned) for a topic nobody subscribes to. */
wsl_sub *const *wsl_topics_members(const wsl_topics *t, const char *name, size_t len, size_t *n);
void *wsl_sub_who(const wsl_sub *s);

/* Topics with at least one subscriber; *subscriptions: subscriptions over all of them. */
size_t wsl_topics_count(const wsl_topics *t, size_t *subscriptions);

/* Walk a subscriber's topics: for (s = l->head; s; s = wsl_sub_next(s)) wsl_sub_topic(s, &len) */
wsl_sub *wsl_sub_next(const wsl_sub *s);
const char *wsl_sub_topic(const wsl_sub *s, size_t *len);

#endif

/* Topic bookkeeping. Each topic keeps an array of subscription records (so publish walks a
 * dense array); each record knows its index in that array (so leaving is a swap-remove) and is
 * linked into its subscriber's list (so a closing connection leaves every topic at once). Topics
 * live in a chained hash table and disappear with their last subscriber. */
#include "topic.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct topic {
    struct topic *next; /* hash chain */
    wsl_sub **subs;
    size_t n, cap;
    uint32_t hash;
    size_t len;
    char name[]; /* NUL-terminated for convenience */
} topic;

struct wsl_sub {
    wsl_sub *next; /* the subscriber's next subscription */
    topic *t;
    void *who;
    size_t idx; /* position in t->subs */
};

struct wsl_topics {
    topic **buckets;
    size_t nbuckets; /* power of two */
    size_t ntopics;
    size_t nsubs; /* subscriptions over every topic */
};

static uint32_t hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

wsl_topics *wsl_topics_new(void)
{
    wsl_topics *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->nbuckets = 64;
    t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
    if (!t->buckets) {
        free(t);
        return NULL;
    }
    return t;
}

void wsl_topics_free(wsl_topics *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        topic *tp = t->buckets[i];
        while (tp) {
            topic *next = tp->next;
            free(tp->subs);
            free(tp);
            tp = next;
        }
    }
    free(t->buckets);
    free(t);
}

static topic *find(const wsl_topics *t, const char *name, size_t len, uint32_t h)
{
    for (topic *tp = t->buckets[h & (t->nbuckets - 1)]; tp; tp = tp->next)
        if (tp->hash == h && tp->len == len && memcmp(tp->name, name, len) == 0) return tp;
    return NULL;
}

static void grow(wsl_topics *t)
{
    size_t nb = t->nbuckets * 2;
    topic **b = calloc(nb, sizeof *b);
    if (!b) return; /* longer chains, still correct */
    for (size_t i = 0; i < t->nbuckets; i++) {
        topic *tp = t->buckets[i];
        while (tp) {
            topic *next = tp->next;
            tp->next = b[tp->hash & (nb - 1)];
            b[tp->hash & (nb - 1)] = tp;
            tp = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

static void drop_topic(wsl_topics *t, topic *tp)
{
    topic **pp = &t->buckets[tp->hash & (t->nbuckets - 1)];
    while (*pp != tp)
        pp = &(*pp)->next;
    *pp = tp->next;
    t->ntopics--;
    free(tp->subs);
    free(tp);
}

int wsl_topics_subscribe(wsl_topics *t, wsl_sublist *l, void *who, const char *name, size_t len)
{
    for (wsl_sub *s = l->head; s; s = s->next)
        if (s->t->len == len && memcmp(s->t->name, name, len) == 0) return 0;

    uint32_t h = hash(name, len);
    topic *tp = find(t, name, len, h);
    if (!tp) {
        tp = calloc(1, sizeof *tp + len + 1);
        if (!tp) return WSL_ENOMEM;
        tp->hash = h;
        tp->len = len;
        memcpy(tp->name, name, len);
        if (t->ntopics >= t->nbuckets) grow(t);
        topic **b = &t->buckets[h & (t->nbuckets - 1)];
        tp->next = *b;
        *b = tp;
        t->ntopics++;
    }
    if (tp->n == tp->cap) {
        size_t cap = tp->cap ? tp->cap * 2 : 4;
        wsl_sub **subs = realloc(tp->subs, cap * sizeof *subs);
        if (!subs) goto fail;
        tp->subs = subs;
        tp->cap = cap;
    }
    wsl_sub *s = malloc(sizeof *s);
    if (!s) goto fail;
    *s = (wsl_sub){.next = l->head, .t = tp, .who = who, .idx = tp->n};
    tp->subs[tp->n++] = s;
    l->head = s;
    t->nsubs++;
    return 1;
fail:
    if (tp->n == 0) drop_topic(t, tp);
    return WSL_ENOMEM;
}

static void leave(wsl_topics *t, wsl_sub *s)
{
    topic *tp = s->t;
    wsl_sub *last = tp->subs[--tp->n];
    tp->subs[s->idx] = last;
    last->idx = s->idx;
    if (tp->n == 0) drop_topic(t, tp);
    t->nsubs--;
    free(s);
}

int wsl_topics_unsubscribe(wsl_topics *t, wsl_sublist *l, const char *name, size_t len)
{
    for (wsl_sub **pp = &l->head; *pp; pp = &(*pp)->next) {
        wsl_sub *s = *pp;
        if (s->t->len == len && memcmp(s->t->name, name, len) == 0) {
            *pp = s->next;
            leave(t, s);
            return 1;
        }
    }
    return 0;
}

void wsl_topics_leave_all(wsl_topics *t, wsl_sublist *l)
{
    wsl_sub *s = l->head;
    while (s) {
        wsl_sub *next = s->next;
        leave(t, s);
        s = next;
    }
    l->head = NULL;
}

wsl_sub *const *wsl_topics_members(const wsl_topics *t, const char *name, size_t len, size_t *n)
{
    topic *tp = find(t, name, len, hash(name, len));
    *n = tp ? tp->n : 0;
    return tp ? tp->subs : NULL;
}

void *wsl_sub_who(const wsl_sub *s)
{
    return s->who;
}

wsl_sub *wsl_sub_next(const wsl_sub *s)
{
    return s->next;
}

const char *wsl_sub_topic(const wsl_sub *s, size_t *len)
{
    *len = s->t->len;
    return s->t->name;
}

size_t wsl_topics_count(const wsl_topics *t, size_t *subscriptions)
{
    *subscriptions = t->nsubs;
    return t->ntopics;
}

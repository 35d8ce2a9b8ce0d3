/* Unit tests for src/topic.c: subscribe/unsubscribe bookkeeping from both sides (topic ->
 * members, subscriber -> topics), swap-removal keeping every index right, topics vanishing with
 * their last member, and many topics (hash growth) checked against a brute-force model. */
#include <stdbool.h>
#include <stdlib.h>

#include "test.h"
#include "topic.h"

#define NSUB   40
#define NTOPIC 300

static wsl_sublist lists[NSUB];
static int who[NSUB];
static unsigned char model[NSUB][NTOPIC]; /* what the bookkeeping must say */

static size_t members(wsl_topics *t, const char *name)
{
    size_t n;
    wsl_topics_members(t, name, strlen(name), &n);
    return n;
}

static bool is_member(wsl_topics *t, const char *name, void *w)
{
    size_t n;
    wsl_sub *const *subs = wsl_topics_members(t, name, strlen(name), &n);
    for (size_t i = 0; i < n; i++)
        if (wsl_sub_who(subs[i]) == w) return true;
    return false;
}

static void test_basics(void)
{
    wsl_topics *t = wsl_topics_new();
    wsl_sublist a = {0}, b = {0};
    int wa, wb;
    CHECK_EQ(members(t, "news"), 0);
    CHECK_EQ(wsl_topics_subscribe(t, &a, &wa, "news", 4), 1);
    CHECK_EQ(wsl_topics_subscribe(t, &a, &wa, "news", 4), 0); /* twice counts once */
    CHECK_EQ(wsl_topics_subscribe(t, &b, &wb, "news", 4), 1);
    CHECK_EQ(wsl_topics_subscribe(t, &b, &wb, "sport", 5), 1);
    CHECK_EQ(members(t, "news"), 2);
    CHECK_EQ(members(t, "sport"), 1);
    size_t subs;
    CHECK_EQ(wsl_topics_count(t, &subs), 2); /* what the metrics export */
    CHECK_EQ(subs, 3);
    CHECK(is_member(t, "news", &wa) && is_member(t, "news", &wb));
    /* Names are compared whole: a prefix is another topic. */
    CHECK_EQ(members(t, "new"), 0);
    CHECK_EQ(wsl_topics_unsubscribe(t, &a, "new", 3), 0);

    size_t len;
    int seen = 0;
    for (wsl_sub *s = b.head; s; s = wsl_sub_next(s)) {
        const char *name = wsl_sub_topic(s, &len);
        seen += (len == 4 && memcmp(name, "news", 4) == 0) ? 1 : (len == 5 ? 2 : 100);
    }
    CHECK_EQ(seen, 3);

    CHECK_EQ(wsl_topics_unsubscribe(t, &a, "news", 4), 1);
    CHECK_EQ(wsl_topics_unsubscribe(t, &a, "news", 4), 0);
    CHECK_EQ(members(t, "news"), 1);
    CHECK(!is_member(t, "news", &wa));
    CHECK(a.head == NULL);
    CHECK_EQ(wsl_topics_count(t, &subs), 2);
    CHECK_EQ(subs, 2);

    wsl_topics_leave_all(t, &b);
    CHECK(b.head == NULL);
    CHECK_EQ(members(t, "news"), 0);
    CHECK_EQ(members(t, "sport"), 0);
    CHECK_EQ(wsl_topics_count(t, &subs), 0);
    CHECK_EQ(subs, 0);
    /* A topic can be joined again after it vanished. */
    CHECK_EQ(wsl_topics_subscribe(t, &a, &wa, "news", 4), 1);
    CHECK_EQ(members(t, "news"), 1);
    wsl_topics_leave_all(t, &a);
    wsl_topics_free(t);
}

static void check_model(wsl_topics *t)
{
    char name[16];
    for (int k = 0; k < NTOPIC; k++) {
        snprintf(name, sizeof name, "topic-%d", k);
        size_t want = 0;
        for (int i = 0; i < NSUB; i++) {
            want += model[i][k];
            TEST_CONTEXT("topic %d subscriber %d", k, i);
            CHECK_EQ(is_member(t, name, &who[i]), model[i][k]);
        }
        TEST_CONTEXT("topic %d", k);
        CHECK_EQ(members(t, name), want);
    }
    for (int i = 0; i < NSUB; i++) {
        size_t n = 0, len;
        for (wsl_sub *s = lists[i].head; s; s = wsl_sub_next(s)) {
            const char *nm = wsl_sub_topic(s, &len);
            int k = atoi(nm + 6);
            TEST_CONTEXT("subscriber %d lists topic %d", i, k);
            CHECK(model[i][k]);
            n++;
        }
        size_t want = 0;
        for (int k = 0; k < NTOPIC; k++)
            want += model[i][k];
        TEST_CONTEXT("subscriber %d topic count", i);
        CHECK_EQ(n, want);
    }
    TEST_CONTEXT("%s", "");
}

static void test_random_against_model(void)
{
    wsl_topics *t = wsl_topics_new();
    srand(6455);
    char name[16];
    for (int step = 0; step < 20000; step++) {
        int i = rand() % NSUB, k = rand() % NTOPIC, op = rand() % 10;
        snprintf(name, sizeof name, "topic-%d", k);
        if (op < 6) {
            CHECK_EQ(wsl_topics_subscribe(t, &lists[i], &who[i], name, strlen(name)), !model[i][k]);
            model[i][k] = 1;
        } else if (op < 9) {
            CHECK_EQ(wsl_topics_unsubscribe(t, &lists[i], name, strlen(name)), model[i][k]);
            model[i][k] = 0;
        } else {
            wsl_topics_leave_all(t, &lists[i]);
            memset(model[i], 0, sizeof model[i]);
        }
        if (step % 5000 == 4999) check_model(t);
    }
    check_model(t);
    for (int i = 0; i < NSUB; i++)
        wsl_topics_leave_all(t, &lists[i]);
    wsl_topics_free(t);
}

int main(void)
{
    test_basics();
    test_random_against_model();
    TEST_MAIN_END();
}

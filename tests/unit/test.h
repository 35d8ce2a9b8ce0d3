/* A tiny harness for the C unit tests: CHECK macros print file:line (plus the current
 * TEST_CONTEXT, if any) and count failures; TEST_MAIN_END makes main return non-zero when any
 * check failed, so ctest sees it. One program per test_*.c file. */
#ifndef WSL_TEST_H
#define WSL_TEST_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int test_failures;
static long test_checks;
static char test_context[256]; /* what the current loop is testing, printed with failures */

/* Describe the case that the next checks test ("split at 7", "code 1004"); "" clears it. */
#define TEST_CONTEXT(...) snprintf(test_context, sizeof test_context, __VA_ARGS__)

static void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    test_failures++;
    fprintf(stderr, "%s:%d: ", file, line);
    if (test_context[0]) fprintf(stderr, "[%s] ", test_context);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        test_checks++;                                                                             \
        if (!(cond)) test_fail(__FILE__, __LINE__, "CHECK failed: %s", #cond);                     \
    } while (0)

/* Integers of any width, compared and printed as long long. */
#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        test_checks++;                                                                             \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            test_fail(__FILE__, __LINE__, "CHECK_EQ failed: %s == %s (%lld != %lld)", #a, #b, a_,  \
                      b_);                                                                         \
    } while (0)

/* NUL-terminated strings. */
#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        test_checks++;                                                                             \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                     \
            test_fail(__FILE__, __LINE__, "CHECK_STR failed: %s == %s (\"%s\" != \"%s\")", #a, #b, \
                      a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                     \
    } while (0)

/* A byte range (pointer, length) against a NUL-terminated string. */
#define CHECK_MEM(p, len, str)                                                                     \
    do {                                                                                           \
        test_checks++;                                                                             \
        const char *p_ = (const char *)(p), *s_ = (str);                                           \
        size_t l_ = (size_t)(len);                                                                 \
        if (l_ != strlen(s_) || (l_ && memcmp(p_, s_, l_) != 0))                                   \
            test_fail(__FILE__, __LINE__, "CHECK_MEM failed: %s == \"%s\" (got %zu: \"%.*s\")",    \
                      #p, s_, l_, (int)(l_ > 200 ? 200 : l_), p_ ? p_ : "");                       \
    } while (0)

#define TEST_MAIN_END()                                                                            \
    do {                                                                                           \
        if (test_failures)                                                                         \
            fprintf(stderr, "%s: %d of %ld checks FAILED\n", __FILE__, test_failures,              \
                    test_checks);                                                                  \
        else                                                                                       \
            printf("%s: all %ld checks passed\n", __FILE__, test_checks);                          \
        return test_failures ? 1 : 0;                                                              \
    } while (0)

#endif

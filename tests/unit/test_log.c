/* The JSON log line writer (wsl_log_json in src/log.c): the fields and their order, escaping of
 * quotes, backslashes and control characters, ill-formed UTF-8 replaced by U+FFFD, messages cut
 * to the buffer at a character boundary, and random hostile bytes always giving one valid JSON
 * object on one line. A small strict JSON reader here checks every line it writes. */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "test.h"

/* ---- a strict reader for the one shape the writer makes: {"key":"string"|number|true,...} ---- */

typedef struct field {
    char key[16];
    char str[20000]; /* a string value, decoded to UTF-8 */
    size_t len;
    int kind; /* 's' string, 'n' number, 't' true */
    unsigned long long num;
} field;

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    o[0] = (char)(0xE0 | cp >> 12);
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* True when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], need, cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3, cp = c & 0x07;
        } else {
            return false;
        }
        for (unsigned k = 1; k <= need; k++) {
            if (i + k >= n || (s[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

/* Parses one line; returns the number of fields, or -1 with the reason in *why. */
static int parse_line(const char *p, size_t n, field *f, int maxf, const char **why)
{
    const char *end = p + n;
    *why = "";
    if (n < 3 || p[n - 1] != '\n' || memchr(p, '\n', n - 1)) return *why = "not one line", -1;
    if (!utf8_ok((const unsigned char *)p, n)) return *why = "ill-formed UTF-8 in the line", -1;
    end--; /* the newline */
    if (*p++ != '{') return *why = "no {", -1;
    int nf = 0;
    for (;;) {
        if (nf == maxf) return *why = "too many fields", -1;
        field *x = &f[nf];
        if (*p++ != '"') return *why = "key", -1;
        size_t k = 0;
        while (p < end && *p != '"' && k < sizeof x->key - 1)
            x->key[k++] = *p++;
        x->key[k] = 0;
        if (p >= end || *p++ != '"' || p >= end || *p++ != ':') return *why = "key end", -1;
        if (p < end && *p == '"') {
            p++;
            x->kind = 's';
            x->len = 0;
            for (;;) {
                if (p >= end) return *why = "unterminated string", -1;
                unsigned char c = (unsigned char)*p++;
                if (c == '"') break;
                if (c < 0x20) return *why = "raw control character", -1;
                if (x->len + 4 >= sizeof x->str) return *why = "string too long", -1;
                if (c != '\\') {
                    x->str[x->len++] = (char)c;
                    continue;
                }
                if (p >= end) return *why = "escape at end", -1;
                c = (unsigned char)*p++;
                const char *simple = strchr("\"\\/bfnrt", c);
                if (c && simple) {
                    static const char to[] = "\"\\/\b\f\n\r\t";
                    x->str[x->len++] = to[simple - "\"\\/bfnrt"];
                } else if (c == 'u') {
                    if (end - p < 4) return *why = "short \\u", -1;
                    int v = 0;
                    for (int i = 0; i < 4; i++) {
                        int h = hexval(p[i]);
                        if (h < 0) return *why = "bad \\u", -1;
                        v = v * 16 + h;
                    }
                    p += 4;
                    if (v >= 0xD800 && v <= 0xDFFF) return *why = "surrogate escape", -1;
                    x->len += put_utf8(x->str + x->len, (unsigned)v);
                } else {
                    return *why = "bad escape", -1;
                }
            }
            x->str[x->len] = 0;
        } else if (p < end && *p >= '0' && *p <= '9') {
            x->kind = 'n';
            x->num = strtoull(p, (char **)&p, 10);
        } else if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
            x->kind = 't';
            p += 4;
        } else {
            return *why = "bad value", -1;
        }
        nf++;
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}' && p + 1 == end) return nf;
        return *why = "bad end of object", -1;
    }
}

static field fields[8];

/* Writes e into a buffer of cap bytes and parses it back; returns the field count (-1: broken). */
static int roundtrip(const wsl_log_entry *e, size_t cap, char *line, size_t *len)
{
    *len = wsl_log_json(line, cap, e);
    CHECK(*len > 0 && *len <= cap);
    const char *why;
    int n = parse_line(line, *len, fields, 8, &why);
    if (n < 0) test_fail(__FILE__, __LINE__, "not valid JSON (%s): %.*s", why, (int)*len, line);
    return n;
}

static const field *get(int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(fields[i].key, key) == 0) return &fields[i];
    return NULL;
}

static wsl_log_entry entry(const char *msg, size_t len)
{
    return (wsl_log_entry){.ts = {.tv_sec = 1764619200, .tv_nsec = 123456789}, /* 2025-12-01 */
                           .level = WSL_LOG_INFO,
                           .msg = msg,
                           .msg_len = len};
}

static void test_fields(void)
{
    char line[2048];
    wsl_log_entry e = entry("hello", 5);
    size_t len = wsl_log_json(line, sizeof line, &e);
    CHECK_MEM(line, len,
              "{\"ts\":\"2025-12-01T20:00:00.123Z\",\"level\":\"info\",\"msg\":\"hello\"}\n");

    e.level = WSL_LOG_DEBUG;
    e.worker = "w12";
    e.has_conn = true;
    e.conn = (1ull << 53) - 1; /* the largest cluster-wide id */
    e.remote = "[::1]:50312";
    len = wsl_log_json(line, sizeof line, &e);
    CHECK_MEM(line, len,
              "{\"ts\":\"2025-12-01T20:00:00.123Z\",\"level\":\"debug\",\"worker\":\"w12\","
              "\"conn\":9007199254740991,\"remote\":\"[::1]:50312\",\"msg\":\"hello\"}\n");

    static const struct {
        wsl_log_level level;
        const char *name;
    } levels[] = {{WSL_LOG_ERROR, "error"}, {WSL_LOG_WARN, "warn"}, {WSL_LOG_INFO, "info"}};
    for (size_t i = 0; i < 3; i++) {
        e = entry("", 0);
        e.level = levels[i].level;
        int n = roundtrip(&e, sizeof line, line, &len);
        CHECK_EQ(n, 3);
        TEST_CONTEXT("%s", levels[i].name);
        CHECK(get(n, "level") && strcmp(get(n, "level")->str, levels[i].name) == 0);
        CHECK(get(n, "msg") && get(n, "msg")->len == 0);
    }
    test_context[0] = 0;
    /* A conn without an address (the text form would print none either). */
    e = entry("x", 1);
    e.has_conn = true;
    e.conn = 7;
    int n = roundtrip(&e, sizeof line, line, &len);
    CHECK_EQ(n, 4);
    CHECK(get(n, "conn") && get(n, "conn")->kind == 'n' && get(n, "conn")->num == 7);
    CHECK(!get(n, "remote"));
}

static void test_escapes(void)
{
    static const struct {
        const char *in;
        size_t len;
        const char *want; /* the JSON string's inside, as written */
    } cases[] = {
        {"say \"hi\"", 8, "say \\\"hi\\\""},
        {"C:\\dir\\", 7, "C:\\\\dir\\\\"},
        {"a/b", 3, "a/b"},
        {"line 1\nline 2\r\n\tindented", 24, "line 1\\nline 2\\r\\n\\tindented"},
        {"\b\f\v", 3, "\\b\\f\\u000b"},
        {"nul\0byte", 8, "nul\\u0000byte"},
        {"\x01\x1f\x7f", 3, "\\u0001\\u001f\\u007f"},
        {"\x1b[31mred\x1b[0m", 12, "\\u001b[31mred\\u001b[0m"}, /* terminal escapes */
        /* well-formed UTF-8 goes through as it is */
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14,
         "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"\xef\xbf\xbf\xf4\x8f\xbf\xbf", 7, "\xef\xbf\xbf\xf4\x8f\xbf\xbf"}, /* U+FFFF, U+10FFFF */
        {"\xe2\x80\xa8", 3, "\xe2\x80\xa8"}, /* U+2028 is valid JSON */
        /* ill-formed: one U+FFFD per maximal subpart */
        {"\xff", 1, "\\ufffd"},
        {"\x80\xbf", 2, "\\ufffd\\ufffd"},            /* lone continuation bytes */
        {"\xc0\x80", 2, "\\ufffd\\ufffd"},            /* overlong NUL: C0 is never a lead */
        {"\xc1\xbf", 2, "\\ufffd\\ufffd"},            /* overlong */
        {"\xe0\x80\x80", 3, "\\ufffd\\ufffd\\ufffd"}, /* overlong 3-byte form */
        {"\xed\xa0\x80", 3, "\\ufffd\\ufffd\\ufffd"}, /* a surrogate, U+D800 */
        {"\xf4\x90\x80\x80", 4, "\\ufffd\\ufffd\\ufffd\\ufffd"}, /* U+110000 */
        {"\xf5\x80", 2, "\\ufffd\\ufffd"},
        {"\xe2\x82", 2, "\\ufffd"}, /* cut short at the end: one replacement */
        {"\xe2\x82"
         "A",
         3, "\\ufffdA"}, /* cut short before an ASCII byte */
        {"\xf0\x9f\x98"
         "\"",
         4, "\\ufffd\\\""},
        {"\xc3"
         "\n",
         2, "\\ufffd\\n"},
        {"a\xc3\xa9\xa9z", 5, "a\xc3\xa9\\ufffdz"},
    };
    char line[2048], want[2048];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TEST_CONTEXT("case %zu", i);
        wsl_log_entry e = entry(cases[i].in, cases[i].len);
        size_t len = wsl_log_json(line, sizeof line, &e);
        int w =
            snprintf(want, sizeof want,
                     "{\"ts\":\"2025-12-01T20:00:00.123Z\",\"level\":\"info\",\"msg\":\"%s\"}\n",
                     cases[i].want);
        CHECK(len == (size_t)w && memcmp(line, want, len) == 0);
        if (len != (size_t)w || memcmp(line, want, len) != 0)
            fprintf(stderr, "  got  %.*s  want %s", (int)len, line, want);
        int n = roundtrip(&e, sizeof line, line, &len);
        CHECK_EQ(n, 3);
    }
    test_context[0] = 0;

    /* The worker and remote fields are escaped as well, and cut to 64 bytes. */
    wsl_log_entry e = entry("m", 1);
    e.worker = "w\"1\n";
    e.has_conn = true;
    e.remote = "1234567890123456789012345678901234567890123456789012345678901234567890";
    size_t len;
    int n = roundtrip(&e, sizeof line, line, &len); /* ts level worker conn remote msg */
    CHECK_EQ(n, 6);
    const field *w = get(n, "worker");
    CHECK(w && w->len == 4 && memcmp(w->str, "w\"1\n", 4) == 0);
    CHECK(get(n, "remote") && get(n, "remote")->len == 64);
}

static void test_truncation(void)
{
    /* A message bigger than the buffer: cut, marked, still one valid object within cap. */
    static char big[40000];
    char line[WSL_LOG_JSON_MIN + 300];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = "ab\"\n\xc3\xa9\xe2\x82\xac"[i % 9]; /* escapes and multi-byte characters */
    for (size_t cap = WSL_LOG_JSON_MIN; cap <= sizeof line; cap++) {
        TEST_CONTEXT("cap %zu", cap);
        wsl_log_entry e = entry(big, sizeof big);
        e.worker = "supervisor";
        size_t len;
        int n = roundtrip(&e, cap, line, &len); /* ts level worker msg truncated */
        CHECK_EQ(n, 5);
        const field *t = get(n, "truncated"), *m = get(n, "msg");
        CHECK(t && t->kind == 't');
        /* The message is cut at a character: a prefix of the input, and nearly the whole room. */
        CHECK(m && m->len > 0 && memcmp(m->str, big, m->len) == 0);
        CHECK(len + 12 >= cap);
        if (test_failures > 20) return;
    }
    test_context[0] = 0;
    /* A message that fits exactly is not marked. */
    char msg[600];
    memset(msg, 'x', sizeof msg);
    wsl_log_entry e = entry(msg, sizeof msg);
    size_t len;
    int n = roundtrip(&e, 2048, line, &len);
    CHECK(n == 3 && get(n, "msg")->len == sizeof msg && !get(n, "truncated"));
    /* Too small a buffer: nothing written, rather than a broken line. */
    CHECK_EQ(wsl_log_json(line, WSL_LOG_JSON_MIN - 1, &e), 0);
}

/* Random bytes, biased towards the troublesome ones: every line parses, and a well-formed input
 * comes back unchanged. */
static void test_random(void)
{
    static const unsigned char pool[] = {0x00, 0x01, 0x0a, 0x0d, 0x1f, '"',  '\\', 0x7f,
                                         0x80, 0xbf, 0xc0, 0xc2, 0xc3, 0xa9, 0xe0, 0xe2,
                                         0x82, 0xac, 0xed, 0xa0, 0xf0, 0x9f, 0x98, 0xf4,
                                         0x90, 0xf5, 0xff, 'a',  'z',  ' ',  '{',  '}'};
    static char in[6000], line[16384];
    unsigned seed = 12345;
    int valid = 0;
    for (int round = 0; round < 20000; round++) {
        seed = seed * 1103515245 + 12345;
        size_t n = (seed >> 8) % (round % 10 == 0 ? sizeof in : 40);
        if (round & 4) { /* whole characters only: well-formed, with everything to escape */
            static const char *const chars[] = {"a",
                                                " ",
                                                "\"",
                                                "\\",
                                                "\n",
                                                "\t",
                                                "\x01",
                                                "\x7f",
                                                "\xc3\xa9",
                                                "\xe2\x82\xac",
                                                "\xe2\x80\xa8",
                                                "\xef\xbf\xbf",
                                                "\xf0\x9f\x98\x80",
                                                "\xf4\x8f\xbf\xbf"};
            size_t i = 0;
            while (i + 4 <= n) {
                seed = seed * 1103515245 + 12345;
                const char *ch = chars[(seed >> 16) % (sizeof chars / sizeof chars[0])];
                memcpy(in + i, ch, strlen(ch));
                i += strlen(ch);
            }
            n = i;
        } else {
            for (size_t i = 0; i < n; i++) {
                seed = seed * 1103515245 + 12345;
                in[i] = (char)((seed >> 16) % 3 == 0 ? (seed >> 20) & 0xFF
                                                     : pool[(seed >> 20) % sizeof pool]);
            }
        }
        seed = seed * 1103515245 + 12345;
        size_t cap = WSL_LOG_JSON_MIN + (seed >> 8) % (sizeof line - WSL_LOG_JSON_MIN);
        TEST_CONTEXT("round %d, %zu bytes, cap %zu", round, n, cap);
        wsl_log_entry e = entry(in, n);
        e.has_conn = round & 1;
        e.conn = seed;
        e.remote = round & 2 ? "127.0.0.1:1" : NULL;
        size_t len;
        int nf = roundtrip(&e, cap, line, &len);
        CHECK(nf >= 3);
        const field *m = get(nf, "msg");
        if (nf >= 3 && m && !get(nf, "truncated") && utf8_ok((const unsigned char *)in, n)) {
            valid++;
            CHECK(m->len == n && memcmp(m->str, in, n) == 0);
        }
        if (test_failures > 20) return;
    }
    CHECK(valid > 4000); /* the check above really ran */
}

/* wsl_log_stamp against gmtime_r and snprintf, over random times from 1970 to 2400 and the
 * days around leap years and centuries. */
static void test_stamp(void)
{
    static const long long days[] = {0,          59,         60,     365,   730,   789,
                                     790,        10957,      11016,  11017, 47541, 47540,
                                     47541 + 59, 47541 + 60, 157007, 157006};
    srand(7);
    for (int i = 0; i < 20000; i++) {
        struct timespec ts;
        if (i < (int)(sizeof days / sizeof days[0]) * 3)
            ts.tv_sec = (time_t)(days[i / 3] * 86400 + (i % 3) * 43200 - (i % 3 == 2));
        else
            ts.tv_sec = (time_t)(((unsigned long long)rand() << 16 ^ (unsigned)rand()) %
                                 13569465600ull); /* before 2400 */
        ts.tv_nsec = (long)((unsigned)rand() % 1000000000u);
        if (ts.tv_sec < 0) ts.tv_sec = 0;
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        char want[64], got[WSL_LOG_STAMP_LEN + 1];
        snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
        wsl_log_stamp(got, &ts);
        TEST_CONTEXT("t=%lld", (long long)ts.tv_sec);
        CHECK(strlen(got) == WSL_LOG_STAMP_LEN && strcmp(got, want) == 0);
        if (test_failures > 20) return;
    }
    test_context[0] = 0;
}

/* What a log call writes to stderr, read back through a pipe: wsl_log (signal false) or
 * wsl_log_from_signal of msg at level. */
static size_t captured(bool signal, wsl_log_level level, const char *msg, char *out, size_t cap)
{
    int fds[2], saved = dup(STDERR_FILENO);
    CHECK(saved >= 0 && pipe(fds) == 0 && dup2(fds[1], STDERR_FILENO) >= 0);
    if (signal)
        wsl_log_from_signal(level, msg);
    else
        wsl_log(level, "%s", msg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[1]);
    size_t got = 0;
    ssize_t n;
    while (got < cap && (n = read(fds[0], out + got, cap - got)) > 0)
        got += (size_t)n;
    close(fds[0]);
    return got;
}

/* A text line longer than 8 KiB ends with a mark, cut at a character. */
static void test_text_cut(void)
{
    static char msg[20000], line[30000];
    memset(msg, 'a', 8100);
    for (size_t i = 8100; i + 2 < sizeof msg - 1; i += 2)
        memcpy(msg + i, "\xc3\xa9", 2); /* é: a cut inside one would be ill-formed */
    size_t n = captured(false, WSL_LOG_INFO, msg, line, sizeof line);
    static const char cut[] = " [cut: the line was longer than 8 KiB]\n";
    CHECK(n > sizeof cut && n <= 8192);
    CHECK(memcmp(line + n - (sizeof cut - 1), cut, sizeof cut - 1) == 0);
    CHECK(utf8_ok((const unsigned char *)line, n));
    /* A line that fits has no mark. */
    n = captured(false, WSL_LOG_INFO, "short", line, sizeof line);
    CHECK(n > 6 && memcmp(line + n - 6, "short\n", 6) == 0);
}

static void test_from_signal(void)
{
    char line[1024];
    wsl_log_set_name("w7");
    size_t n = captured(true, WSL_LOG_ERROR, "stuck: exiting", line, sizeof line);
    static const char tail[] = " ERROR [w7] stuck: exiting\n";
    CHECK(n == WSL_LOG_STAMP_LEN + sizeof tail - 1);
    CHECK(n > WSL_LOG_STAMP_LEN && memcmp(line + WSL_LOG_STAMP_LEN, tail, sizeof tail - 1) == 0);
    CHECK(line[4] == '-' && line[10] == 'T' && line[WSL_LOG_STAMP_LEN - 1] == 'Z');

    wsl_log_set_format(WSL_LOG_JSON);
    n = captured(true, WSL_LOG_ERROR, "stuck: exiting", line, sizeof line);
    field f[8];
    const char *why = NULL;
    int k = parse_line(line, n, f, 8, &why);
    CHECK_EQ(k, 4);
    CHECK(k == 4 && strcmp(f[0].key, "ts") == 0 && f[0].len == WSL_LOG_STAMP_LEN);
    CHECK(k == 4 && strcmp(f[1].key, "level") == 0 && strcmp(f[1].str, "error") == 0);
    CHECK(k == 4 && strcmp(f[2].key, "worker") == 0 && strcmp(f[2].str, "w7") == 0);
    CHECK(k == 4 && strcmp(f[3].key, "msg") == 0 && strcmp(f[3].str, "stuck: exiting") == 0);

    wsl_log_set_level(WSL_LOG_ERROR); /* a level not logged writes nothing */
    CHECK_EQ(captured(true, WSL_LOG_INFO, "quiet", line, sizeof line), 0);
    wsl_log_set_level(WSL_LOG_INFO);
    wsl_log_set_format(WSL_LOG_TEXT);
    wsl_log_set_name(NULL);
}

int main(void)
{
    test_stamp();
    test_text_cut();
    test_from_signal();
    test_fields();
    test_escapes();
    test_truncation();
    test_random();
    TEST_MAIN_END();
}

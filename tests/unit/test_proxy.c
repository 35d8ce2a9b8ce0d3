/* Unit tests for src/proxy.c: --trust-proxy ranges (IPv4, IPv6, prefixes, errors), matching
 * (bit boundaries, families kept apart, IPv4-mapped addresses), address parsing with ports and
 * brackets, and the client a trusted peer names: X-Forwarded-For walked from the right past
 * trusted addresses, X-Real-IP, X-Forwarded-Proto. */
#include <errno.h>
#include <stdio.h>

#include "http.h"
#include "proxy.h"
#include "test.h"

static wsl_cidr ranges[WSL_PROXY_MAX_RANGES];
static size_t nranges;

static int parse(const char *list)
{
    char why[256] = "";
    int r = wsl_proxy_parse(list, ranges, WSL_PROXY_MAX_RANGES, &nranges, why, sizeof why);
    if (r != 0) CHECK(why[0] != 0);
    return r;
}

static bool trusted(const char *addr)
{
    wsl_ipaddr a;
    bool ok = wsl_ip_parse(addr, strlen(addr), &a);
    CHECK(ok);
    return ok && wsl_proxy_trusted(ranges, nranges, &a);
}

static const char *fmt(const char *addr)
{
    static char out[WSL_IP_STRLEN];
    wsl_ipaddr a;
    if (!wsl_ip_parse(addr, strlen(addr), &a)) return "(invalid)";
    wsl_ip_format(&a, out, sizeof out);
    return out;
}

static void test_parse_ranges(void)
{
    CHECK_EQ(parse("127.0.0.1"), 0);
    CHECK_EQ(nranges, 1);
    CHECK_EQ(ranges[0].bits, 32);
    CHECK(ranges[0].addr.v4);
    CHECK_EQ(parse("10.0.0.0/8, 192.168.0.0/16,::1,2001:db8::/32 ,fe80::/10"), 0);
    CHECK_EQ(nranges, 5);
    CHECK_EQ(ranges[2].bits, 128);
    CHECK(!ranges[2].addr.v4);
    CHECK_EQ(ranges[3].bits, 32);
    CHECK_EQ(parse("0.0.0.0/0"), 0);
    CHECK_EQ(parse("::/0"), 0);
    /* Host bits past the prefix are dropped: 10.1.2.3/8 is 10.0.0.0/8. */
    CHECK_EQ(parse("10.1.2.3/8"), 0);
    CHECK(trusted("10.200.0.1"));
    static const char *bad[] = {"",         ",",           "bogus",       "10.0.0.0/33",
                                "::1/129",  "10.0.0.0/",   "10.0.0.0/-1", "1.2.3.4/8/9",
                                "1.2.3/24", "10.0.0.0/8x", "[::1]",       "1.2.3.4:80",
                                "::1/0128", "10.0.0.0 /8", "256.0.0.0/8", "1.2.3.4/ 8"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TEST_CONTEXT("bad range list '%s'", bad[i]);
        CHECK_EQ(parse(bad[i]), -EINVAL);
    }
    TEST_CONTEXT("%s", "");
    /* At most WSL_PROXY_MAX_RANGES. */
    char list[WSL_PROXY_MAX_RANGES * 16 + 16];
    size_t n = 0;
    for (int i = 0; i <= WSL_PROXY_MAX_RANGES; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s10.0.%d.0/24", i ? "," : "", i);
    CHECK_EQ(parse(list), -EINVAL);
    *strrchr(list, ',') = '\0';
    CHECK_EQ(parse(list), 0);
    CHECK_EQ(nranges, WSL_PROXY_MAX_RANGES);
}

static void test_match(void)
{
    CHECK_EQ(parse("192.168.1.128/25,2001:db8:abcd::/48,127.0.0.1"), 0);
    CHECK(trusted("192.168.1.128"));
    CHECK(trusted("192.168.1.255"));
    CHECK(!trusted("192.168.1.127")); /* just below the boundary */
    CHECK(!trusted("192.168.2.200"));
    CHECK(trusted("127.0.0.1"));
    CHECK(!trusted("127.0.0.2"));
    CHECK(trusted("2001:db8:abcd:ffff::1"));
    CHECK(!trusted("2001:db8:abce::1"));
    /* An IPv4-mapped IPv6 peer (dual-stack socket) is the IPv4 address. */
    CHECK(trusted("::ffff:127.0.0.1"));
    CHECK(trusted("::ffff:192.168.1.200"));
    /* Families stay apart: ::/0 does not trust IPv4, 0.0.0.0/0 does not trust IPv6. */
    CHECK_EQ(parse("::/0"), 0);
    CHECK(!trusted("10.0.0.1"));
    CHECK(trusted("2001:db8::9"));
    CHECK_EQ(parse("0.0.0.0/0"), 0);
    CHECK(trusted("203.0.113.1"));
    CHECK(!trusted("::1"));
    CHECK_EQ(parse("10.0.0.0/7"), 0); /* a prefix that ends inside a byte */
    CHECK(trusted("11.255.255.255"));
    CHECK(!trusted("12.0.0.0"));
    CHECK(!trusted("9.255.255.255"));
}

static void test_addresses(void)
{
    CHECK_STR(fmt("203.0.113.7"), "203.0.113.7");
    CHECK_STR(fmt("203.0.113.7:8080"), "203.0.113.7");
    CHECK_STR(fmt("2001:DB8::1"), "2001:db8::1");
    CHECK_STR(fmt("[2001:db8::1]"), "2001:db8::1");
    CHECK_STR(fmt("[2001:db8::1]:443"), "2001:db8::1");
    CHECK_STR(fmt("::ffff:10.1.2.3"), "10.1.2.3");
    static const char *bad[] = {
        "",     "x",      "1.2.3",  "1.2.3.4:", "1.2.3.4:x", "1.2.3.4:123456", "[1.2.3.4]",
        "[::1", "[::1]x", "[::1]:", " 1.2.3.4", "1.2.3.4 ",  "unknown",        "2001:db8::1:80:",
        "::1:x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TEST_CONTEXT("bad address '%s'", bad[i]);
        CHECK_STR(fmt(bad[i]), "(invalid)");
    }
    TEST_CONTEXT("%s", "");
}

/* The client the headers name (after "GET / HTTP/1.1\r\nHost: h\r\n"), "-" for none; with the
 * secure flag after a space. */
static const char *client(const char *headers)
{
    static char out[128];
    char raw[2048];
    snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: h\r\n%s\r\n", headers);
    static wsl_request req;
    CHECK_EQ(wsl_http_parse(&req, raw, strlen(raw)), WSL_REQ_PLAIN);
    wsl_ipaddr a;
    bool secure = false;
    char ip[WSL_IP_STRLEN] = "-";
    if (wsl_proxy_client(ranges, nranges, &req, &a, &secure)) wsl_ip_format(&a, ip, sizeof ip);
    snprintf(out, sizeof out, "%s %s", ip, secure ? "https" : "http");
    return out;
}

static void test_forwarded(void)
{
    CHECK_EQ(parse("10.0.0.0/8,127.0.0.1"), 0);
    CHECK_STR(client(""), "- http");
    CHECK_STR(client("X-Forwarded-For: 203.0.113.7\r\n"), "203.0.113.7 http");
    /* The right-most address that is not a trusted proxy; what is left of it is the client's
     * own say, and the client may lie. */
    CHECK_STR(client("X-Forwarded-For: 6.6.6.6, 203.0.113.7, 10.0.0.2, 127.0.0.1\r\n"),
              "203.0.113.7 http");
    CHECK_STR(client("X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 10.1.1.1, 10.2.2.2\r\n"),
              "6.6.6.6 http"); /* several headers are one list */
    CHECK_STR(client("x-forwarded-for: 10.1.1.1,,  10.2.2.2 ,\r\n"), "10.1.1.1 http");
    CHECK_STR(client("X-Forwarded-For: 10.0.0.1\r\n"), "10.0.0.1 http"); /* all trusted */
    /* Garbage ends the walk: what is left of it is not believed; nothing before it: none. */
    CHECK_STR(client("X-Forwarded-For: 6.6.6.6, unknown, 10.0.0.3\r\n"), "10.0.0.3 http");
    CHECK_STR(client("X-Forwarded-For: 6.6.6.6, unknown\r\n"), "- http");
    CHECK_STR(client("X-Forwarded-For: \r\n"), "- http");
    CHECK_STR(client("X-Forwarded-For: [2001:db8::5]:1234, 10.0.0.1\r\n"), "2001:db8::5 http");
    /* X-Real-IP only without a usable X-Forwarded-For. */
    CHECK_STR(client("X-Real-IP: 198.51.100.4\r\n"), "198.51.100.4 http");
    CHECK_STR(client("X-Real-IP: 198.51.100.4\r\nX-Forwarded-For: 198.51.100.5\r\n"),
              "198.51.100.5 http");
    CHECK_STR(client("X-Real-IP: 198.51.100.4\r\nX-Forwarded-For: junk\r\n"), "198.51.100.4 http");
    CHECK_STR(client("X-Real-IP: junk\r\n"), "- http");
    /* X-Forwarded-Proto: the last value said. */
    CHECK_STR(client("X-Forwarded-Proto: https\r\n"), "- https");
    CHECK_STR(client("X-Forwarded-Proto: HTTPS\r\n"), "- https");
    CHECK_STR(client("X-Forwarded-Proto: https, http\r\n"), "- http");
    CHECK_STR(client("X-Forwarded-Proto: http\r\nX-Forwarded-Proto: https\r\n"), "- https");
    CHECK_STR(client("X-Forwarded-Proto: wss\r\n"), "- http");
    CHECK_STR(client("X-Forwarded-For: 203.0.113.1\r\nX-Forwarded-Proto: https\r\n"),
              "203.0.113.1 https");
    /* A long list of trusted hops, walked in one pass. */
    char many[1800];
    size_t n = 0;
    n += (size_t)snprintf(many + n, sizeof many - n, "X-Forwarded-For: 203.0.113.99");
    for (int i = 0; i < 150; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, ", 10.0.%d.1", i);
    snprintf(many + n, sizeof many - n, "\r\n");
    CHECK_STR(client(many), "203.0.113.99 http");
}

int main(void)
{
    test_parse_ranges();
    test_match();
    test_addresses();
    test_forwarded();
    TEST_MAIN_END();
}

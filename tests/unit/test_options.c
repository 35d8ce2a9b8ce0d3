/* The command line (src/options.c): sizes with their suffixes and overflow, defaults, and the
 * usage errors that must stop the server before it starts. */
#include <getopt.h>
#include <stdint.h>

#include "options.h"
#include "test.h"

static void test_sizes(void)
{
    static const struct {
        const char *in;
        uint64_t want;
    } good[] = {
        {"0", 0},
        {"1", 1},
        {"1048576", 1048576},
        {"512K", 512 << 10},
        {"512k", 512 << 10},
        {"1M", 1 << 20},
        {"1MB", 1 << 20},
        {"2mb", 2 << 20},
        {"1G", 1ull << 30},
        {"16384", 16384},
        {"9007199254740992", 1ull << 53}, /* WSL_SIZE_MAX: exact as a double */
        {"8388608G", 1ull << 53},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        TEST_CONTEXT("%s", good[i].in);
        uint64_t v = 12345;
        CHECK(wsl_parse_size(good[i].in, &v));
        CHECK_EQ(v, good[i].want);
    }
    static const char *const bad[] = {
        "",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1T",
        "1KK",
        "1Mx",
        "M",
        "0x10",
        "1.5M",
        "9007199254740993", /* one past WSL_SIZE_MAX */
        "8388609G",
        "18446744073709551616", /* one past UINT64_MAX */
        "17179869184G",         /* overflows once shifted */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TEST_CONTEXT("%s", bad[i]);
        uint64_t v = 12345;
        CHECK(!wsl_parse_size(bad[i], &v));
        CHECK_EQ(v, 12345); /* untouched on failure */
    }
    test_context[0] = '\0';
}

/* Parse a NULL-terminated argument list (getopt keeps state between calls: reset it). */
static int parse(wsl_options *o, char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    optind = 0;
    return wsl_options_parse(o, argc, argv);
}

static void test_defaults_and_values(void)
{
    wsl_options o;
    char *plain[] = {"wsluad", "chat.lua", NULL};
    CHECK_EQ(parse(&o, plain), WSL_OPTIONS_RUN);
    CHECK_STR(o.script, "chat.lua");
    CHECK_EQ(o.nlisten, 1);
    CHECK_STR(o.listen[0].host, "127.0.0.1");
    CHECK_EQ(o.listen[0].port, 8080);
    CHECK(!o.listen[0].tls);
    CHECK_EQ(o.max_message, 1 << 20);
    CHECK(o.handler_timeout > 0);
    CHECK_EQ(o.max_request_body, 1 << 20);
    CHECK(o.request_timeout == 30);
    CHECK_EQ(o.ntrust, 0);
    CHECK(!o.deflate); /* permessage-deflate is off unless asked for */
    CHECK_EQ(o.deflate_min, 256);

    char *z[] = {"wsluad", "--deflate", "--deflate-min", "1K", "x.lua", NULL};
    CHECK_EQ(parse(&o, z), WSL_OPTIONS_RUN);
    CHECK(o.deflate);
    CHECK_EQ(o.deflate_min, 1024);
    char *z0[] = {"wsluad", "--deflate", "--deflate-min", "0", "x.lua", NULL};
    CHECK_EQ(parse(&o, z0), WSL_OPTIONS_RUN);
    CHECK_EQ(o.deflate_min, 0);

    CHECK(!o.no_io_uring); /* replies are batched through io_uring unless refused */
    char *nu[] = {"wsluad", "--no-io-uring", "x.lua", NULL};
    CHECK_EQ(parse(&o, nu), WSL_OPTIONS_RUN);
    CHECK(o.no_io_uring);

    char *set[] = {"wsluad",         "--max-message", "64K", "--lua-memory", "1G", "-l",
                   "127.0.0.1:9001", "x.lua",         NULL};
    CHECK_EQ(parse(&o, set), WSL_OPTIONS_RUN);
    CHECK_EQ(o.max_message, 64 << 10);
    CHECK_EQ(o.lua_memory, 1ull << 30);
    CHECK_EQ(o.nlisten, 1);
    CHECK_STR(o.listen[0].host, "127.0.0.1");
    CHECK_EQ(o.listen[0].port, 9001);

    char *http[] = {"wsluad",
                    "--max-request-body",
                    "0",
                    "--request-timeout",
                    "0.25",
                    "--trust-proxy",
                    "10.0.0.0/8,::1",
                    "x.lua",
                    NULL};
    CHECK_EQ(parse(&o, http), WSL_OPTIONS_RUN);
    CHECK_EQ(o.max_request_body, 0);
    CHECK(o.request_timeout == 0.25);
    CHECK_EQ(o.ntrust, 2);
    CHECK_EQ(o.trust[0].bits, 8);
    CHECK_EQ(o.trust[1].bits, 128);
}

static void test_listeners(void)
{
    wsl_options o;
    char *many[] = {"wsluad", "-l",         "127.0.0.1:1", "--tls-listen", "[::1]:2", "--listen",
                    ":3",     "--tls-cert", "c.pem",       "--tls-key",    "k.pem",   NULL};
    CHECK_EQ(parse(&o, many), WSL_OPTIONS_RUN);
    CHECK_EQ(o.nlisten, 3);
    CHECK_STR(o.listen[0].host, "127.0.0.1");
    CHECK(!o.listen[0].tls);
    CHECK_STR(o.listen[1].host, "::1");
    CHECK_EQ(o.listen[1].port, 2);
    CHECK(o.listen[1].tls);
    CHECK_STR(o.listen[2].host, "0.0.0.0");
    CHECK_STR(o.tls_cert, "c.pem");
    CHECK_STR(o.tls_key, "k.pem");
    char list[256];
    CHECK_STR(wsl_listen_list(&o, list, sizeof list), "127.0.0.1:1, [::1]:2 (TLS), 0.0.0.0:3");

    /* --tls-listen alone: no plain listener is added. */
    char *tls_only[] = {"wsluad", "--tls-listen", "127.0.0.1:0", "--tls-cert",
                        "c.pem",  "--tls-key",    "k.pem",       NULL};
    CHECK_EQ(parse(&o, tls_only), WSL_OPTIONS_RUN);
    CHECK_EQ(o.nlisten, 1);
    CHECK(o.listen[0].tls);

    char *too_many[2 * WSL_MAX_LISTEN + 4] = {"wsluad"};
    for (int i = 0; i <= WSL_MAX_LISTEN; i++) {
        too_many[1 + 2 * i] = "-l";
        too_many[2 + 2 * i] = "127.0.0.1:0";
    }
    CHECK_EQ(parse(&o, too_many), WSL_OPTIONS_USAGE);
}

static void test_usage_errors(void)
{
    /* stderr gets the messages; only the verdict matters here. */
    char *cases[][5] = {
        {"wsluad", "--max-message", "lots", "x.lua", NULL},
        {"wsluad", "--max-message", "0", "x.lua", NULL},
        {"wsluad", "--no-such-option", "x.lua", NULL, NULL},
        {"wsluad", "a.lua", "b.lua", NULL, NULL},
        {"wsluad", "-l", "127.0.0.1:99999", "x.lua", NULL},
        {"wsluad", "--max-request-body", "2G", "x.lua", NULL},
        {"wsluad", "--request-timeout", "-1", "x.lua", NULL},
        {"wsluad", "--trust-proxy", "10.0.0.0/40", "x.lua", NULL},
        {"wsluad", "--trust-proxy", "", "x.lua", NULL},
        {"wsluad", "--deflate-min", "small", "x.lua", NULL},
        {"wsluad", "--deflate=yes", "x.lua", NULL, NULL},
        {"wsluad", "--tls-listen", "127.0.0.1:0", "x.lua", NULL},
        {"wsluad", "--tls-cert", "c.pem", "x.lua", NULL},
        {"wsluad", "--tls-listen", "nowhere", "x.lua", NULL},
        {"wsluad", "--deflate-min", "300", "x.lua", NULL}, /* without --deflate */
        {"wsluad", "--idle-timeout", "0x10", "x.lua", NULL},
        {"wsluad", "--idle-timeout", "1e3", "x.lua", NULL},
        {"wsluad", "--handler-timeout", "inf", "x.lua", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TEST_CONTEXT("case %zu (%s)", i, cases[i][1]);
        wsl_options o;
        CHECK_EQ(parse(&o, cases[i]), WSL_OPTIONS_USAGE);
    }
    test_context[0] = '\0';
}

int main(void)
{
    test_sizes();
    test_defaults_and_values();
    test_listeners();
    test_usage_errors();
    TEST_MAIN_END();
}

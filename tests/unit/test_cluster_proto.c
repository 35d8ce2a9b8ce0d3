/* Unit tests for src/cluster_proto.c: --redis URLs that parse (every part, defaults, escapes,
 * IPv6, Unix sockets) and URLs that must not (each with its message, none showing the
 * password), the prefix rule, channel names both ways, the envelope byte for byte, the id
 * layout, and the commands a script may not send. */
#include <errno.h>
#include <stdint.h>

#include "cluster_proto.h"
#include "test.h"

static wsl_cluster_addr a;
static char err[256];

static void parses(const char *url)
{
    TEST_CONTEXT("%s", url);
    CHECK_EQ(wsl_cluster_parse_url(url, &a, err, sizeof err), 0);
    CHECK_STR(err, "");
}

/* Fails, and the message contains `word`. */
static void refused(const char *url, const char *word)
{
    TEST_CONTEXT("%s", url);
    CHECK_EQ(wsl_cluster_parse_url(url, &a, err, sizeof err), -EINVAL);
    if (!strstr(err, word)) test_fail(__FILE__, __LINE__, "message \"%s\" lacks \"%s\"", err, word);
    CHECK(!strstr(err, "hunter2"));
}

static void test_urls(void)
{
    parses("redis://localhost");
    CHECK(!a.unix_socket);
    CHECK_STR(a.host, "localhost");
    CHECK_EQ(a.port, 6379);
    CHECK_EQ(a.db, 0);
    CHECK_STR(a.user, "");
    CHECK_STR(a.password, "");

    parses("redis://127.0.0.1:6380/2");
    CHECK_STR(a.host, "127.0.0.1");
    CHECK_EQ(a.port, 6380);
    CHECK_EQ(a.db, 2);

    parses("REDIS://Cache-1.example.org:1/");
    CHECK_STR(a.host, "Cache-1.example.org");
    CHECK_EQ(a.port, 1);
    CHECK_EQ(a.db, 0);

    parses("redis://:secret@h:65535/15");
    CHECK_STR(a.user, "");
    CHECK_STR(a.password, "secret");
    CHECK_STR(a.host, "h");
    CHECK_EQ(a.port, 65535);
    CHECK_EQ(a.db, 15);

    parses("redis://app:p%40ss%2Fw%3Ard@h");
    CHECK_STR(a.user, "app");
    CHECK_STR(a.password, "p@ss/w:rd");

    parses("redis://:pa@ss/x@h/3"); /* unencoded '@' and '/': the last '@' ends the user part */
    CHECK_STR(a.password, "pa@ss/x");
    CHECK_STR(a.host, "h");
    CHECK_EQ(a.db, 3);

    parses("redis://[::1]:7000/3");
    CHECK_STR(a.host, "::1");
    CHECK_EQ(a.port, 7000);
    CHECK_EQ(a.db, 3);

    parses("redis://[fe80::1:2]");
    CHECK_STR(a.host, "fe80::1:2");
    CHECK_EQ(a.port, 6379);

    parses("redis://h/2147483647");
    CHECK_EQ(a.db, 2147483647);

    parses("unix:/run/redis/redis.sock");
    CHECK(a.unix_socket);
    CHECK_STR(a.path, "/run/redis/redis.sock");
    CHECK_STR(a.host, "");
    CHECK_EQ(a.db, 0);

    parses("UNIX:///tmp/r.sock");
    CHECK(a.unix_socket);
    CHECK_STR(a.path, "/tmp/r.sock");

    refused("", "empty");
    refused(NULL, "empty");
    refused("localhost:6379", "no scheme");
    refused("http://localhost", "unsupported scheme \"http\"");
    refused("rediss://h", "TLS");
    refused("redis://", "no host");
    refused("redis://:6379", "no host");
    refused("redis://:hunter2@:6379", "no host");
    refused("redis://h:0", "bad port \"0\"");
    refused("redis://h:65536", "bad port \"65536\"");
    refused("redis://h:", "bad port \"\"");
    refused("redis://h:6x", "bad port");
    refused("redis://:hunter2@h:99999999999999999999999", "bad port");
    refused("redis://h/x", "bad database \"x\"");
    refused("redis://h/1/2", "bad database");
    refused("redis://h/-1", "bad database");
    refused("redis://h/99999999999", "bad database");
    refused("redis://h?db=1", "query");
    refused("redis://h#x", "fragment");
    refused("redis://user@h", ":PASSWORD");
    refused("redis://user:@h", "password after ':' is empty");
    refused("redis://:hunter2%zz@h", "percent escape in the password");
    refused("redis://:hunter2%4@h", "percent escape in the password");
    refused("redis://:hunter2%00@h", "NUL");
    refused("redis://u%g1:hunter2@h", "percent escape in the user");
    refused("redis://[::1", "closed with ']'");
    refused("redis://[zz]:1", "bad IPv6 address");
    refused("redis://[::1]x", "after the IPv6 address");
    refused("redis://[]", "bad IPv6");
    refused("redis://:hunter2@ho st", "invalid character ' '");
    refused("redis://h%20x", "invalid character '%'");
    refused("unix:", "absolute");
    refused("unix:relative/path", "absolute");
    refused("unix:/", "empty");
    refused("unix://host/path", "takes a path");

    char longurl[700];
    snprintf(longurl, sizeof longurl, "unix:/%0200d", 0);
    refused(longurl, "limit is 107");
    memset(longurl, 0, sizeof longurl);
    strcpy(longurl, "redis://:");
    memset(longurl + 9, 'x', 600);
    strcat(longurl, "@h");
    refused(longurl, "password is longer than 511");
    memset(longurl, 0, sizeof longurl);
    strcpy(longurl, "redis://");
    memset(longurl + 8, 'h', 300);
    refused(longurl, "host name is longer than 255");

    /* A small buffer gets a truncated, terminated message; no buffer at all is fine too. */
    char small[8];
    CHECK_EQ(wsl_cluster_parse_url("redis://h:0", &a, small, sizeof small), -EINVAL);
    CHECK_EQ(strlen(small), 7);
    CHECK_EQ(wsl_cluster_parse_url("redis://h:0", &a, NULL, 0), -EINVAL);
    test_context[0] = 0;
}

static void test_addr_str(void)
{
    char out[300];
    parses("redis://:hunter2@10.0.0.1:7000/4");
    CHECK_STR(wsl_cluster_addr_str(&a, out, sizeof out), "10.0.0.1:7000/4");
    parses("redis://u:hunter2@[::1]");
    CHECK_STR(wsl_cluster_addr_str(&a, out, sizeof out), "[::1]:6379");
    parses("unix:/tmp/r.sock");
    CHECK_STR(wsl_cluster_addr_str(&a, out, sizeof out), "unix:/tmp/r.sock");
    test_context[0] = 0;
}

static void test_prefix(void)
{
    CHECK_EQ(wsl_cluster_check_prefix("wsluad", err, sizeof err), 0);
    CHECK_EQ(wsl_cluster_check_prefix("app:chat-2_b.x", err, sizeof err), 0);
    CHECK_EQ(wsl_cluster_check_prefix("", err, sizeof err), -EINVAL);
    CHECK(strstr(err, "empty"));
    CHECK_EQ(wsl_cluster_check_prefix(NULL, err, sizeof err), -EINVAL);
    CHECK_EQ(wsl_cluster_check_prefix("a b", err, sizeof err), -EINVAL);
    CHECK(strstr(err, "letters"));
    CHECK_EQ(wsl_cluster_check_prefix("x\n", err, sizeof err), -EINVAL);
    char p[WSL_CLUSTER_PREFIX_MAX + 2];
    memset(p, 'p', sizeof p - 1);
    p[sizeof p - 1] = 0;
    CHECK_EQ(wsl_cluster_check_prefix(p, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "limit"));
    p[WSL_CLUSTER_PREFIX_MAX] = 0;
    CHECK_EQ(wsl_cluster_check_prefix(p, err, sizeof err), 0);
}

static wsl_chan_kind chan(const char *ch, const char **name, size_t *nlen, uint32_t *node)
{
    return wsl_channel_parse("wsluad", 6, ch, strlen(ch), name, nlen, node);
}

static void test_channels(void)
{
    const char *name = NULL;
    size_t nlen = 99;
    uint32_t node = 0;
    CHECK_EQ(chan("wsluad:topic:news", &name, &nlen, &node), WSL_CHAN_TOPIC);
    CHECK_MEM(name, nlen, "news");
    CHECK_EQ(chan("wsluad:topic:a:b c", &name, &nlen, &node), WSL_CHAN_TOPIC);
    CHECK_MEM(name, nlen, "a:b c");
    CHECK_EQ(chan("wsluad:topic:", &name, &nlen, &node), WSL_CHAN_TOPIC);
    CHECK_EQ(nlen, 0);
    CHECK_EQ(chan("wsluad:broadcast", &name, &nlen, &node), WSL_CHAN_BROADCAST);
    CHECK_EQ(chan("wsluad:node:42", &name, &nlen, &node), WSL_CHAN_NODE);
    CHECK_EQ(node, 42);
    CHECK_EQ(chan("wsluad:node:65535", &name, &nlen, &node), WSL_CHAN_NODE);
    CHECK_EQ(node, 65535);
    CHECK_EQ(chan("wsluad:node:65536", &name, &nlen, &node), WSL_CHAN_OTHER);
    CHECK_EQ(chan("wsluad:node:0", &name, &nlen, &node), WSL_CHAN_OTHER);
    CHECK_EQ(chan("wsluad:node:042", &name, &nlen, &node), WSL_CHAN_OTHER);
    CHECK_EQ(chan("wsluad:node:4x", &name, &nlen, &node), WSL_CHAN_OTHER);
    CHECK_EQ(chan("wsluad:node:", &name, &nlen, &node), WSL_CHAN_OTHER);
    CHECK_EQ(chan("wsluad:broadcastx", &name, &nlen, &node), WSL_CHAN_OTHER);
    CHECK_EQ(chan("wsluadx:broadcast", &name, &nlen, &node), WSL_CHAN_OTHER);
    CHECK_EQ(chan("other:topic:news", &name, &nlen, &node), WSL_CHAN_OTHER);
    CHECK_EQ(chan("wsluad:topi", &name, &nlen, &node), WSL_CHAN_OTHER);
    CHECK_EQ(chan("wsluad", &name, &nlen, &node), WSL_CHAN_OTHER);
    CHECK_EQ(chan("", &name, &nlen, &node), WSL_CHAN_OTHER);
}

static void test_envelope(void)
{
    uint8_t b[WSL_ENVELOPE_SIZE + 3];
    wsl_envelope e = {.opcode = 2,
                      .origin = UINT64_C(0x0102030405060708),
                      .except = UINT64_C(0x1FFFFFFFFFFFFF),
                      .target = 0};
    wsl_envelope_encode(b, &e);
    static const uint8_t want[WSL_ENVELOPE_SIZE] = {
        0x00, 'W',  'S',  'L',  1,    2,    0,    0,    /* magic, version, opcode, reserved */
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* origin */
        0x00, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, /* except */
        0,    0,    0,    0,    0,    0,    0,    0,    /* target */
    };
    CHECK(memcmp(b, want, sizeof want) == 0);

    wsl_envelope d = {0};
    memcpy(b + WSL_ENVELOPE_SIZE, "abc", 3);
    CHECK_EQ(wsl_envelope_decode(b, sizeof b, &d), 1);
    CHECK_EQ(d.opcode, 2);
    CHECK(d.origin == e.origin);
    CHECK(d.except == e.except);
    CHECK(d.target == 0);
    CHECK_EQ(wsl_envelope_decode(b, WSL_ENVELOPE_SIZE, &d), 1); /* empty payload */

    e = (wsl_envelope){.opcode = 1, .origin = UINT64_MAX, .except = 0, .target = 77};
    wsl_envelope_encode(b, &e);
    CHECK_EQ(wsl_envelope_decode(b, WSL_ENVELOPE_SIZE, &d), 1);
    CHECK_EQ(d.opcode, 1);
    CHECK(d.origin == UINT64_MAX);
    CHECK(d.target == 77);

    CHECK_EQ(wsl_envelope_decode(b, WSL_ENVELOPE_SIZE - 1, &d), -EBADMSG);
    CHECK_EQ(wsl_envelope_decode(b, 4, &d), -EBADMSG);
    CHECK_EQ(wsl_envelope_decode(b, 3, &d), 0); /* too short for the magic: external */
    CHECK_EQ(wsl_envelope_decode("hello", 5, &d), 0);
    CHECK_EQ(wsl_envelope_decode("", 0, &d), 0);
    CHECK_EQ(wsl_envelope_decode("\0WSX and more than thirty-two bytes", 35, &d), 0);
    b[4] = 2;
    CHECK_EQ(wsl_envelope_decode(b, WSL_ENVELOPE_SIZE, &d), -EBADMSG);
    b[4] = 1;
    b[5] = 0;
    CHECK_EQ(wsl_envelope_decode(b, WSL_ENVELOPE_SIZE, &d), -EBADMSG);
    b[5] = 9;
    CHECK_EQ(wsl_envelope_decode(b, WSL_ENVELOPE_SIZE, &d), -EBADMSG);
}

static void test_ids(void)
{
    uint64_t max = wsl_cluster_id(WSL_CLUSTER_NODE_MAX, WSL_CLUSTER_SEQ_MASK);
    CHECK(max < (UINT64_C(1) << 53)); /* exact as a JavaScript number */
    CHECK(max == (UINT64_C(1) << 53) - 1);
    CHECK_EQ(wsl_cluster_id_node(max), WSL_CLUSTER_NODE_MAX);
    CHECK_EQ(wsl_cluster_id(0, 12345), 12345); /* no --redis: the plain counter */
    CHECK_EQ(wsl_cluster_id_node(12345), 0);
    uint64_t id = wsl_cluster_id(7, 99);
    CHECK_EQ(wsl_cluster_id_node(id), 7);
    CHECK_EQ(id & WSL_CLUSTER_SEQ_MASK, 99);
    CHECK_EQ(wsl_cluster_id(7, WSL_CLUSTER_SEQ_MASK + 5), wsl_cluster_id(7, 4)); /* wraps */
}

static const char *refusal(int argc, const char *a0, const char *a1)
{
    const char *argv[2] = {a0, a1};
    size_t lens[2] = {a0 ? strlen(a0) : 0, a1 ? strlen(a1) : 0};
    return wsl_cluster_command_refused(argc, argv, lens);
}

static void test_refused(void)
{
    CHECK(refusal(1, "GET", NULL) == NULL);
    CHECK(refusal(2, "CLIENT", "LIST") == NULL);
    CHECK(refusal(1, "SUBSCRIBEX", NULL) == NULL);
    CHECK(refusal(1, "BLPOP", NULL) == NULL);
    CHECK(refusal(1, "subscribe", NULL) != NULL);
    CHECK(refusal(1, "PSubscribe", NULL) != NULL);
    CHECK(refusal(1, "SSUBSCRIBE", NULL) != NULL);
    CHECK(refusal(1, "unsubscribe", NULL) != NULL);
    CHECK(refusal(1, "MONITOR", NULL) != NULL);
    CHECK(refusal(1, "quit", NULL) != NULL);
    CHECK(refusal(1, "HELLO", NULL) != NULL);
    CHECK(refusal(2, "select", "1") != NULL);
    CHECK(strstr(refusal(2, "select", "1"), "/DB"));
    CHECK(refusal(2, "client", "reply") != NULL);
    CHECK(refusal(0, "GET", NULL) != NULL);
    CHECK(refusal(1, "", NULL) != NULL);
    CHECK(wsl_cluster_command_refused(1, NULL, NULL) != NULL);
}

int main(void)
{
    test_urls();
    test_addr_str();
    test_prefix();
    test_channels();
    test_envelope();
    test_ids();
    test_refused();
    TEST_MAIN_END();
}

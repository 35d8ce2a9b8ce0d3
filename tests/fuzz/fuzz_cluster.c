/* libFuzzer target for the pure half of the cluster link (src/cluster_proto.c): the same bytes
 * as a --redis URL, as a message arriving from Redis (the envelope), as a channel name and as a
 * command, each checked against what its contract promises. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_proto.h"
#include "fuzz.h"

static void url(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    ASSERT(s);
    memcpy(s, data, size);
    s[size] = 0; /* a URL ends at its first NUL, as on a command line */
    wsl_cluster_addr a;
    char err[256];
    int r = wsl_cluster_parse_url(s, &a, err, sizeof err);
    if (r == 0) {
        ASSERT(err[0] == 0);
        ASSERT(memchr(a.host, 0, sizeof a.host) && memchr(a.path, 0, sizeof a.path));
        ASSERT(memchr(a.user, 0, sizeof a.user) && memchr(a.password, 0, sizeof a.password));
        ASSERT(a.db >= 0);
        if (a.unix_socket)
            ASSERT(a.path[0] == '/' && a.path[1] && !a.host[0] && !a.password[0]);
        else
            ASSERT(a.host[0] && a.port >= 1 && !a.path[0]);
        if (a.user[0]) ASSERT(a.password[0]);
        char out[400];
        wsl_cluster_addr_str(&a, out, sizeof out);
        ASSERT(memchr(out, 0, sizeof out));
    } else {
        ASSERT(r == -EINVAL && err[0] && memchr(err, 0, sizeof err));
    }
    free(s);
}

static void envelope(const uint8_t *data, size_t size)
{
    uint8_t *p = malloc(size ? size : 1); /* exactly the bytes, so a read past them is caught */
    ASSERT(p);
    memcpy(p, data, size);
    wsl_envelope e;
    int r = wsl_envelope_decode(p, size, &e);
    bool magic = size >= 4 && memcmp(p, WSL_ENVELOPE_MAGIC, 4) == 0;
    if (r == 1) {
        ASSERT(magic && size >= WSL_ENVELOPE_SIZE && (e.opcode == 1 || e.opcode == 2));
        uint8_t again[WSL_ENVELOPE_SIZE];
        wsl_envelope_encode(again, &e);
        ASSERT(memcmp(again, p, 6) == 0 && memcmp(again + 8, p + 8, WSL_ENVELOPE_SIZE - 8) == 0);
    } else if (r == 0) {
        ASSERT(!magic);
    } else {
        ASSERT(r == -EBADMSG && magic);
    }
    free(p);
}

static void channel(const uint8_t *data, size_t size)
{
    char *ch = malloc(size ? size : 1);
    ASSERT(ch);
    memcpy(ch, data, size);
    const char *name = NULL;
    size_t nlen = 0;
    uint32_t node = 0;
    wsl_chan_kind k = wsl_channel_parse("wsluad", 6, ch, size, &name, &nlen, &node);
    if (k == WSL_CHAN_TOPIC) {
        ASSERT(size >= 13 && memcmp(ch, "wsluad:topic:", 13) == 0);
        ASSERT(name == ch + 13 && nlen == size - 13);
    } else if (k == WSL_CHAN_BROADCAST) {
        ASSERT(size == 16 && memcmp(ch, "wsluad:broadcast", 16) == 0);
    } else if (k == WSL_CHAN_NODE) {
        char again[32];
        int n = snprintf(again, sizeof again, "wsluad:node:%u", node);
        ASSERT(node >= 1 && node <= WSL_CLUSTER_NODE_MAX);
        ASSERT((size_t)n == size && memcmp(again, ch, size) == 0);
    } else {
        ASSERT(k == WSL_CHAN_OTHER);
    }
    free(ch);
}

static void command(const uint8_t *data, size_t size)
{
    const char *argv[8];
    size_t lens[8];
    int argc = 0;
    size_t start = 0;
    for (size_t i = 0; i <= size && argc < 8; i++)
        if (i == size || data[i] == ' ') {
            argv[argc] = (const char *)data + start;
            lens[argc++] = i - start;
            start = i + 1;
        }
    const char *why = wsl_cluster_command_refused(argc, argv, lens);
    ASSERT(!why || why[0]);
    if (argc >= 1 && lens[0] == 0) ASSERT(why);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    url(data, size);
    envelope(data, size);
    channel(data, size);
    command(data, size);
    return 0;
}

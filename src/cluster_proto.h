/* The pure half of the cluster link (src/cluster.c): the --redis URL, the names of the channels,
 * the envelope around wsluad's own messages, cluster-wide connection ids, and which commands a
 * script may not send on the shared command link. No sockets, no hiredis: unit-tested and
 * fuzzed on its own. */
#ifndef WSL_CLUSTER_PROTO_H
#define WSL_CLUSTER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- the --redis URL -------------------------------------------------------------------------
 * redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]   HOST a name, an IPv4 address or [IPv6]; PORT
 *                                              6379 by default; DB 0 by default. USER and
 *                                              PASSWORD may be percent-encoded (%40 for '@').
 * unix:/path/to/redis.sock (also unix:///path)  a Unix socket, database 0, no password.
 * The scheme is case-insensitive; rediss:// (TLS), query strings and fragments are refused. */
typedef struct wsl_cluster_addr {
    bool unix_socket;
    char host[256];     /* TCP: a name or an address, IPv6 without its brackets */
    uint16_t port;      /* TCP */
    char path[108];     /* Unix: the socket path (the size of sun_path) */
    char user[128];     /* "" when the URL names no user (AUTH with the password only) */
    char password[512]; /* "" when the URL gives none (no AUTH) */
    int db;             /* SELECT db on every connection when not 0 */
} wsl_cluster_addr;

/* Parses url into *out. 0, or -EINVAL with a message in err (always NUL-terminated when errlen
 * > 0) saying what is wrong and what is expected. The message never contains the password. */
int wsl_cluster_parse_url(const char *url, wsl_cluster_addr *out, char *err, size_t errlen);

/* The address for log lines, without user or password: "host:port", "[::1]:6379/2",
 * "unix:/run/redis.sock". Returns out. */
const char *wsl_cluster_addr_str(const wsl_cluster_addr *a, char *out, size_t n);

/* The --redis-prefix NAME: 1 to WSL_CLUSTER_PREFIX_MAX bytes of letters, digits, '.', '_', '-'
 * and ':', so that keys and channels read well in logs and in redis-cli. 0, or -EINVAL with a
 * message in err. */
#define WSL_CLUSTER_PREFIX_MAX 100
int wsl_cluster_check_prefix(const char *prefix, char *err, size_t errlen);

/* --- channels --------------------------------------------------------------------------------
 * <prefix>:topic:<name>   a topic (name: any bytes)
 * <prefix>:broadcast      every connection of every node
 * <prefix>:node:<n>       direct messages to connections of node n (decimal, no leading zero)
 * <prefix>:node:<n> is also the key a node holds (SET NX EX) to claim its number. */
typedef enum {
    WSL_CHAN_OTHER, /* not one of ours */
    WSL_CHAN_TOPIC,
    WSL_CHAN_BROADCAST,
    WSL_CHAN_NODE,
} wsl_chan_kind;

/* Classifies a channel name. For a topic *name and *name_len get the topic (pointing into ch);
 * for a node channel *node gets the number (1..WSL_CLUSTER_NODE_MAX, else WSL_CHAN_OTHER). */
wsl_chan_kind wsl_channel_parse(const char *prefix, size_t prefix_len, const char *ch, size_t n,
                                const char **name, size_t *name_len, uint32_t *node);

/* --- connection ids ---------------------------------------------------------------------------
 * A cluster-wide connection id is node << WSL_CLUSTER_SEQ_BITS | seq: 16 bits of node number
 * (1..65535) above a 37-bit per-node counter, 53 bits in all, so an id survives JSON and
 * JavaScript numbers exactly. 2^37 ids last a node 4 years at 1,000 new connections a second,
 * where 32 bits would wrap in 50 days; 65,535 node numbers are plenty for the nodes of one
 * Redis. A server without --redis uses node 0, so its ids stay the plain counter. */
#define WSL_CLUSTER_NODE_BITS 16
#define WSL_CLUSTER_SEQ_BITS  37
#define WSL_CLUSTER_NODE_MAX  ((1u << WSL_CLUSTER_NODE_BITS) - 1)
#define WSL_CLUSTER_SEQ_MASK  ((UINT64_C(1) << WSL_CLUSTER_SEQ_BITS) - 1)

static inline uint64_t wsl_cluster_id(uint32_t node, uint64_t seq)
{
    return (uint64_t)node << WSL_CLUSTER_SEQ_BITS | (seq & WSL_CLUSTER_SEQ_MASK);
}

static inline uint32_t wsl_cluster_id_node(uint64_t id)
{
    return (uint32_t)(id >> WSL_CLUSTER_SEQ_BITS) & WSL_CLUSTER_NODE_MAX;
}

/* --- the envelope ----------------------------------------------------------------------------
 * Every message wsluad publishes is a fixed 32-byte header, then the payload as is:
 *   bytes  0-3   magic 00 57 53 4C ("\0WSL": text from a backend does not start with NUL)
 *   byte   4     version, 1
 *   byte   5     opcode: 1 text, 2 binary
 *   bytes  6-7   0 (reserved)
 *   bytes  8-15  origin: the publishing node's instance id (64 random bits drawn at start),
 *                so a node recognises its own messages whatever its node number
 *   bytes 16-23  except: the connection id that must not get it, 0 for none
 *   bytes 24-31  target: the connection id of a direct message, 0 otherwise
 * all big-endian. A message without the magic is an external one (PUBLISH from anything else).
 * A message with the magic but a short or unknown header is dropped. */
#define WSL_ENVELOPE_SIZE    32
#define WSL_ENVELOPE_VERSION 1
#define WSL_ENVELOPE_MAGIC   "\0WSL"

typedef struct wsl_envelope {
    uint8_t opcode; /* 1 text, 2 binary */
    uint64_t origin;
    uint64_t except;
    uint64_t target;
} wsl_envelope;

void wsl_envelope_encode(uint8_t out[WSL_ENVELOPE_SIZE], const wsl_envelope *e);

/* 1: p starts with a valid envelope, decoded into *e (the payload is p + WSL_ENVELOPE_SIZE);
 * 0: no magic, an external message; -EBADMSG: the magic with a short header, an unknown
 * version or an opcode other than 1 and 2. */
int wsl_envelope_decode(const void *p, size_t n, wsl_envelope *e);

/* --- commands from scripts --------------------------------------------------------------------
 * The command link is shared by every script and reconnected at will, so commands that change
 * what the connection is (subscriber mode, RESP3, another database, no replies, replication)
 * would break it for everyone. Returns why such a command is refused, NULL when it is allowed.
 * Refused: SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and their UNSUBSCRIBEs, MONITOR, SYNC, PSYNC,
 * REPLCONF, QUIT, RESET, HELLO, SELECT, CLIENT REPLY; also an empty command. */
const char *wsl_cluster_command_refused(int argc, const char *const *argv, const size_t *lens);

#endif

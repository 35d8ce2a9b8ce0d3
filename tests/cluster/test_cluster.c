/* Integration test of the Redis link (src/cluster.c) against a real redis-server, which this
 * program starts on a free port (and a Unix socket) in a temporary directory and always stops
 * (atexit, fatal signals, and PR_SET_PDEATHSIG when this process dies any other way). Several
 * link instances (nodes) share one libuv loop: topics, broadcast, direct messages, except ids,
 * own messages, external publishers, binary payloads, order over 10,000 messages, unsubscribe,
 * command replies of every type, AUTH and SELECT, a Unix socket, Redis killed and restarted,
 * Redis absent at start, the queue bound under a stopped Redis, node-number conflicts, and
 * closing from inside a callback. Every wait is a condition with a deadline. */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cluster.h"
#include "error.h"
#include "log.h"
#include "test.h"

#define PREFIX "wsltest"

/* --- the redis-server under test ------------------------------------------------------------ */

static const char *redis_bin = "redis-server";
static char tmpdir[] = "/tmp/wsluad-cluster-XXXXXX";
static char sockpath[128], logpath[128], errpath[128];
static int redis_port;
static volatile pid_t redis_pid;
static redisContext *admin; /* a plain synchronous client: the test's own view of Redis */

static void redis_kill_now(void)
{
    pid_t p = redis_pid;
    if (p > 0) {
        kill(p, SIGKILL); /* also ends a stopped process */
        waitpid(p, NULL, 0);
        redis_pid = 0;
    }
}

/* Async-signal-safe: also run from on_fatal. */
static void cleanup(void)
{
    redis_kill_now();
    unlink(logpath);
    unlink(errpath);
    unlink(sockpath);
    rmdir(tmpdir);
}

static void on_fatal(int sig)
{
    cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        perror("free port");
        exit(2);
    }
    close(fd);
    return ntohs(sa.sin_port);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void admin_connect(void)
{
    if (admin) redisFree(admin);
    struct timeval tv = {2, 0};
    admin = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    if (!admin || admin->err) {
        fprintf(stderr, "cannot connect the admin client: %s\n", admin ? admin->errstr : "?");
        exit(2);
    }
    redisSetTimeout(admin, tv);
}

/* Starts redis-server on redis_port (and the Unix socket) and waits until it answers PING. */
static void redis_start(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", redis_port);
    pid_t parent = getpid();
    pid_t p = fork();
    if (p < 0) {
        perror("fork");
        exit(2);
    }
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* dies with the test, however the test dies */
        if (getppid() != parent) _exit(1);
        execlp(redis_bin, redis_bin, "--port", port, "--bind", "127.0.0.1", "--dir", tmpdir,
               "--save", "", "--appendonly", "no", "--daemonize", "no", "--unixsocket", sockpath,
               "--unixsocketperm", "700", "--logfile", logpath, (char *)NULL);
        fprintf(stderr, "cannot run %s: %s (install redis-server: scripts/setup --test)\n",
                redis_bin, strerror(errno));
        _exit(127);
    }
    redis_pid = p;
    double deadline = now_s() + 10;
    while (now_s() < deadline) {
        int st;
        if (waitpid(p, &st, WNOHANG) == p) {
            redis_pid = 0;
            fprintf(stderr, "redis-server exited at start (see %s)\n", logpath);
            exit(2);
        }
        struct timeval tv = {0, 200000};
        redisContext *rc = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
        if (rc && !rc->err) {
            redisReply *r = redisCommand(rc, "PING");
            bool ok = r && r->type == REDIS_REPLY_STATUS;
            if (r) freeReplyObject(r);
            redisFree(rc);
            if (ok) {
                admin_connect();
                return;
            }
        } else if (rc) {
            redisFree(rc);
        }
        sleep_ms(10); /* polling a condition (the server answers) with a deadline */
    }
    fprintf(stderr, "redis-server did not answer within 10 s\n");
    exit(2);
}

static redisReply *admin_cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(admin, fmt, ap);
    va_end(ap);
    if (!r) {
        fprintf(stderr, "admin command failed: %s\n", admin->errstr);
        exit(2);
    }
    return r;
}

static long long numsub(const char *channel)
{
    redisReply *r = admin_cmd("PUBSUB NUMSUB %s", channel);
    long long n = r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[1]->integer : -1;
    freeReplyObject(r);
    return n;
}

/* Subscribers of a channel whose name may hold any bytes. */
static long long numsub_b(const char *channel, size_t len)
{
    redisReply *r = admin_cmd("PUBSUB NUMSUB %b", channel, len);
    long long n = r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[1]->integer : -1;
    freeReplyObject(r);
    return n;
}

/* Clients blocked in BLPOP and the like, from INFO clients. */
static long long blocked_clients(void)
{
    redisReply *r = admin_cmd("INFO clients");
    const char *p = r->type == REDIS_REPLY_STRING ? strstr(r->str, "blocked_clients:") : NULL;
    long long n = p ? atoll(p + 16) : -1;
    freeReplyObject(r);
    return n;
}

static long long admin_publish(const char *channel, const void *data, size_t len)
{
    redisReply *r = admin_cmd("PUBLISH %s %b", channel, data, len);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* --- the loop and waiting ------------------------------------------------------------------ */

static uv_loop_t loop_storage, *loop = &loop_storage;
static uv_timer_t deadline_timer, tick_timer;
static bool deadline_hit;

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    deadline_hit = true;
}

static void on_tick(uv_timer_t *t)
{
    (void)t; /* wakes the loop so conditions on Redis itself are looked at again */
}

/* Runs the loop until cond holds or ms pass. */
#define WAIT(cond, ms)                                                                             \
    do {                                                                                           \
        deadline_hit = false;                                                                      \
        uv_timer_start(&deadline_timer, on_deadline, (ms), 0);                                     \
        uv_timer_start(&tick_timer, on_tick, 10, 10);                                              \
        while (!(cond) && !deadline_hit)                                                           \
            uv_run(loop, UV_RUN_ONCE);                                                             \
        uv_timer_stop(&deadline_timer);                                                            \
        uv_timer_stop(&tick_timer);                                                                \
    } while (0)

#define WAIT_CHECK(cond, ms)                                                                       \
    do {                                                                                           \
        WAIT(cond, ms);                                                                            \
        CHECK(cond);                                                                               \
    } while (0)

/* --- nodes: a link instance and what it reported --------------------------------------------- */

typedef struct msgrec {
    wsl_cluster_kind kind;
    char *topic;
    size_t tlen;
    uint64_t target, except;
    int opcode;
    char *data;
    size_t len;
    bool external;
} msgrec;

typedef struct node {
    const char *name;
    wsl_cluster *c;
    msgrec *msgs;
    size_t n, cap;
    int ups, downs;
    bool up;
    int node_changes;
    uint32_t old_node, new_node;
    bool close_on_message; /* closes its link from inside the message callback */
} node;

static void on_message(void *ud, const wsl_cluster_msg *m)
{
    node *n = ud;
    if (n->n == n->cap) {
        n->cap = n->cap ? n->cap * 2 : 64;
        n->msgs = realloc(n->msgs, n->cap * sizeof *n->msgs);
    }
    msgrec *r = &n->msgs[n->n++];
    r->kind = m->kind;
    r->tlen = m->topic_len;
    r->topic = malloc(m->topic_len + 1);
    if (m->topic_len) memcpy(r->topic, m->topic, m->topic_len);
    r->topic[m->topic_len] = 0;
    r->target = m->target;
    r->except = m->except;
    r->opcode = m->opcode;
    r->len = m->len;
    r->data = malloc(m->len + 1);
    if (m->len) memcpy(r->data, m->data, m->len);
    r->data[m->len] = 0;
    r->external = m->external;
    if (n->close_on_message && n->c) {
        wsl_cluster_close(n->c);
        n->c = NULL;
    }
}

static void on_state(void *ud, bool up)
{
    node *n = ud;
    n->up = up;
    if (up)
        n->ups++;
    else
        n->downs++;
}

static void on_node(void *ud, uint32_t old_node, uint32_t new_node)
{
    node *n = ud;
    n->node_changes++;
    n->old_node = old_node;
    n->new_node = new_node;
}

static const wsl_cluster_events events = {on_message, on_state, on_node};

static char url_tcp[128], url_unix[200];

static int node_open(node *n, const char *name, const char *url, size_t max_queue,
                     uint32_t want_node)
{
    memset(n, 0, sizeof *n);
    n->name = name;
    wsl_cluster_config cfg = {
        .url = url, .prefix = PREFIX, .max_queue = max_queue, .node = want_node};
    return wsl_cluster_new(&n->c, loop, &cfg, &events, n);
}

static void node_forget(node *n)
{
    for (size_t i = 0; i < n->n; i++) {
        free(n->msgs[i].topic);
        free(n->msgs[i].data);
    }
    free(n->msgs);
    n->msgs = NULL;
    n->n = n->cap = 0;
}

static void node_close(node *n)
{
    if (n->c) wsl_cluster_close(n->c);
    n->c = NULL;
    node_forget(n);
}

static wsl_cluster_counters stats(const node *n)
{
    wsl_cluster_counters st;
    wsl_cluster_stats(n->c, &st);
    return st;
}

/* The first message from index `from` on whose payload is `data`, or NULL. */
static const msgrec *find(const node *n, size_t from, const char *data)
{
    for (size_t i = from; i < n->n; i++)
        if (n->msgs[i].len == strlen(data) && memcmp(n->msgs[i].data, data, n->msgs[i].len) == 0)
            return &n->msgs[i];
    return NULL;
}

static int publish(node *n, wsl_cluster_kind kind, const char *topic, uint64_t target,
                   uint64_t except, int opcode, const void *data, size_t len)
{
    wsl_cluster_msg m = {.kind = kind,
                         .topic = topic,
                         .topic_len = topic ? strlen(topic) : 0,
                         .target = target,
                         .except = except,
                         .opcode = opcode,
                         .data = data,
                         .len = len};
    return wsl_cluster_publish(n->c, &m);
}

static int publish_text(node *n, wsl_cluster_kind kind, const char *topic, const char *text)
{
    return publish(n, kind, topic, 0, 0, 1, text, strlen(text));
}

static bool all_up(node *const *ns, int k)
{
    for (int i = 0; i < k; i++)
        if (!ns[i]->up) return false;
    return true;
}

static bool all_down(node *const *ns, int k)
{
    for (int i = 0; i < k; i++)
        if (ns[i]->up) return false;
    return true;
}

/* --- command replies ------------------------------------------------------------------------ */

typedef struct creply {
    int calls;
    int err;
    int type;
    long long integer;
    char str[128];
    size_t len;
    size_t elements;
    char el[4][64];
    size_t ellen[4];
    int eltype[4];
} creply;

static void on_reply(void *arg, const struct redisReply *r, int err)
{
    creply *c = arg;
    c->calls++;
    c->err = err;
    c->type = r ? r->type : 0;
    if (!r) return;
    c->integer = r->integer;
    if (r->str) {
        c->len = r->len < sizeof c->str ? r->len : sizeof c->str - 1;
        memcpy(c->str, r->str, c->len);
        c->str[c->len] = 0;
    }
    c->elements = r->elements;
    for (size_t i = 0; i < r->elements && i < 4; i++) {
        const redisReply *e = r->element[i];
        c->eltype[i] = e->type;
        c->ellen[i] = e->len < 64 ? e->len : 63;
        if (e->str) memcpy(c->el[i], e->str, c->ellen[i]);
    }
}

static int command(node *n, creply *out, int argc, ...)
{
    const char *argv[8];
    size_t lens[8];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++) {
        argv[i] = va_arg(ap, const char *);
        lens[i] = strlen(argv[i]);
    }
    va_end(ap);
    if (out) memset(out, 0, sizeof *out);
    return wsl_cluster_command(n->c, argc, argv, lens, out ? on_reply : NULL, out);
}

/* --- the tests ------------------------------------------------------------------------------ */

static node A, B, C;
static node *const abc[3] = {&A, &B, &C};

static char channel[200];
static const char *chan(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *chan(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(channel, sizeof channel, fmt, ap);
    va_end(ap);
    return channel;
}

static void test_start(void)
{
    TEST_CONTEXT("start");
    CHECK_EQ(node_open(&A, "A", url_tcp, 0, 0), 0);
    CHECK_EQ(node_open(&B, "B", url_tcp, 0, 0), 0);
    CHECK_EQ(node_open(&C, "C", url_tcp, 0, 0), 0);
    CHECK(!wsl_cluster_up(A.c)); /* starts down, whatever Redis does */
    WAIT_CHECK(all_up(abc, 3), 5000);
    CHECK_EQ(A.ups, 1);
    CHECK_EQ(A.downs, 0);
    CHECK(wsl_cluster_up(A.c));
    uint32_t na = wsl_cluster_node(A.c), nb = wsl_cluster_node(B.c), nc = wsl_cluster_node(C.c);
    CHECK(na >= 1 && na <= WSL_CLUSTER_NODE_MAX);
    CHECK(na != nb && nb != nc && na != nc);
    CHECK(wsl_cluster_owns(A.c, wsl_cluster_id(na, 5)));
    CHECK(!wsl_cluster_owns(A.c, wsl_cluster_id(nb, 5)));
    CHECK(!wsl_cluster_owns(A.c, 5));

    /* Each node claims its number: the key holds its pid and expires. */
    WAIT_CHECK(stats(&A).node_claimed && stats(&B).node_claimed && stats(&C).node_claimed, 3000);
    redisReply *r = admin_cmd("GET %s", chan(PREFIX ":node:%u", na));
    char pid[32];
    snprintf(pid, sizeof pid, "pid=%d", (int)getpid());
    CHECK(r->type == REDIS_REPLY_STRING && strstr(r->str, pid));
    freeReplyObject(r);
    r = admin_cmd("TTL %s", channel);
    CHECK(r->type == REDIS_REPLY_INTEGER && r->integer > 0 && r->integer <= WSL_CLUSTER_NODE_TTL);
    freeReplyObject(r);

    /* Subscribed at link-up: broadcast and its node channel. */
    CHECK_EQ(numsub(PREFIX ":broadcast"), 3);
    CHECK_EQ(numsub(chan(PREFIX ":node:%u", nb)), 1);
}

static void test_topics(void)
{
    TEST_CONTEXT("topics");
    CHECK_EQ(wsl_cluster_subscribe(A.c, "room", 4), 0);
    CHECK_EQ(wsl_cluster_subscribe(A.c, "room", 4), 0); /* idempotent */
    CHECK_EQ(wsl_cluster_subscribe(B.c, "room", 4), 0);
    WAIT_CHECK(numsub(PREFIX ":topic:room") == 2, 3000);

    size_t b0 = B.n, a0 = A.n, c0 = C.n;
    CHECK_EQ(publish_text(&A, WSL_CLUSTER_TOPIC, "room", "hello"), 0);
    WAIT_CHECK(B.n == b0 + 1, 3000);
    const msgrec *m = find(&B, b0, "hello");
    CHECK(m);
    if (m) {
        CHECK_EQ(m->kind, WSL_CLUSTER_TOPIC);
        CHECK_STR(m->topic, "room");
        CHECK_EQ(m->opcode, 1);
        CHECK_EQ(m->except, 0);
        CHECK_EQ(m->target, 0);
        CHECK(!m->external);
    }
    /* A's own message comes back from Redis and is skipped: A sees B's marker, sent after, and
     * nothing before it. */
    WAIT_CHECK(stats(&A).own == 1, 3000);
    CHECK_EQ(publish_text(&B, WSL_CLUSTER_TOPIC, "room", "marker"), 0);
    WAIT_CHECK(find(&A, a0, "marker") != NULL, 3000);
    CHECK_EQ(A.n, a0 + 1);
    CHECK(find(&A, a0, "hello") == NULL);
    CHECK_EQ(C.n, c0); /* C holds no topic */

    /* except id, binary payloads, an empty payload, a large one, a binary topic name. */
    b0 = B.n;
    CHECK_EQ(publish(&A, WSL_CLUSTER_TOPIC, "room", 0, 12345, 1, "not you", 7), 0);
    WAIT_CHECK(find(&B, b0, "not you") != NULL, 3000);
    m = find(&B, b0, "not you");
    if (m) CHECK_EQ(m->except, 12345);

    unsigned char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (unsigned char)(255 - i);
    b0 = B.n;
    CHECK_EQ(publish(&A, WSL_CLUSTER_TOPIC, "room", 0, 0, 2, bin, sizeof bin), 0);
    CHECK_EQ(publish(&A, WSL_CLUSTER_TOPIC, "room", 0, 0, 1, "", 0), 0);
    size_t big_len = 3u << 20;
    unsigned char *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (unsigned char)(i * 7 + (i >> 11));
    CHECK_EQ(publish(&A, WSL_CLUSTER_TOPIC, "room", 0, 0, 2, big, big_len), 0);
    WAIT_CHECK(B.n == b0 + 3, 5000);
    if (B.n == b0 + 3) {
        CHECK_EQ(B.msgs[b0].opcode, 2);
        CHECK_EQ(B.msgs[b0].len, 256);
        CHECK(memcmp(B.msgs[b0].data, bin, 256) == 0);
        CHECK_EQ(B.msgs[b0 + 1].len, 0);
        CHECK_EQ(B.msgs[b0 + 1].opcode, 1);
        CHECK_EQ(B.msgs[b0 + 2].len, big_len);
        CHECK(memcmp(B.msgs[b0 + 2].data, big, big_len) == 0);
    }
    free(big);

    static const char odd[] = "a:b\0c", odd_channel[] = PREFIX ":topic:a:b\0c";
    CHECK_EQ(wsl_cluster_subscribe(B.c, odd, 5), 0);
    WAIT_CHECK(numsub_b(odd_channel, sizeof odd_channel - 1) == 1, 3000);
    CHECK_EQ(publish(&A, WSL_CLUSTER_TOPIC, NULL, 0, 0, 1, "x", 0), -EINVAL); /* no topic */
    wsl_cluster_msg mm = {.kind = WSL_CLUSTER_TOPIC,
                          .topic = odd,
                          .topic_len = 5,
                          .opcode = 1,
                          .data = "odd",
                          .len = 3};
    b0 = B.n;
    CHECK_EQ(wsl_cluster_publish(A.c, &mm), 0);
    WAIT_CHECK(find(&B, b0, "odd") != NULL, 3000);
    m = find(&B, b0, "odd");
    if (m) CHECK(m->tlen == 5 && memcmp(m->topic, odd, 5) == 0);
    CHECK_EQ(wsl_cluster_unsubscribe(B.c, odd, 5), 0);

    /* Bad arguments. */
    CHECK_EQ(publish(&A, WSL_CLUSTER_TOPIC, "room", 0, 0, 3, "x", 1), -EINVAL);
    CHECK_EQ(publish(&A, 0, "room", 0, 0, 1, "x", 1), -EINVAL);
    CHECK_EQ(publish(&A, WSL_CLUSTER_DIRECT, NULL, 5, 0, 1, "x", 1), -EINVAL); /* node 0 */
}

static void test_broadcast_direct(void)
{
    TEST_CONTEXT("broadcast and direct");
    size_t a0 = A.n, b0 = B.n, c0 = C.n;
    uint64_t own0 = stats(&C).own;
    CHECK_EQ(publish(&C, WSL_CLUSTER_BROADCAST, NULL, 0, 77, 1, "everyone", 8), 0);
    WAIT_CHECK(find(&A, a0, "everyone") && find(&B, b0, "everyone"), 3000);
    const msgrec *m = find(&A, a0, "everyone");
    if (m) {
        CHECK_EQ(m->kind, WSL_CLUSTER_BROADCAST);
        CHECK_EQ(m->except, 77);
        CHECK_EQ(m->tlen, 0);
    }
    WAIT_CHECK(stats(&C).own == own0 + 1, 3000);
    CHECK_EQ(C.n, c0);

    /* A private message to connection 42 of B: only B gets it, with the target. */
    uint64_t to = wsl_cluster_id(wsl_cluster_node(B.c), 42);
    a0 = A.n, b0 = B.n, c0 = C.n;
    CHECK_EQ(publish(&A, WSL_CLUSTER_DIRECT, NULL, to, 0, 1, "psst", 4), 0);
    WAIT_CHECK(find(&B, b0, "psst") != NULL, 3000);
    m = find(&B, b0, "psst");
    if (m) {
        CHECK_EQ(m->kind, WSL_CLUSTER_DIRECT);
        CHECK(m->target == to);
    }
    /* A marker after it reaches everyone; by then C would have had the private one too. */
    CHECK_EQ(publish_text(&B, WSL_CLUSTER_BROADCAST, NULL, "m1"), 0);
    WAIT_CHECK(find(&C, c0, "m1") && find(&A, a0, "m1"), 3000);
    CHECK(find(&C, c0, "psst") == NULL);
    CHECK(find(&A, a0, "psst") == NULL);
}

static void test_external(void)
{
    TEST_CONTEXT("external publishers");
    size_t a0 = A.n, b0 = B.n, c0 = C.n;
    CHECK_EQ(admin_publish(PREFIX ":topic:room", "h\xc3\xa9llo", 6), 2);
    WAIT_CHECK(find(&A, a0, "h\xc3\xa9llo") && find(&B, b0, "h\xc3\xa9llo"), 3000);
    const msgrec *m = find(&B, b0, "h\xc3\xa9llo");
    if (m) {
        CHECK(m->external);
        CHECK_EQ(m->opcode, 1);
        CHECK_EQ(m->kind, WSL_CLUSTER_TOPIC);
        CHECK_STR(m->topic, "room");
    }
    b0 = B.n;
    CHECK_EQ(admin_publish(PREFIX ":topic:room", "\xff\xfe\x00z", 4), 2);
    WAIT_CHECK(B.n == b0 + 1, 3000);
    if (B.n == b0 + 1) {
        CHECK(B.msgs[b0].external);
        CHECK_EQ(B.msgs[b0].opcode, 2);
        CHECK(B.msgs[b0].len == 4 && memcmp(B.msgs[b0].data, "\xff\xfe\x00z", 4) == 0);
    }
    CHECK_EQ(admin_publish(PREFIX ":broadcast", "ext-all", 7), 3);
    WAIT_CHECK(find(&A, a0, "ext-all") && find(&B, b0, "ext-all") && find(&C, c0, "ext-all"), 3000);
    m = find(&C, c0, "ext-all");
    if (m) CHECK(m->external && m->kind == WSL_CLUSTER_BROADCAST && m->opcode == 1);

    /* The documented envelope, written by hand: taken as a wsluad message from another node. */
    uint8_t env[WSL_ENVELOPE_SIZE + 5];
    wsl_envelope e = {.opcode = 1, .origin = 1, .except = 9, .target = 0};
    wsl_envelope_encode(env, &e);
    memcpy(env + WSL_ENVELOPE_SIZE, "wired", 5);
    b0 = B.n;
    admin_publish(PREFIX ":topic:room", env, sizeof env);
    WAIT_CHECK(find(&B, b0, "wired") != NULL, 3000);
    m = find(&B, b0, "wired");
    if (m) CHECK(!m->external && m->except == 9 && m->opcode == 1);

    /* Dropped and counted: no envelope on a node channel, a broken envelope. */
    uint64_t inv = stats(&B).invalid;
    admin_publish(chan(PREFIX ":node:%u", wsl_cluster_node(B.c)), "raw", 3);
    admin_publish(PREFIX ":topic:room", "\0WSL\x01", 5);
    env[4] = 9; /* unknown version */
    admin_publish(PREFIX ":broadcast", env, sizeof env);
    WAIT_CHECK(stats(&B).invalid == inv + 3, 3000);
    /* Nothing delivered for them: the next message is the marker. */
    b0 = B.n;
    admin_publish(PREFIX ":broadcast", "m2", 2);
    WAIT_CHECK(find(&B, b0, "m2") != NULL, 3000);
    CHECK_EQ(B.n, b0 + 1);
}

static void test_order(void)
{
    TEST_CONTEXT("order");
    enum { N = 10000 };
    size_t b0 = B.n;
    int fails = 0;
    for (int i = 0; i < N; i++) {
        char t[16];
        int n = snprintf(t, sizeof t, "%d", i);
        fails += publish(&A, WSL_CLUSTER_TOPIC, "room", 0, 0, 1, t, (size_t)n) != 0;
    }
    CHECK_EQ(fails, 0);
    WAIT_CHECK(B.n >= b0 + N, 10000);
    CHECK_EQ(B.n, b0 + N);
    int bad = 0;
    for (int i = 0; i < N && b0 + (size_t)i < B.n; i++)
        bad += atoi(B.msgs[b0 + (size_t)i].data) != i;
    CHECK_EQ(bad, 0);
    WAIT_CHECK(stats(&A).pub_queued == 0, 3000);
    node_forget(&B); /* 10,000 records */
}

static void test_unsubscribe(void)
{
    TEST_CONTEXT("unsubscribe");
    size_t b0 = B.n;
    CHECK_EQ(wsl_cluster_unsubscribe(B.c, "room", 4), 0);
    CHECK_EQ(wsl_cluster_unsubscribe(B.c, "room", 4), 0); /* idempotent */
    CHECK_EQ(wsl_cluster_unsubscribe(B.c, "never", 5), 0);
    /* Redis still has B subscribed (the UNSUBSCRIBE has not left yet): the link filters. */
    CHECK_EQ(admin_publish(PREFIX ":topic:room", "late", 4), 2);
    WAIT_CHECK(numsub(PREFIX ":topic:room") == 1, 3000);
    uint64_t acked = stats(&A).acked;
    CHECK_EQ(publish_text(&A, WSL_CLUSTER_TOPIC, "room", "after"), 0);
    WAIT_CHECK(stats(&A).acked == acked + 1, 3000);
    admin_publish(PREFIX ":broadcast", "m3", 2);
    WAIT_CHECK(find(&B, b0, "m3") != NULL, 3000);
    CHECK(find(&B, b0, "late") == NULL);
    CHECK(find(&B, b0, "after") == NULL);
    CHECK_EQ(B.n, b0 + 1);
}

static void test_commands(void)
{
    TEST_CONTEXT("commands");
    creply set, get, nil, incr, push, range, bogus, sub;
    CHECK_EQ(command(&A, &set, 3, "SET", "wsltest:k", "v"), 0);
    CHECK_EQ(command(&A, &get, 2, "GET", "wsltest:k"), 0);
    CHECK_EQ(command(&A, &nil, 2, "GET", "wsltest:missing"), 0);
    CHECK_EQ(command(&A, &incr, 2, "INCR", "wsltest:n"), 0);
    const char *pargv[4] = {"RPUSH", "wsltest:l", "a", "b\0c"};
    size_t plens[4] = {5, 9, 1, 3};
    memset(&push, 0, sizeof push);
    CHECK_EQ(wsl_cluster_command(A.c, 4, pargv, plens, on_reply, &push), 0);
    CHECK_EQ(command(&A, &range, 4, "LRANGE", "wsltest:l", "0", "-1"), 0);
    CHECK_EQ(command(&A, &bogus, 1, "NOSUCHCOMMAND"), 0);
    CHECK_EQ(command(&A, &sub, 2, "SUBSCRIBE", "x"), -EINVAL);
    CHECK_EQ(command(&A, &sub, 2, "select", "1"), -EINVAL);
    CHECK_EQ(command(&A, NULL, 3, "SET", "wsltest:nocb", "1"), 0);
    CHECK_EQ(set.calls, 0); /* never from inside wsl_cluster_command */
    WAIT_CHECK(bogus.calls == 1, 3000);
    WAIT(false, 50); /* extra turns: a second call would show */
    CHECK_EQ(set.calls, 1);
    CHECK_EQ(set.err, 0);
    CHECK_EQ(set.type, REDIS_REPLY_STATUS);
    CHECK_STR(set.str, "OK");
    CHECK_EQ(get.type, REDIS_REPLY_STRING);
    CHECK_STR(get.str, "v");
    CHECK_EQ(nil.type, REDIS_REPLY_NIL);
    CHECK_EQ(nil.calls, 1);
    CHECK_EQ(incr.type, REDIS_REPLY_INTEGER);
    CHECK_EQ(incr.integer, 1);
    CHECK_EQ(push.type, REDIS_REPLY_INTEGER);
    CHECK_EQ(push.integer, 2);
    CHECK_EQ(range.type, REDIS_REPLY_ARRAY);
    CHECK_EQ(range.elements, 2);
    CHECK_EQ(range.eltype[1], REDIS_REPLY_STRING);
    CHECK(range.ellen[1] == 3 && memcmp(range.el[1], "b\0c", 3) == 0);
    CHECK_EQ(bogus.calls, 1);
    CHECK_EQ(bogus.err, 0);
    CHECK_EQ(bogus.type, REDIS_REPLY_ERROR);
    CHECK(strstr(bogus.str, "unknown command"));
    CHECK_EQ(sub.calls, 0);
    redisReply *r = admin_cmd("GET wsltest:nocb");
    CHECK(r->type == REDIS_REPLY_STRING && strcmp(r->str, "1") == 0);
    freeReplyObject(r);

    /* A blocking command holds up cmd only: a publish gets through meanwhile. */
    creply blpop;
    CHECK_EQ(command(&A, &blpop, 3, "BLPOP", "wsltest:q", "0"), 0);
    size_t b0 = B.n;
    WAIT_CHECK(blocked_clients() == 1, 3000);
    CHECK_EQ(publish_text(&A, WSL_CLUSTER_BROADCAST, NULL, "during blpop"), 0);
    WAIT_CHECK(find(&B, b0, "during blpop") != NULL, 3000);
    CHECK_EQ(blpop.calls, 0);
    r = admin_cmd("RPUSH wsltest:q item");
    freeReplyObject(r);
    WAIT_CHECK(blpop.calls == 1, 3000);
    CHECK_EQ(blpop.type, REDIS_REPLY_ARRAY);
    CHECK_EQ(blpop.elements, 2);
    CHECK(blpop.ellen[1] == 4 && memcmp(blpop.el[1], "item", 4) == 0);
    CHECK_EQ(stats(&A).cmd_queued, 0);
}

/* A user with a password (ACL) and database 3, and the Unix socket. */
static void test_auth_select_unix(void)
{
    TEST_CONTEXT("auth, select, unix socket");
    redisReply *r = admin_cmd("ACL SETUSER wsl on >hunter2 ~* &* +@all");
    CHECK(r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    char url[200];
    snprintf(url, sizeof url, "redis://wsl:hunter2@127.0.0.1:%d/3", redis_port);
    node I, J, U;
    CHECK_EQ(node_open(&I, "I", url, 0, 0), 0);
    snprintf(url, sizeof url, "redis://wsl:wrong@127.0.0.1:%d", redis_port);
    CHECK_EQ(node_open(&J, "J", url, 0, 0), 0);
    CHECK_EQ(node_open(&U, "U", url_unix, 0, 0), 0);
    node *iu[2] = {&I, &U};
    WAIT_CHECK(all_up(iu, 2), 5000);
    creply who, set;
    CHECK_EQ(command(&I, &who, 2, "ACL", "WHOAMI"), 0);
    CHECK_EQ(command(&I, &set, 3, "SET", "wsltest:db3", "yes"), 0);
    WAIT_CHECK(set.calls == 1, 3000);
    CHECK_STR(who.str, "wsl");
    r = admin_cmd("SELECT 3");
    freeReplyObject(r);
    r = admin_cmd("GET wsltest:db3");
    CHECK(r->type == REDIS_REPLY_STRING && strcmp(r->str, "yes") == 0);
    freeReplyObject(r);
    r = admin_cmd("SELECT 0");
    freeReplyObject(r);

    /* Pub/sub ignores the database: I and U talk with A. */
    size_t a0 = A.n, u0 = U.n;
    CHECK_EQ(publish_text(&I, WSL_CLUSTER_BROADCAST, NULL, "from I"), 0);
    WAIT_CHECK(find(&A, a0, "from I") && find(&U, u0, "from I"), 3000);
    CHECK(!J.up);
    CHECK_EQ(J.ups, 0);
    CHECK_EQ(command(&J, NULL, 1, "PING"), WSL_EDOWN);
    node_close(&I);
    node_close(&J);
    node_close(&U);
}

static void test_node_conflict(void)
{
    TEST_CONTEXT("node conflict");
    uint32_t na = wsl_cluster_node(A.c);
    node F;
    CHECK_EQ(node_open(&F, "F", url_tcp, 0, na), 0);
    CHECK_EQ(wsl_cluster_node(F.c), na); /* used at once, before Redis answers */
    WAIT_CHECK(F.node_changes == 1, 5000);
    CHECK_EQ(F.old_node, na);
    CHECK(F.new_node != na && F.new_node >= 1);
    CHECK_EQ(wsl_cluster_node(F.c), F.new_node);
    CHECK(wsl_cluster_owns(F.c, wsl_cluster_id(na, 1))); /* ids it gave out before */
    CHECK(wsl_cluster_owns(F.c, wsl_cluster_id(F.new_node, 1)));
    WAIT_CHECK(stats(&F).node_claimed, 3000);
    CHECK_EQ(wsl_cluster_node(A.c), na); /* the holder keeps its number */
    CHECK_EQ(A.node_changes, 0);
    WAIT_CHECK(numsub(chan(PREFIX ":node:%u", na)) == 2, 3000);
    /* Sharing a number does not make F's messages A's own. */
    size_t a0 = A.n;
    CHECK_EQ(publish_text(&F, WSL_CLUSTER_BROADCAST, NULL, "from F"), 0);
    WAIT_CHECK(find(&A, a0, "from F") != NULL, 3000);
    node_close(&F);
}

/* Redis stopped (SIGSTOP): it reads nothing, so replies stop and the bound is reached. */
static void test_queue_bound(void)
{
    TEST_CONTEXT("queue bound");
    node E;
    CHECK_EQ(node_open(&E, "E", url_tcp, 64 * 1024, 0), 0);
    node *e1[1] = {&E};
    WAIT_CHECK(all_up(e1, 1), 5000);
    CHECK_EQ(wsl_cluster_subscribe(B.c, "bound", 5), 0);
    WAIT_CHECK(numsub(PREFIX ":topic:bound") == 1, 3000);

    /* Log lines go to a file for a while, to count the warnings. */
    fflush(stderr);
    int saved = dup(2), fd = open(errpath, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND, 0600);
    dup2(fd, 2);
    close(fd);

    kill(redis_pid, SIGSTOP);
    char payload[1024];
    int accepted = 0, full = 0, other = 0, cmd_ok = 0, cmd_full = 0;
    creply creps[200];
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(payload, sizeof payload, "%d ", i);
        memset(payload + n, 'x', sizeof payload - (size_t)n);
        int r = publish(&E, WSL_CLUSTER_TOPIC, "bound", 0, 0, 1, payload, sizeof payload);
        if (r == 0 && full == 0)
            accepted++;
        else if (r == -ENOBUFS)
            full++;
        else
            other++;
        if (i % 10 == 0) WAIT(false, 0); /* let hiredis write: the kernel takes some */
    }
    for (int i = 0; i < 200; i++) {
        const char *argv[3] = {"SET", "wsltest:big", payload};
        size_t lens[3] = {3, 11, sizeof payload};
        memset(&creps[i], 0, sizeof creps[i]);
        int r = wsl_cluster_command(E.c, 3, argv, lens, on_reply, &creps[i]);
        if (r == 0 && cmd_full == 0)
            cmd_ok++;
        else if (r == -ENOBUFS)
            cmd_full++;
        else
            other++;
    }
    wsl_cluster_counters st = stats(&E);
    CHECK_EQ(other, 0);
    CHECK(accepted > 10 && accepted < 64);
    CHECK_EQ(full, 2000 - accepted);
    CHECK_EQ(st.dropped_full, (uint64_t)full);
    CHECK_EQ(st.dropped, (uint64_t)full);
    CHECK(st.pub_queued <= 64 * 1024);
    CHECK(cmd_ok > 10 && cmd_ok < 64);
    CHECK_EQ(cmd_full, 200 - cmd_ok);
    CHECK(st.cmd_queued <= 64 * 1024);

    kill(redis_pid, SIGCONT);
    size_t b0 = B.n;
    WAIT_CHECK(stats(&E).acked == (uint64_t)accepted && B.n >= b0 + (size_t)accepted, 10000);
    CHECK_EQ(B.n, b0 + (size_t)accepted);
    int bad = 0;
    for (int i = 0; i < accepted && b0 + (size_t)i < B.n; i++)
        bad += atoi(B.msgs[b0 + (size_t)i].data) != i;
    CHECK_EQ(bad, 0);
    int cmd_replies = 0;
    WAIT(creps[cmd_ok - 1].calls == 1, 5000);
    for (int i = 0; i < 200; i++)
        cmd_replies += creps[i].calls;
    CHECK_EQ(cmd_replies, cmd_ok);
    CHECK_EQ(stats(&E).pub_queued, 0);
    CHECK_EQ(stats(&E).cmd_queued, 0);
    CHECK_EQ(publish_text(&E, WSL_CLUSTER_TOPIC, "bound", "flowing"), 0);

    /* One warning at the first drop, then one summary line after the interval, not one per
     * drop. */
    FILE *f;
    char line[1024];
    int first = 0, summary = 0;
    WAIT(false, WSL_CLUSTER_DROP_LOG_MS + 500);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    f = fopen(errpath, "r");
    while (f && fgets(line, sizeof line, f)) {
        if (strstr(line, "dropped a publish")) first++;
        char want[64];
        snprintf(want, sizeof want, "dropped %d publishes", full - 1);
        if (strstr(line, want) && strstr(line, "queue full")) summary++;
    }
    if (f) fclose(f);
    CHECK_EQ(first, 1);
    CHECK_EQ(summary, 1);
    CHECK_EQ(wsl_cluster_unsubscribe(B.c, "bound", 5), 0);
    node_close(&E);
}

static creply inflight;

static void test_restart(void)
{
    TEST_CONTEXT("redis killed and restarted");
    uint32_t na = wsl_cluster_node(A.c);
    CHECK_EQ(command(&A, &inflight, 3, "BLPOP", "wsltest:never", "0"), 0);
    WAIT_CHECK(blocked_clients() == 1, 3000);
    redis_kill_now();
    WAIT_CHECK(all_down(abc, 3), 5000);
    CHECK_EQ(A.downs, 1);
    CHECK_EQ(inflight.calls, 1); /* the command in flight fails, once */
    CHECK(inflight.err == WSL_EDOWN);
    creply late;
    CHECK_EQ(command(&A, &late, 2, "GET", "x"), WSL_EDOWN); /* at once */
    uint64_t dd = stats(&A).dropped_down;
    CHECK_EQ(publish_text(&A, WSL_CLUSTER_BROADCAST, NULL, "lost"), WSL_EDOWN);
    CHECK_EQ(stats(&A).dropped_down, dd + 1);

    /* Subscribed while Redis is away: restored with the rest. And a node that starts while
     * Redis is away, through a name (resolved off the loop; localhost may give ::1 first,
     * where nothing listens). */
    CHECK_EQ(wsl_cluster_subscribe(B.c, "while-down", 10), 0);
    node D;
    char url[128];
    snprintf(url, sizeof url, "redis://localhost:%d", redis_port);
    CHECK_EQ(node_open(&D, "D", url, 0, 0), 0);
    CHECK_EQ(wsl_cluster_subscribe(D.c, "late", 4), 0);
    CHECK_EQ(command(&D, NULL, 1, "PING"), WSL_EDOWN);
    CHECK_EQ(publish_text(&D, WSL_CLUSTER_BROADCAST, NULL, "x"), WSL_EDOWN);
    WAIT(false, 1500); /* several failed attempts: the back-off grows */
    CHECK(!D.up);

    redis_start();
    double t0 = now_s();
    node *all[4] = {&A, &B, &C, &D};
    WAIT_CHECK(all_up(all, 4), 7000);
    CHECK_EQ(A.ups, 2);
    CHECK_EQ(D.ups, 1);
    CHECK_EQ(numsub(PREFIX ":broadcast"), 4);
    CHECK_EQ(numsub(PREFIX ":topic:room"), 1); /* A's; B left it */
    CHECK_EQ(numsub(PREFIX ":topic:while-down"), 1);
    CHECK_EQ(numsub(PREFIX ":topic:late"), 1);
    CHECK_EQ(numsub(chan(PREFIX ":node:%u", na)), 1);
    size_t b0 = B.n, d0 = D.n;
    CHECK_EQ(publish_text(&A, WSL_CLUSTER_TOPIC, "while-down", "back"), 0);
    CHECK_EQ(publish_text(&C, WSL_CLUSTER_TOPIC, "late", "hi D"), 0);
    WAIT_CHECK(find(&B, b0, "back") && find(&D, d0, "hi D"), 3000);
    double took = now_s() - t0;
    printf("delivery resumed %.2f s after Redis came back\n", took);
    CHECK(took < 6.0);
    /* The keys went with the old Redis: claimed again. */
    WAIT_CHECK(stats(&A).node_claimed && stats(&D).node_claimed, 3000);
    redisReply *r = admin_cmd("EXISTS %s", chan(PREFIX ":node:%u", na));
    CHECK_EQ(r->integer, 1);
    freeReplyObject(r);
    CHECK(stats(&A).reconnects >= 3);
    CHECK_EQ(wsl_cluster_node(A.c), na);
    node_close(&D);
}

static void test_close(void)
{
    TEST_CONTEXT("close");
    /* From inside its own message callback. */
    node G;
    CHECK_EQ(node_open(&G, "G", url_tcp, 0, 0), 0);
    node *g1[1] = {&G};
    WAIT_CHECK(all_up(g1, 1), 5000);
    G.close_on_message = true;
    admin_publish(PREFIX ":broadcast", "one", 3);
    admin_publish(PREFIX ":broadcast", "two", 3);
    WAIT_CHECK(G.c == NULL, 3000);
    WAIT(false, 100);
    CHECK_EQ(G.n, 1); /* nothing after the close */
    node_forget(&G);

    /* With a command in flight: its callback runs before close returns, with ECLOSED. */
    node H;
    CHECK_EQ(node_open(&H, "H", url_tcp, 0, 0), 0);
    node *h1[1] = {&H};
    WAIT_CHECK(all_up(h1, 1), 5000);
    creply blpop;
    CHECK_EQ(command(&H, &blpop, 3, "BLPOP", "wsltest:never", "0"), 0);
    WAIT_CHECK(blocked_clients() == 1, 3000);
    int downs = H.downs;
    wsl_cluster_close(H.c);
    H.c = NULL;
    CHECK_EQ(blpop.calls, 1);
    CHECK(blpop.err == WSL_ECLOSED);
    WAIT(false, 100);
    CHECK_EQ(H.downs, downs); /* no event after close */

    /* Nothing listens there: over IPv6 a refused connect arrives as a poll error, which must
     * end the attempt at once (not at the 5 s deadline), and the back-off starts at 100 ms.
     * Then closing a node that never reached Redis. */
    node K;
    char url[64];
    snprintf(url, sizeof url, "redis://[::1]:%d", free_port());
    CHECK_EQ(node_open(&K, "K", url, 0, 0), 0);
    WAIT_CHECK(stats(&K).failures >= 6, 2000);
    CHECK(!K.up);
    node_close(&K);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (getenv("REDIS_SERVER")) redis_bin = getenv("REDIS_SERVER");
    if (getenv("WSL_TEST_DEBUG")) wsl_log_set_level(WSL_LOG_DEBUG);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(sockpath, sizeof sockpath, "%s/redis.sock", tmpdir);
    snprintf(logpath, sizeof logpath, "%s/redis.log", tmpdir);
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", tmpdir);
    atexit(cleanup);
    int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
        signal(sigs[i], on_fatal);

    redis_port = free_port();
    snprintf(url_tcp, sizeof url_tcp, "redis://127.0.0.1:%d", redis_port);
    snprintf(url_unix, sizeof url_unix, "unix:%s", sockpath);
    redis_start();

    uv_loop_init(loop);
    uv_timer_init(loop, &deadline_timer);
    uv_timer_init(loop, &tick_timer);

    double t0 = now_s();
    test_start();
    test_topics();
    test_broadcast_direct();
    test_external();
    test_order();
    test_unsubscribe();
    test_commands();
    test_auth_select_unix();
    test_node_conflict();
    test_queue_bound();
    test_restart();
    test_close();

    TEST_CONTEXT("teardown");
    node_close(&A);
    node_close(&B);
    node_close(&C);
    uv_close((uv_handle_t *)&deadline_timer, NULL);
    uv_close((uv_handle_t *)&tick_timer, NULL);
    uv_run(loop, UV_RUN_DEFAULT); /* until every handle is closed and the links are freed */
    CHECK_EQ(uv_loop_close(loop), 0);
    redisFree(admin);
    printf("cluster link test took %.1f s\n", now_s() - t0);
    TEST_MAIN_END();
}

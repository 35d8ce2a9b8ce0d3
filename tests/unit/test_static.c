/* The static file handler against a real directory tree made in /tmp: the path normaliser alone,
 * statuses, headers, bodies, dot segments that stay inside (served) and every way out of the root
 * we know of (404: dot segments plain and encoded, symlinks to files and directories outside, a
 * sibling directory sharing the root's name as a prefix; 400: NUL and control bytes), and 403 for
 * an unreadable file, checked as an unprivileged user even when the test runs as root. */
#include "static.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char base[256]; /* the temp dir; the served root is base/www */

static void put(const char *rel, const char *content)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", base, rel);
    FILE *f = fopen(p, "wb");
    if (!f) {
        perror(p);
        exit(2);
    }
    fputs(content, f);
    fclose(f);
}

static void mkdir_in(const char *rel)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", base, rel);
    if (mkdir(p, 0755) != 0) {
        perror(p);
        exit(2);
    }
}

static void symlink_in(const char *target, const char *rel)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", base, rel);
    if (symlink(target, p) != 0) {
        perror(p);
        exit(2);
    }
}

/* One response, split for checking. */
typedef struct {
    int status;      /* what wsl_static_respond returned */
    int line_code;   /* the code in the status line */
    char head[4096]; /* the head, NUL-terminated, without the blank line */
    const char *body;
    size_t body_len;
    char *raw;
    size_t raw_len;
} response;

static void request(const wsl_static *s, const char *path, size_t len, bool head, response *r)
{
    memset(r, 0, sizeof *r);
    r->status = wsl_static_respond(s, path, len, head, "close", &r->raw, &r->raw_len, NULL);
    if (!r->raw) return;
    const char *end = memmem(r->raw, r->raw_len, "\r\n\r\n", 4);
    CHECK(end != NULL);
    if (!end) return;
    size_t hlen = (size_t)(end - r->raw);
    if (hlen >= sizeof r->head) hlen = sizeof r->head - 1;
    memcpy(r->head, r->raw, hlen);
    r->head[hlen] = '\0';
    r->body = end + 4;
    r->body_len = r->raw_len - (size_t)(end + 4 - r->raw);
    sscanf(r->head, "HTTP/1.1 %d ", &r->line_code);
}

/* The value of a header line in the head, or NULL. */
static const char *header(response *r, const char *name, char *buf, size_t cap)
{
    size_t nlen = strlen(name);
    for (char *line = strstr(r->head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, name, nlen) == 0 && h[nlen] == ':') {
            const char *v = h + nlen + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t vlen = e ? (size_t)(e - v) : strlen(v);
            if (vlen >= cap) vlen = cap - 1;
            memcpy(buf, v, vlen);
            buf[vlen] = '\0';
            return buf;
        }
    }
    return NULL;
}

static void done(response *r)
{
    free(r->raw);
    r->raw = NULL;
}

/* GET path: expect status; for 200 also the content type and body. Every answer, errors
 * included, must carry the fixed headers and a Content-Length matching its body. */
static void expect(const wsl_static *s, const char *path, int status, const char *type,
                   const char *body)
{
    response r;
    char v[512];
    TEST_CONTEXT("GET %s", path);
    request(s, path, strlen(path), false, &r);
    CHECK_EQ(r.status, status);
    CHECK_EQ(r.line_code, status);
    CHECK(r.raw != NULL);
    if (r.raw) {
        CHECK_STR(header(&r, "Connection", v, sizeof v), "close");
        CHECK_STR(header(&r, "X-Content-Type-Options", v, sizeof v), "nosniff");
        const char *cl = header(&r, "Content-Length", v, sizeof v);
        CHECK(cl != NULL);
        if (cl) CHECK_EQ(strtoull(cl, NULL, 10), r.body_len);
        if (type) CHECK_STR(header(&r, "Content-Type", v, sizeof v), type);
        if (body) CHECK_MEM(r.body, r.body_len, body);
    }
    done(&r);
    TEST_CONTEXT("%s", "");
}

static void test_files(const wsl_static *s)
{
    expect(s, "/", 200, "text/html; charset=utf-8", "<h1>home</h1>\n");
    expect(s, "/index.html", 200, "text/html; charset=utf-8", "<h1>home</h1>\n");
    expect(s, "/style.css", 200, "text/css; charset=utf-8", "body{}\n");
    expect(s, "/app.js", 200, "text/javascript; charset=utf-8", "1;\n");
    expect(s, "/mod.mjs", 200, "text/javascript; charset=utf-8", NULL);
    expect(s, "/data.json", 200, "application/json; charset=utf-8", "{}\n");
    expect(s, "/app.js.map", 200, "application/json; charset=utf-8", NULL);
    expect(s, "/pic.svg", 200, "image/svg+xml; charset=utf-8", NULL);
    expect(s, "/pic.png", 200, "image/png", NULL);
    expect(s, "/pic.jpg", 200, "image/jpeg", NULL);
    expect(s, "/pic.jpeg", 200, "image/jpeg", NULL);
    expect(s, "/pic.gif", 200, "image/gif", NULL);
    expect(s, "/favicon.ico", 200, "image/x-icon", NULL);
    expect(s, "/notes.txt", 200, "text/plain; charset=utf-8", "notes\n");
    expect(s, "/mod.wasm", 200, "application/wasm", NULL);
    expect(s, "/font.woff2", 200, "font/woff2", NULL);
    expect(s, "/SHOUT.HTML", 200, "text/html; charset=utf-8", NULL);
    expect(s, "/blob.xyz", 200, "application/octet-stream", NULL);
    expect(s, "/noext", 200, "application/octet-stream", NULL);
    expect(s, "/empty.txt", 200, "text/plain; charset=utf-8", "");
    /* Percent-decoding, and dots that are not a ".." segment. */
    expect(s, "/with%20space.txt", 200, "text/plain; charset=utf-8", "spaced\n");
    expect(s, "/%69ndex.html", 200, NULL, "<h1>home</h1>\n");
    expect(s, "/a..b.txt", 200, NULL, "dots\n");
    expect(s, "/./index.html", 200, NULL, "<h1>home</h1>\n");
    expect(s, "//index.html", 200, NULL, "<h1>home</h1>\n");
    /* A query or fragment is not part of the file name. */
    expect(s, "/index.html?v=2", 200, NULL, "<h1>home</h1>\n");
    /* A symlink that stays inside the root is fine. */
    expect(s, "/link-in", 200, NULL, "<h1>home</h1>\n");
    expect(s, "/sub-link/", 200, NULL, "<h1>sub</h1>\n");
}

static void test_directories(const wsl_static *s)
{
    expect(s, "/sub/", 200, "text/html; charset=utf-8", "<h1>sub</h1>\n");
    expect(s, "/sub/page.html", 200, NULL, "page\n");
    expect(s, "/sub", 301, NULL, NULL);
    expect(s, "/bare", 301, NULL, NULL); /* redirected first, then 404: no listing */
    expect(s, "/bare/", 404, NULL, NULL);

    response r;
    char v[512];
    request(s, "/sub", 4, false, &r);
    CHECK_STR(header(&r, "Location", v, sizeof v), "/sub/");
    done(&r);
    /* The location keeps the path as it was sent (still encoded). */
    request(s, "/s%75b", 6, false, &r);
    CHECK_EQ(r.status, 301);
    CHECK_STR(header(&r, "Location", v, sizeof v), "/s%75b/");
    done(&r);
}

static void test_not_found(const wsl_static *s)
{
    expect(s, "/missing.html", 404, "text/plain; charset=utf-8", "Not Found\n");
    expect(s, "/sub/missing", 404, NULL, NULL);
    expect(s, "/index.html/", 404, NULL, NULL);
    expect(s, "/index.html/x", 404, NULL, NULL);
    expect(s, "/dangling", 404, NULL, NULL);
    expect(s, "/fifo", 404, NULL, NULL); /* and it must not hang opening it */
    char longpath[PATH_MAX + 64];
    longpath[0] = '/';
    memset(longpath + 1, 'a', sizeof longpath - 2);
    longpath[sizeof longpath - 1] = '\0';
    expect(s, longpath, 404, NULL, NULL);
}

/* The normaliser alone: what each raw path becomes, or why it is refused. */
static void test_normalize(void)
{
    static const struct {
        const char *raw;
        const char *want; /* NULL: refused with `err` */
        long err;
    } cases[] = {
        {"/", "/", 0},
        {"/index.html", "/index.html", 0},
        {"/sub/", "/sub/", 0},
        {"/sub", "/sub", 0},
        {"//a///b//", "/a/b/", 0},
        {"/./a/./b/.", "/a/b/", 0},
        {"/a/..", "/", 0},
        {"/a/../", "/", 0},
        {"/a/b/../c", "/a/c", 0},
        {"/a/b/../../c/", "/c/", 0},
        {"/sub/../index.html", "/index.html", 0},
        {"/a/%2e%2E/b", "/b", 0},
        {"/a/.%2e", "/", 0},
        {"/a%2fb", "/a/b", 0},
        {"/a%2F..%2Fb", "/b", 0},
        {"/a..b/...", "/a..b/...", 0},
        {"/.hidden/..x", "/.hidden/..x", 0},
        {"/%25", "/%", 0}, /* decoded once: "%25" is a file named "%" */
        {"/%252e%252e/x", "/%2e%2e/x", 0},
        {"/with%20space", "/with space", 0},
        {"/caf%C3%A9", "/caf\xc3\xa9", 0},
        {"/..", NULL, -ENOENT},
        {"/../", NULL, -ENOENT},
        {"/../index.html", NULL, -ENOENT},
        {"/a/../..", NULL, -ENOENT},
        {"/a/../../b", NULL, -ENOENT},
        {"/%2e%2e/b", NULL, -ENOENT},
        {"/..%2fb", NULL, -ENOENT},
        {"/./../b", NULL, -ENOENT},
        {"//../b", NULL, -ENOENT},
        {"/a%00b", NULL, -EINVAL},
        {"/a%0a", NULL, -EINVAL},
        {"/a%7f", NULL, -EINVAL},
        {"/a\tb", NULL, -EINVAL},
        {"/%", NULL, -EINVAL},
        {"/%2", NULL, -EINVAL},
        {"/%zz", NULL, -EINVAL},
        {"/%2g", NULL, -EINVAL},
        {"a/b", NULL, -EINVAL},
        {"", NULL, -EINVAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        TEST_CONTEXT("normalize %s", cases[i].raw);
        long n = wsl_static_normalize(cases[i].raw, strlen(cases[i].raw), out, sizeof out);
        if (cases[i].want) {
            CHECK_EQ(n, (long)strlen(cases[i].want));
            if (n >= 0) CHECK_STR(out, cases[i].want);
        } else {
            CHECK_EQ(n, cases[i].err);
        }
    }
    /* A NUL inside the given length is refused, not taken as the end. */
    char out[64];
    TEST_CONTEXT("%s", "raw NUL");
    CHECK_EQ(wsl_static_normalize("/a\0/../../x", 11, out, sizeof out), -EINVAL);
    /* Capacity: the result and its NUL must fit, whatever the path shrinks to later. */
    TEST_CONTEXT("%s", "capacity");
    CHECK_EQ(wsl_static_normalize("/abc", 4, out, 5), 4);
    CHECK_EQ(wsl_static_normalize("/abc", 4, out, 4), -ENAMETOOLONG);
    CHECK_EQ(wsl_static_normalize("/abc/", 5, out, 5), -ENAMETOOLONG);
    CHECK_EQ(wsl_static_normalize("/", 1, out, 2), 1);
    CHECK_EQ(wsl_static_normalize("/", 1, out, 1), -ENAMETOOLONG);
    TEST_CONTEXT("%s", "");
}

static void test_traversal(const wsl_static *s)
{
    /* base/secret.txt exists, so any of these answering 200 would be a leak. A path that leaves
     * the root names no file inside it: 404, as the man page says. */
    expect(s, "/../secret.txt", 404, NULL, NULL);
    expect(s, "/..", 404, NULL, NULL);
    expect(s, "/../", 404, NULL, NULL);
    expect(s, "/sub/../../secret.txt", 404, NULL, NULL);
    expect(s, "/%2e%2e/secret.txt", 404, NULL, NULL);
    expect(s, "/%2E%2E/secret.txt", 404, NULL, NULL);
    expect(s, "/.%2e/secret.txt", 404, NULL, NULL);
    expect(s, "/%2e./secret.txt", 404, NULL, NULL);
    expect(s, "/..%2fsecret.txt", 404, NULL, NULL);
    expect(s, "/sub/..%2F..%2Fsecret.txt", 404, NULL, NULL);
    expect(s, "/%2e%2e%2fsecret.txt", 404, NULL, NULL);
    expect(s, "/www/../../secret.txt", 404, NULL, NULL);
    /* Symlinks whose target is outside: a file, a directory, and the sibling "www-evil" whose
     * path starts with the root's path (the prefix check needs its '/' boundary). */
    expect(s, "/link-out", 404, NULL, NULL);
    expect(s, "/dir-out/secret.txt", 404, NULL, NULL);
    expect(s, "/dir-out/", 404, NULL, NULL);
    expect(s, "/evil-link", 404, NULL, NULL);
    expect(s, "/abs-link", 404, NULL, NULL);
    /* Dot segments that stay inside the root are resolved, not refused. */
    expect(s, "/sub/../index.html", 200, "text/html; charset=utf-8", "<h1>home</h1>\n");
    expect(s, "/sub/%2e%2e/index.html", 200, NULL, "<h1>home</h1>\n");
    expect(s, "/sub/./page.html", 200, NULL, "page\n");
    expect(s, "/bare/../sub/page.html", 200, NULL, "page\n");
    expect(s, "/sub/..", 200, NULL, "<h1>home</h1>\n");
    expect(s, "/x/y/../../sub/", 200, NULL, "<h1>sub</h1>\n");
    /* Bodies of refusals never carry file content. */
    response r;
    request(s, "/link-out", 9, false, &r);
    CHECK(r.raw && !memmem(r.raw, r.raw_len, "TOP SECRET", 10));
    done(&r);
}

static void test_bad_requests(const wsl_static *s)
{
    expect(s, "/a%00b", 400, NULL, NULL);
    expect(s, "/index.html%00.png", 400, NULL, NULL);
    expect(s, "/%zz", 400, NULL, NULL);
    expect(s, "/%2", 400, NULL, NULL);
    expect(s, "/%", 400, NULL, NULL);
    expect(s, "/a%0d%0aSet-Cookie:x", 400, NULL, NULL);
    expect(s, "index.html", 400, NULL, NULL);
    expect(s, "*", 400, NULL, NULL);
    expect(s, "", 400, NULL, NULL);

    /* A raw NUL inside the given length: the C string would stop early, the check must not. */
    response r;
    request(s, "/index.html\0/../../secret.txt", 29, false, &r);
    CHECK_EQ(r.status, 400);
    done(&r);
}

/* No size limit: a file of 5 GiB and a byte (sparse) is a 200 with its full length, over 32 bits,
 * its body left in the file. */
#define HUGE_FILE ((5ull << 30) + 1)
static void test_no_size_limit(const wsl_static *s)
{
    char *out = NULL;
    size_t len = 0;
    wsl_static_body body;
    CHECK_EQ(wsl_static_respond(s, "/big.bin", 8, false, NULL, &out, &len, &body), 200);
    char want[64];
    snprintf(want, sizeof want, "Content-Length: %llu\r\n", HUGE_FILE);
    CHECK(out && memmem(out, len, want, strlen(want)) != NULL);
    CHECK(out && len >= 4 && memcmp(out + len - 4, "\r\n\r\n", 4) == 0); /* the head alone */
    CHECK(body.fd >= 0);
    CHECK_EQ((unsigned long long)body.left, HUGE_FILE);
    if (body.fd >= 0) close(body.fd);
    free(out);
}

/* A body over WSL_STATIC_INLINE stays in its file when the caller takes it so: the response is
 * the head alone, with the file's full length, and the file gives the body; up to that size, and
 * for HEAD, the answer is whole as before. */
static void test_large_body(const wsl_static *s)
{
    static const struct {
        const char *path;
        bool head, in_file;
        size_t size;
    } cases[] = {{"/large.bin", false, true, WSL_STATIC_INLINE + 1000},
                 {"/large.bin", true, false, WSL_STATIC_INLINE + 1000},
                 {"/inline.bin", false, false, WSL_STATIC_INLINE}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TEST_CONTEXT("%s %s", cases[i].head ? "HEAD" : "GET", cases[i].path);
        char *out = NULL;
        size_t len = 0;
        wsl_static_body body;
        int st = wsl_static_respond(s, cases[i].path, strlen(cases[i].path), cases[i].head, NULL,
                                    &out, &len, &body);
        CHECK_EQ(st, 200);
        CHECK(out != NULL);
        if (!out) continue;
        const char *end = memmem(out, len, "\r\n\r\n", 4);
        CHECK(end != NULL);
        char want[64];
        snprintf(want, sizeof want, "Content-Length: %zu\r\n", cases[i].size);
        CHECK(memmem(out, len, want, strlen(want)) != NULL);
        size_t body_len = end ? len - (size_t)(end + 4 - out) : 0;
        CHECK_EQ(body_len, cases[i].head || cases[i].in_file ? 0 : cases[i].size);
        CHECK_EQ(body.fd >= 0, cases[i].in_file);
        if (body.fd >= 0) {
            CHECK_EQ(body.left, cases[i].size);
            static char got[WSL_STATIC_INLINE + 1001];
            ssize_t n = read(body.fd, got, sizeof got);
            CHECK_EQ(n, (ssize_t)cases[i].size);
            bool pattern = n > 0;
            for (ssize_t k = 0; k < n; k++)
                pattern &= got[k] == (char)('a' + k % 26);
            CHECK(pattern);
            close(body.fd);
        }
        free(out);
    }
    TEST_CONTEXT("%s", "");
}

/* A file the server may not read gets 403. Root reads everything (CI runs as root), so there the
 * check runs in a forked child that first gives up root for nobody (65534): the same call then
 * meets a real EACCES. The readable index.html first shows that nobody can walk the tree, so the
 * 403 comes from the file itself and not from a directory on the way. */
static void test_unreadable(const wsl_static *s)
{
    if (geteuid() != 0) {
        expect(s, "/private.txt", 403, "text/plain; charset=utf-8", "Forbidden\n");
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid < 0) return;
    if (pid == 0) {
        const uid_t nobody = 65534;
        if (setgroups(0, NULL) != 0 || setresgid(nobody, nobody, nobody) != 0 ||
            setresuid(nobody, nobody, nobody) != 0) {
            perror("dropping root for nobody");
            _exit(2);
        }
        CHECK(geteuid() == nobody && setresuid(0, 0, 0) != 0); /* and root cannot come back */
        expect(s, "/index.html", 200, NULL, "<h1>home</h1>\n");
        expect(s, "/private.txt", 403, "text/plain; charset=utf-8", "Forbidden\n");
        _exit(test_failures ? 1 : 0);
    }
    int st = 0;
    CHECK_EQ(waitpid(pid, &st, 0), pid);
    TEST_CONTEXT("%s", "the unprivileged child (its own failures are printed above)");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    TEST_CONTEXT("%s", "");
}

static void test_head(const wsl_static *s)
{
    response r;
    char v[64];
    request(s, "/index.html", 11, true, &r);
    CHECK_EQ(r.status, 200);
    CHECK_EQ(r.body_len, 0);
    CHECK_STR(header(&r, "Content-Length", v, sizeof v), "14");
    CHECK_STR(header(&r, "Content-Type", v, sizeof v), "text/html; charset=utf-8");
    done(&r);

    request(s, "/missing", 8, true, &r);
    CHECK_EQ(r.status, 404);
    CHECK_EQ(r.body_len, 0);
    CHECK_STR(header(&r, "Content-Length", v, sizeof v), "10");
    done(&r);

    request(s, "/big.bin", 8, true, &r);
    CHECK_EQ(r.status, 200);
    CHECK_EQ(r.body_len, 0);
    CHECK_STR(header(&r, "Content-Length", v, sizeof v), "5368709121");
    done(&r);
}

/* The Connection header is the caller's: "close", "keep-alive" (HTTP/1.0), or none at all. */
static void test_connection_header(const wsl_static *s)
{
    static const char *const values[] = {"close", "keep-alive", NULL};
    for (size_t i = 0; i < 3; i++) {
        TEST_CONTEXT("Connection %s", values[i] ? values[i] : "(none)");
        for (int missing = 0; missing <= 1; missing++) {
            char *out = NULL;
            size_t len = 0;
            const char *path = missing ? "/missing" : "/index.html";
            int st = wsl_static_respond(s, path, strlen(path), false, values[i], &out, &len, NULL);
            CHECK_EQ(st, missing ? 404 : 200);
            if (!out) continue;
            const char *end = memmem(out, len, "\r\n\r\n", 4);
            CHECK(end != NULL);
            char want[64];
            snprintf(want, sizeof want, "\r\nConnection: %s\r\n", values[i] ? values[i] : "");
            bool has = end && memmem(out, (size_t)(end - out) + 2, want, strlen(want));
            bool any = end && memmem(out, (size_t)(end - out) + 2, "Connection:", 11);
            CHECK(values[i] ? has : !any);
            free(out);
        }
    }
    TEST_CONTEXT("%s", "");
}

static void test_open(void)
{
    wsl_static s;
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/nope", base);
    CHECK_EQ(wsl_static_open(&s, p), -ENOENT);
    CHECK(s.root == NULL);
    snprintf(p, sizeof p, "%s/secret.txt", base);
    CHECK_EQ(wsl_static_open(&s, p), -ENOTDIR);

    /* A trailing slash and a detour through a symlink resolve to the plain path. */
    char want[PATH_MAX];
    snprintf(p, sizeof p, "%s/www", base);
    CHECK(realpath(p, want) != NULL);
    snprintf(p, sizeof p, "%s/www/", base);
    CHECK_EQ(wsl_static_open(&s, p), 0);
    CHECK_STR(s.root, want);
    CHECK_EQ(s.root_len, strlen(want));
    wsl_static_close(&s);
    CHECK(s.root == NULL);
    snprintf(p, sizeof p, "%s/www-alias", base);
    CHECK_EQ(wsl_static_open(&s, p), 0);
    CHECK_STR(s.root, want);
    wsl_static_close(&s);
}

static void make_tree(void)
{
    snprintf(base, sizeof base, "%s/wsluad-static-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(base) || chmod(base, 0755) != 0) { /* 0755: see test_unreadable */
        perror(base);
        exit(2);
    }
    put("secret.txt", "TOP SECRET\n");
    mkdir_in("outside");
    put("outside/secret.txt", "TOP SECRET\n");
    put("outside/index.html", "TOP SECRET\n");
    mkdir_in("www-evil");
    put("www-evil/f.txt", "TOP SECRET\n");
    mkdir_in("www");
    symlink_in("www", "www-alias");
    put("www/index.html", "<h1>home</h1>\n");
    put("www/style.css", "body{}\n");
    put("www/app.js", "1;\n");
    put("www/mod.mjs", "export{};\n");
    put("www/data.json", "{}\n");
    put("www/app.js.map", "{}\n");
    put("www/pic.svg", "<svg/>\n");
    put("www/pic.png", "png");
    put("www/pic.jpg", "jpg");
    put("www/pic.jpeg", "jpeg");
    put("www/pic.gif", "gif");
    put("www/favicon.ico", "ico");
    put("www/notes.txt", "notes\n");
    put("www/mod.wasm", "wasm");
    put("www/font.woff2", "woff2");
    put("www/SHOUT.HTML", "<p>loud</p>\n");
    put("www/blob.xyz", "?");
    put("www/noext", "?");
    put("www/empty.txt", "");
    put("www/with space.txt", "spaced\n");
    put("www/a..b.txt", "dots\n");
    put("www/private.txt", "private\n");
    mkdir_in("www/sub");
    put("www/sub/index.html", "<h1>sub</h1>\n");
    put("www/sub/page.html", "page\n");
    mkdir_in("www/bare");
    symlink_in("index.html", "www/link-in");
    symlink_in("sub", "www/sub-link");
    symlink_in("../outside/secret.txt", "www/link-out");
    symlink_in("../outside", "www/dir-out");
    symlink_in("../www-evil/f.txt", "www/evil-link");
    symlink_in("missing-target", "www/dangling");

    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/secret.txt", base);
    symlink_in(p, "www/abs-link");
    snprintf(p, sizeof p, "%s/www/private.txt", base);
    chmod(p, 0);
    snprintf(p, sizeof p, "%s/www/fifo", base);
    if (mkfifo(p, 0644) != 0) {
        perror(p);
        exit(2);
    }
    /* Sparse: costs no disk. */
    snprintf(p, sizeof p, "%s/www/big.bin", base);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)HUGE_FILE) != 0) {
        perror(p);
        exit(2);
    }
    close(fd);
    /* Files for test_large_body: a letter pattern, one just over WSL_STATIC_INLINE. */
    static char pattern[WSL_STATIC_INLINE + 1000];
    for (size_t k = 0; k < sizeof pattern; k++)
        pattern[k] = (char)('a' + k % 26);
    const struct {
        const char *name;
        size_t size;
    } files[] = {{"large.bin", sizeof pattern}, {"inline.bin", WSL_STATIC_INLINE}};
    for (size_t i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/www/%s", base, files[i].name);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, pattern, files[i].size) != (ssize_t)files[i].size) {
            perror(p);
            exit(2);
        }
        close(fd);
    }
}

static void remove_tree(void)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", base);
}

int main(void)
{
    make_tree();
    wsl_static s;
    char root[PATH_MAX];
    snprintf(root, sizeof root, "%s/www", base);
    if (wsl_static_open(&s, root) != 0) {
        fprintf(stderr, "cannot open %s\n", root);
        remove_tree();
        return 1;
    }
    test_normalize();
    test_files(&s);
    test_directories(&s);
    test_not_found(&s);
    test_traversal(&s);
    test_bad_requests(&s);
    test_no_size_limit(&s);
    test_large_body(&s);
    test_unreadable(&s);
    test_head(&s);
    test_connection_header(&s);
    wsl_static_close(&s);
    test_open();
    remove_tree();
    TEST_MAIN_END();
}

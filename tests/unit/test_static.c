/* The static file handler against a real directory tree made in /tmp: statuses, headers, bodies,
 * and every way out of the root we know of (dot segments plain and encoded, NUL, symlinks to
 * files and directories outside, a sibling directory sharing the root's name as a prefix). */
#include "static.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
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
    r->status = wsl_static_respond(s, path, len, head, &r->raw, &r->raw_len);
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

static void test_traversal(const wsl_static *s)
{
    /* base/secret.txt exists, so any of these answering 200 would be a leak. */
    expect(s, "/../secret.txt", 403, NULL, NULL);
    expect(s, "/..", 403, NULL, NULL);
    expect(s, "/../", 403, NULL, NULL);
    expect(s, "/sub/../index.html", 403, NULL, NULL);
    expect(s, "/sub/../../secret.txt", 403, NULL, NULL);
    expect(s, "/%2e%2e/secret.txt", 403, NULL, NULL);
    expect(s, "/%2E%2E/secret.txt", 403, NULL, NULL);
    expect(s, "/.%2e/secret.txt", 403, NULL, NULL);
    expect(s, "/%2e./secret.txt", 403, NULL, NULL);
    expect(s, "/..%2fsecret.txt", 403, NULL, NULL);
    expect(s, "/sub/..%2F..%2Fsecret.txt", 403, NULL, NULL);
    expect(s, "/%2e%2e%2fsecret.txt", 403, NULL, NULL);
    /* Symlinks whose target is outside: a file, a directory, and the sibling "www-evil" whose
     * path starts with the root's path (the prefix check needs its '/' boundary). */
    expect(s, "/link-out", 403, NULL, NULL);
    expect(s, "/dir-out/secret.txt", 403, NULL, NULL);
    expect(s, "/dir-out/", 403, NULL, NULL);
    expect(s, "/evil-link", 403, NULL, NULL);
    expect(s, "/abs-link", 403, NULL, NULL);
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

static void test_limits(const wsl_static *s)
{
    expect(s, "/big.bin", 403, NULL, NULL);
    if (geteuid() != 0) /* root reads everything, so the permission case means nothing there */
        expect(s, "/private.txt", 403, NULL, NULL);
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
    CHECK_EQ(r.status, 403);
    done(&r);
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
    if (!mkdtemp(base)) {
        perror("mkdtemp");
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
    /* One byte over the limit, sparse: costs no disk. */
    snprintf(p, sizeof p, "%s/www/big.bin", base);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)WSL_STATIC_MAX_FILE + 1) != 0) {
        perror(p);
        exit(2);
    }
    close(fd);
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
    test_files(&s);
    test_directories(&s);
    test_not_found(&s);
    test_traversal(&s);
    test_bad_requests(&s);
    test_limits(&s);
    test_head(&s);
    wsl_static_close(&s);
    test_open();
    remove_tree();
    TEST_MAIN_END();
}

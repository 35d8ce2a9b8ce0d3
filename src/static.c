/* Plain HTTP GET/HEAD answers from one directory. The request path is percent-decoded and its dot
 * segments resolved first (a path climbing above the root, or a symlink resolving outside it, is
 * a file that is not there: 404), then the response is built into one malloc'd block the caller
 * writes and frees: head and body, or the head alone when a large body stays in its file. */
#include "static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

int wsl_static_open(wsl_static *s, const char *dir)
{
    s->root = NULL;
    s->root_len = 0;
    char *root = realpath(dir, NULL);
    if (!root) return -errno;
    struct stat st;
    if (stat(root, &st) != 0) {
        int err = errno;
        free(root);
        return -err;
    }
    if (!S_ISDIR(st.st_mode)) {
        free(root);
        return -ENOTDIR;
    }
    if (access(root, R_OK | X_OK) != 0) {
        int err = errno;
        free(root);
        return -err;
    }
    s->root = root;
    s->root_len = strlen(root);
    return 0;
}

void wsl_static_close(wsl_static *s)
{
    free(s->root);
    s->root = NULL;
    s->root_len = 0;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 301:
        return "Moved Permanently";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    default:
        return "Internal Server Error";
    }
}

/* Text types get an explicit charset so a browser never guesses one. */
static const char *content_type(const char *file)
{
    static const struct {
        const char *ext;
        const char *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"json", "application/json; charset=utf-8"},
        {"map", "application/json; charset=utf-8"},
        {"svg", "image/svg+xml; charset=utf-8"},
        {"txt", "text/plain; charset=utf-8"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"ico", "image/x-icon"},
        {"wasm", "application/wasm"},
        {"woff2", "font/woff2"},
    };
    const char *slash = strrchr(file, '/');
    const char *dot = strrchr(slash ? slash : file, '.');
    if (dot) {
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0) return types[i].type;
    }
    return "application/octet-stream";
}

/* Formats the head (and room for body_len bytes after it) in one allocation. `location`, when not
 * NULL, is the raw request path; the redirect adds the missing slash to it. */
static int build(int status, const char *ctype, const char *location, size_t location_len,
                 size_t body_len, bool head, const char *connection, char **out, size_t *out_len,
                 size_t *body_at)
{
    static const char fmt[] = "HTTP/1.1 %d %s\r\n"
                              "Content-Type: %s\r\n"
                              "Content-Length: %zu\r\n"
                              "%s%.*s%s"
                              "X-Content-Type-Options: nosniff\r\n"
                              "Cache-Control: no-cache\r\n"
                              "%s%s%s"
                              "\r\n";
    const char *lpre = location ? "Location: " : "";
    const char *lpost = location ? "/\r\n" : "";
    int loc_len = location ? (int)location_len : 0;
    const char *loc = location ? location : "";
    const char *cpre = connection ? "Connection: " : "", *cpost = connection ? "\r\n" : "";
    if (!connection) connection = "";
    int hlen = snprintf(NULL, 0, fmt, status, reason(status), ctype, body_len, lpre, loc_len, loc,
                        lpost, cpre, connection, cpost);
    if (hlen < 0) return -1;
    size_t total = (size_t)hlen + (head ? 0 : body_len);
    char *p = malloc(total + 1); /* +1: snprintf writes a NUL after the head */
    if (!p) {
        *out = NULL;
        *out_len = 0;
        return -1;
    }
    snprintf(p, (size_t)hlen + 1, fmt, status, reason(status), ctype, body_len, lpre, loc_len, loc,
             lpost, cpre, connection, cpost);
    *out = p;
    *out_len = total;
    *body_at = (size_t)hlen;
    return status;
}

/* Errors and redirects carry their reason as a short text body. */
static int respond_text(int status, const char *location, size_t location_len, bool head,
                        const char *connection, char **out, size_t *out_len)
{
    const char *r = reason(status);
    size_t rlen = strlen(r);
    size_t at;
    if (build(status, "text/plain; charset=utf-8", location, location_len, rlen + 1, head,
              connection, out, out_len, &at) < 0)
        return -1;
    if (!head) {
        memcpy(*out + at, r, rlen);
        (*out)[at + rlen] = '\n';
    }
    return status;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One byte of the path, percent-decoded: returns it and advances *i, or -1 for a malformed
 * escape. */
static int next_byte(const char *src, size_t len, size_t *i)
{
    unsigned char c = (unsigned char)src[*i];
    if (c != '%') {
        (*i)++;
        return c;
    }
    if (*i + 2 >= len) return -1;
    int hi = hexval((unsigned char)src[*i + 1]);
    int lo = hexval((unsigned char)src[*i + 2]);
    if (hi < 0 || lo < 0) return -1;
    *i += 3;
    return hi * 16 + lo;
}

/* Decoding and resolving the dot segments in one pass, so what is checked is exactly what is
 * opened: out[0..n) is always a normalised path, and `seg` is where the segment being written
 * starts (just after a '/'). A decoded "%2F" separates segments like '/', so "..%2f" is a ".."
 * segment too. */
long wsl_static_normalize(const char *src, size_t len, char *out, size_t cap)
{
    if (cap < 2) return -ENAMETOOLONG;
    if (len == 0 || src[0] != '/') return -EINVAL;
    size_t n = 0, seg = 1;
    out[n++] = '/';
    size_t i = 1;
    for (;;) {
        bool end = i >= len; /* the end closes the last segment like a '/' would */
        int c = end ? '/' : next_byte(src, len, &i);
        if (c < 0) return -EINVAL;
        /* A NUL would cut the path short of what was checked; control bytes have no business
         * in a file name served over HTTP. */
        if (c < 0x20 || c == 0x7f) return -EINVAL;
        if (c != '/') {
            if (n + 1 >= cap) return -ENAMETOOLONG;
            out[n++] = (char)c;
            continue;
        }
        size_t slen = n - seg;
        if (slen == 1 && out[seg] == '.') {
            n = seg; /* "." names the directory itself */
        } else if (slen == 2 && out[seg] == '.' && out[seg + 1] == '.') {
            if (seg == 1) return -ENOENT; /* above the root: no such file inside it */
            n = seg - 1;                  /* back over the '/' before "..", */
            while (out[n - 1] != '/')     /* and over the segment before that */
                n--;
        } else if (slen > 0 && !end) {
            if (n + 1 >= cap) return -ENAMETOOLONG;
            out[n++] = '/';
        }
        /* An empty segment ("//") adds nothing. */
        seg = n;
        if (end) break;
    }
    out[n] = '\0';
    return (long)n;
}

static bool inside_root(const wsl_static *s, const char *resolved)
{
    if (s->root_len == 1 && s->root[0] == '/') /* the root is "/" itself */
        return resolved[0] == '/';
    return strncmp(resolved, s->root, s->root_len) == 0 &&
           (resolved[s->root_len] == '\0' || resolved[s->root_len] == '/');
}

static int errno_status(int err)
{
    switch (err) {
    case ENOENT:
    case ENOTDIR:
    case ENAMETOOLONG:
    case ELOOP:
        return 404;
    case EACCES:
    case EPERM:
        return 403;
    default:
        return 500;
    }
}

static bool read_all(int fd, char *dst, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, dst + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false; /* an error, or the file shrank under us */
        got += (size_t)r;
    }
    return true;
}

int wsl_static_respond(const wsl_static *s, const char *path, size_t len, bool head,
                       const char *connection, char **out, size_t *out_len, wsl_static_body *body)
{
    *out = NULL;
    *out_len = 0;
    if (body) *body = (wsl_static_body){.fd = -1};
    /* Only the path part is ours; a query or fragment that slipped through is not a file name. */
    for (size_t i = 0; i < len; i++) {
        if (path[i] == '?' || path[i] == '#') {
            len = i;
            break;
        }
    }
    if (len == 0 || path[0] != '/')
        return respond_text(400, NULL, 0, head, connection, out, out_len);

    char norm[PATH_MAX];
    long nlen = wsl_static_normalize(path, len, norm, sizeof norm);
    /* Leaving the root, or a name too long to exist, is a file that is not there. */
    if (nlen < 0)
        return respond_text(nlen == -EINVAL ? 400 : 404, NULL, 0, head, connection, out, out_len);

    bool want_dir = norm[nlen - 1] == '/';
    char full[PATH_MAX];
    int n = snprintf(full, sizeof full, "%s%s%s", s->root, norm, want_dir ? "index.html" : "");
    if (n < 0 || (size_t)n >= sizeof full)
        return respond_text(404, NULL, 0, head, connection, out, out_len);

    char resolved[PATH_MAX];
    if (!realpath(full, resolved))
        return respond_text(errno_status(errno), NULL, 0, head, connection, out, out_len);
    /* A symlink leading out of the root: as if the file were not there. */
    if (!inside_root(s, resolved))
        return respond_text(404, NULL, 0, head, connection, out, out_len);

    /* O_NONBLOCK: opening a FIFO someone left in the directory must not hang the server. */
    int fd = open(resolved, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0) return respond_text(errno_status(errno), NULL, 0, head, connection, out, out_len);
    struct stat st;
    int status;
    if (fstat(fd, &st) != 0) {
        status = respond_text(500, NULL, 0, head, connection, out, out_len);
    } else if (S_ISDIR(st.st_mode) && !want_dir) {
        status = respond_text(301, path, len, head, connection, out, out_len);
    } else if (!S_ISREG(st.st_mode)) {
        status = respond_text(404, NULL, 0, head, connection, out, out_len);
    } else {
        size_t size = (size_t)st.st_size, at;
        bool later = body && !head && size > WSL_STATIC_INLINE; /* the body stays in the file */
        status = build(200, content_type(resolved), NULL, 0, size, head || later, connection, out,
                       out_len, &at);
        if (status == 200 && later) {
            *body = (wsl_static_body){.fd = fd, .left = size};
            return status;
        }
        if (status == 200 && !head && !read_all(fd, *out + at, size)) {
            free(*out);
            status = respond_text(500, NULL, 0, head, connection, out, out_len);
        }
    }
    close(fd);
    return status;
}

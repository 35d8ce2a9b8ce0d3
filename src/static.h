/* Files for plain HTTP GETs from one directory: percent-decoding and dot-segment resolution, the
 * traversal guard (nothing above the root, no symlink leading outside it), index.html for
 * directories and content types. Blocking reads: it serves the bundled pages, not a web site. */
#ifndef WSL_STATIC_H
#define WSL_STATIC_H

#include <stdbool.h>
#include <stddef.h>

/* Owned by the server; wsl_static_close frees root. */
typedef struct wsl_static {
    char *root; /* realpath of the directory, no trailing slash */
    size_t root_len;
} wsl_static;

/* 0, or a negative errno when dir is not a readable directory. */
int wsl_static_open(wsl_static *s, const char *dir);
void wsl_static_close(wsl_static *s);

/* The raw request path (percent-encoded, starting with '/', no query) as the file path it names
 * under the root: decoded (a decoded "%2F" separates segments like '/'), empty and "." segments
 * dropped, each ".." taking the segment before it away. The result starts with '/', holds no
 * "//", "." or ".." segment, and ends with '/' when it names a directory ("/a/", "/a/.", "/a/..").
 * Writes it NUL-terminated to out (cap bytes) and returns its length, or
 *   -EINVAL        a malformed %-escape, a NUL or control byte, a path not starting with '/'
 *   -ENOENT        a ".." above the root: the path leaves the directory
 *   -ENAMETOOLONG  the result does not fit in cap. */
long wsl_static_normalize(const char *path, size_t len, char *out, size_t cap);

/* Files larger than this are sent from the file as the client reads them (see wsl_static_body),
 * so that clients that do not read cannot make the server hold whole files: hence no size limit. */
#define WSL_STATIC_INLINE (64u << 10)

/* The body of a 200 left in its file: the caller reads `left` bytes from fd's current offset
 * and closes fd. */
typedef struct wsl_static_body {
    int fd;      /* -1: the body, if any, is in the response */
    size_t left; /* its size (the Content-Length) */
} wsl_static_body;

/* Build the response for a raw (percent-encoded) request path: status line, Content-Type,
 * Content-Length, "Connection: <connection>" unless it is NULL ("close", "keep-alive"), and the
 * body unless `head`. A body larger than WSL_STATIC_INLINE stays in its file when `body` is not
 * NULL. Returns the HTTP status (200,
 * 301 for a directory without its trailing slash, 400 for a malformed path, 403 for a file that
 * cannot be read, 404 for a missing one or a path leaving the root, 500); *out is
 * malloc'd and the caller frees it; on allocation failure returns -1 and *out is NULL. */
int wsl_static_respond(const wsl_static *s, const char *path, size_t len, bool head,
                       const char *connection, char **out, size_t *out_len, wsl_static_body *body);

#endif

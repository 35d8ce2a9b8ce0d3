/* sd_notify without libsystemd: wsluad tells systemd (Type=notify) when it is listening, when a
 * reload starts and ends, and when it stops. Each message is one datagram from a fresh
 * non-blocking socket, as sd_notify does it; the kernel adds our credentials, by which systemd
 * checks that the main process sent it. */
#include "notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static struct sockaddr_un addr;
static socklen_t addr_len; /* 0: nowhere to send */

int wsl_notify_addr(const char *s, struct sockaddr_un *sa, socklen_t *len)
{
    size_t n = strlen(s);
    if (n < 2) return -EINVAL; /* "/" is a directory, "@" an empty name */
    if (s[0] != '/' && s[0] != '@') return -EAFNOSUPPORT;
    if (n > sizeof sa->sun_path - (s[0] == '/')) return -ENAMETOOLONG; /* a path keeps its NUL */
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, s, n);
    if (s[0] == '@') {
        sa->sun_path[0] = '\0'; /* abstract: the name is the bytes after the NUL, no terminator */
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

int wsl_notify_init(void)
{
    addr_len = 0;
    const char *s = getenv("NOTIFY_SOCKET");
    if (!s) return 0;
    int r = wsl_notify_addr(s, &addr, &addr_len);
    if (r < 0) {
        addr_len = 0;
        wsl_warn("NOTIFY_SOCKET '%s' is not a socket wsluad can notify: %s", s, strerror(-r));
    }
    unsetenv("NOTIFY_SOCKET");
    return r < 0 ? r : 1;
}

bool wsl_notify_enabled(void)
{
    return addr_len != 0;
}

void wsl_notify_forget(void)
{
    addr_len = 0;
}

int wsl_notify(const char *fmt, ...)
{
    if (!addr_len) return 0;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof msg) n = (int)strnlen(msg, sizeof msg - 1);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int err = 0;
    if (fd < 0) {
        err = errno;
    } else {
        if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len) < 0)
            err = errno;
        close(fd);
    }
    if (!err) return 0;
    /* Only the first line: the message's name, e.g. READY=1. */
    wsl_warn("cannot notify systemd (%.*s): %s", (int)strcspn(msg, "\n"), msg, strerror(err));
    return -err;
}

int wsl_notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return wsl_notify("RELOADING=1\nMONOTONIC_USEC=%llu",
                      (unsigned long long)ts.tv_sec * 1000000ull +
                          (unsigned long long)ts.tv_nsec / 1000);
}

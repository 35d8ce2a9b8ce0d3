/* The sd_notify side of src/notify.c: NOTIFY_SOCKET's forms (a path, '@' for the abstract
 * namespace, what is refused), taking it out of the environment, and real datagrams received on
 * sockets bound here, as systemd binds its own. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "notify.h"
#include "test.h"

static void test_addresses(void)
{
    struct sockaddr_un sa;
    socklen_t len = 0;
    CHECK_EQ(wsl_notify_addr("/run/systemd/notify", &sa, &len), 0);
    CHECK_EQ(sa.sun_family, AF_UNIX);
    CHECK_STR(sa.sun_path, "/run/systemd/notify");
    CHECK_EQ(len, offsetof(struct sockaddr_un, sun_path) + sizeof "/run/systemd/notify");

    /* Abstract: a NUL, then the name, and the length says where it ends (no terminator). */
    CHECK_EQ(wsl_notify_addr("@wsluad/notify", &sa, &len), 0);
    CHECK_EQ(sa.sun_path[0], 0);
    CHECK(memcmp(sa.sun_path + 1, "wsluad/notify", 13) == 0);
    CHECK_EQ(len, offsetof(struct sockaddr_un, sun_path) + 14);

    char longest[sizeof sa.sun_path + 2];
    memset(longest, 'a', sizeof longest);
    longest[0] = '/';
    longest[sizeof sa.sun_path - 1] = '\0'; /* 107 bytes and the NUL: fits */
    CHECK_EQ(wsl_notify_addr(longest, &sa, &len), 0);
    longest[sizeof sa.sun_path - 1] = 'a';
    longest[sizeof sa.sun_path] = '\0'; /* 108: no room for the NUL */
    CHECK_EQ(wsl_notify_addr(longest, &sa, &len), -ENAMETOOLONG);
    longest[0] = '@'; /* abstract names need no NUL: 108 bytes fit */
    CHECK_EQ(wsl_notify_addr(longest, &sa, &len), 0);
    CHECK_EQ(len, sizeof sa);
    longest[sizeof sa.sun_path] = 'a';
    longest[sizeof sa.sun_path + 1] = '\0';
    CHECK_EQ(wsl_notify_addr(longest, &sa, &len), -ENAMETOOLONG);

    CHECK_EQ(wsl_notify_addr("", &sa, &len), -EINVAL);
    CHECK_EQ(wsl_notify_addr("@", &sa, &len), -EINVAL);
    CHECK_EQ(wsl_notify_addr("/", &sa, &len), -EINVAL);
    CHECK_EQ(wsl_notify_addr("run/notify", &sa, &len), -EAFNOSUPPORT);
    CHECK_EQ(wsl_notify_addr("vsock:2:1234", &sa, &len), -EAFNOSUPPORT);
}

/* A datagram socket at `where` (a path, or "@name"), as systemd makes it. */
static int listener(const char *where)
{
    struct sockaddr_un sa;
    socklen_t len;
    if (wsl_notify_addr(where, &sa, &len) != 0) return -1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, len) != 0) return -1;
    return fd;
}

/* The next datagram, or "" when none is waiting. */
static const char *next(int fd)
{
    static char buf[1024];
    ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static void test_send(const char *where)
{
    TEST_CONTEXT("%s", where);
    int fd = listener(where);
    CHECK(fd >= 0);
    setenv("NOTIFY_SOCKET", where, 1);
    CHECK_EQ(wsl_notify_init(), 1);
    CHECK(getenv("NOTIFY_SOCKET") == NULL); /* children never see it */
    CHECK(wsl_notify_enabled());
    CHECK_EQ(wsl_notify("READY=1\nSTATUS=listening on %s", "127.0.0.1:8080"), 0);
    CHECK_STR(next(fd), "READY=1\nSTATUS=listening on 127.0.0.1:8080");
    CHECK_EQ(wsl_notify_reloading(), 0);
    unsigned long long usec = 0;
    CHECK(sscanf(next(fd), "RELOADING=1\nMONOTONIC_USEC=%llu", &usec) == 1);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long now = (unsigned long long)ts.tv_sec * 1000000 + (unsigned)ts.tv_nsec / 1000;
    CHECK(usec > 0 && usec <= now && now - usec < 10000000);
    CHECK_EQ(wsl_notify("STOPPING=1"), 0);
    CHECK_STR(next(fd), "STOPPING=1");
    CHECK_STR(next(fd), "");
    /* A worker forgets it: nothing is sent, and that is no error. */
    wsl_notify_forget();
    CHECK(!wsl_notify_enabled());
    CHECK_EQ(wsl_notify("READY=1"), 0);
    CHECK_STR(next(fd), "");
    close(fd);
}

static void test_nowhere(void)
{
    unsetenv("NOTIFY_SOCKET");
    CHECK_EQ(wsl_notify_init(), 0);
    CHECK(!wsl_notify_enabled());
    CHECK_EQ(wsl_notify("READY=1"), 0);
    /* A malformed address: refused once, nothing sent later. */
    setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
    CHECK_EQ(wsl_notify_init(), -EAFNOSUPPORT);
    CHECK(getenv("NOTIFY_SOCKET") == NULL);
    CHECK(!wsl_notify_enabled());
    CHECK_EQ(wsl_notify("READY=1"), 0);
    /* Nobody listening: the error comes back (and is logged), nothing blocks. */
    setenv("NOTIFY_SOCKET", "/nonexistent-dir/notify", 1);
    CHECK_EQ(wsl_notify_init(), 1);
    CHECK_EQ(wsl_notify("READY=1"), -ENOENT);
}

int main(void)
{
    test_addresses();
    char dir[] = "/tmp/wsluad-notify-XXXXXX", path[64], abstract[64];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/notify", dir);
    test_send(path);
    unlink(path);
    rmdir(dir);
    snprintf(abstract, sizeof abstract, "@wsluad-test-%ld", (long)getpid());
    test_send(abstract);
    test_context[0] = 0;
    test_nowhere();
    TEST_MAIN_END();
}

/* systemd's service notification protocol (sd_notify(3)) without libsystemd: a datagram of
 * "KEY=VALUE" lines to the unix socket that $NOTIFY_SOCKET names. Plain POSIX, no loop. */
#ifndef WSL_NOTIFY_H
#define WSL_NOTIFY_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/un.h>

/* Reads $NOTIFY_SOCKET once and removes it from the environment, so that no child process (a
 * script's os.execute, a worker) speaks in this process's name. Returns 1 when there is a
 * socket to notify, 0 when there is none, a negative errno (logged) for an address that is not
 * one: then nothing is ever sent. */
int wsl_notify_init(void);
bool wsl_notify_enabled(void);
/* Forget the socket (a worker: its supervisor speaks to systemd). */
void wsl_notify_forget(void);

/* Sends one message, e.g. "READY=1\nSTATUS=listening on 127.0.0.1:8080"; never blocks. Returns
 * 0 once sent or when there is nowhere to send, else a negative errno (logged as a warning). */
int wsl_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "RELOADING=1" with MONOTONIC_USEC, the CLOCK_MONOTONIC time that systemd 253 and later want
 * with it (Type=notify-reload). */
int wsl_notify_reloading(void);

/* $NOTIFY_SOCKET's value as an address: an absolute path, or '@' and a name in the abstract
 * namespace. Returns 0 and fills sa and len; -EAFNOSUPPORT for other forms (vsock: ...),
 * -ENAMETOOLONG, or -EINVAL for an empty one. Pure, for the tests. */
int wsl_notify_addr(const char *s, struct sockaddr_un *sa, socklen_t *len);

#endif

/* Listening TCP sockets, shared by the WebSocket listeners (server.c) and the metrics endpoint
 * (metrics_http.c): resolve, bind the first address that works, listen, and name what was bound. */
#ifndef WSL_LISTEN_H
#define WSL_LISTEN_H

#include <stdbool.h>
#include <stddef.h>

/* A non-blocking, close-on-exec socket listening on host:port (port 0: the kernel picks one),
 * with SO_REUSEADDR, IPV6_V6ONLY on IPv6, and SO_REUSEPORT when reuseport (workers sharing one
 * address). `addr` gets the address bound, "127.0.0.1:8080" or "[::1]:8080". Returns the fd, or
 * a negative error after logging "cannot <what> host:port: reason". The caller owns the fd. */
int wsl_listen_tcp(const char *host, int port, int backlog, bool reuseport, const char *what,
                   char *addr, size_t cap);

#endif

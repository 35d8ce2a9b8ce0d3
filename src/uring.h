/* A batch of socket writes handed to the kernel with one io_uring_enter(2) instead of one
 * send(2) each. Writes are copied into the batch's arena and never wait: a socket that takes
 * less than all reports how much it took, exactly as a non-blocking send would. */
#ifndef WSL_URING_H
#define WSL_URING_H

#include <stddef.h>
#include <stdint.h>

/* Owned by the server; wsl_uring_free releases the ring and the arena. */
typedef struct wsl_uring wsl_uring;

/* What one write did: res is the bytes the socket took (0..n) or a negative errno (-EAGAIN when
 * it took nothing). p and n are the bytes that were to be written (valid during the call). */
typedef void (*wsl_uring_done)(void *owner, const uint8_t *p, size_t n, int res);

/* A batch of up to `depth` writes and `arena` bytes, or NULL with errno set (io_uring is absent
 * or forbidden: ENOSYS, EPERM, ...; the caller then writes with send(2)). */
wsl_uring *wsl_uring_new(unsigned depth, size_t arena, wsl_uring_done done);
void wsl_uring_free(wsl_uring *u);

/* Where n bytes for the next write go, or NULL when the batch has no room for them (submit, then
 * ask again; NULL then means n is larger than the arena). */
uint8_t *wsl_uring_reserve(wsl_uring *u, size_t n);
/* The n bytes at the last reserve's place go to fd; owner is handed back to `done`. */
void wsl_uring_commit(wsl_uring *u, int fd, size_t n, void *owner);
/* Writes waiting for wsl_uring_submit. */
unsigned wsl_uring_queued(const wsl_uring *u);
/* Bytes waiting for wsl_uring_submit on owner's behalf. */
size_t wsl_uring_bytes_of(const wsl_uring *u, const void *owner);
/* Hand every waiting write to the kernel and report each to `done`, in the order committed.
 * Returns the count of writes done. Never blocks on a socket. */
unsigned wsl_uring_submit(wsl_uring *u);

#endif

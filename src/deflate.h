/* permessage-deflate (RFC 7692): choosing from a client's Sec-WebSocket-Extensions offers and
 * writing the answer, compressing the server's messages (always without context takeover, on
 * one loop-wide zlib stream, so a broadcast is compressed once for every recipient), and
 * inflating a client's messages as their frames arrive, with the size limit and UTF-8 checked
 * on the bytes as they are produced. No I/O; zlib does the arithmetic. */
#ifndef WSL_DEFLATE_H
#define WSL_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

/* The client window the server asks for when an offer lets it (client_max_window_bits): a client
 * that keeps its context costs 2^bits bytes of saved window on the server. 11 keeps most of
 * what context takeover gains on chat-sized messages (see README, COMPRESSION). */
#define WSL_DEFLATE_CLIENT_BITS 11

/* What one accepted offer agreed on. */
typedef struct wsl_deflate_params {
    uint8_t server_bits;  /* server_max_window_bits in force (8..15); 0: absent (15) */
    uint8_t client_bits;  /* client_max_window_bits the answer asks for (8..15); 0: absent */
    bool client_takeover; /* the client keeps its window between messages (so must we) */
} wsl_deflate_params;

/* Pick the first permessage-deflate offer of one Sec-WebSocket-Extensions value that can be
 * accepted, skipping other extensions, malformed elements and offers with an unknown, duplicate
 * or invalid parameter (RFC 7692 section 7). Names compare case-insensitively; values may be
 * quoted. client_bits (8..15) is the largest client window we are willing to keep: a client
 * that offers client_max_window_bits keeps its context with at most that window; one that
 * does not is asked for client_no_context_takeover (its window would cost 32 KiB). True when
 * an offer was accepted (*p filled); false leaves the handshake to go on without compression. */
bool wsl_deflate_negotiate(const char *offers, size_t len, unsigned client_bits,
                           wsl_deflate_params *p);
/* The same over every Sec-WebSocket-Extensions line of a request, in order. */
bool wsl_deflate_negotiate_request(const wsl_request *req, unsigned client_bits,
                                   wsl_deflate_params *p);

/* The answer's header value for p: "permessage-deflate; server_no_context_takeover" and the
 * parameters in force. Returns its length (NUL-terminated), 0 when cap is too small. */
size_t wsl_deflate_answer(const wsl_deflate_params *p, char *out, size_t cap);

/* Loop-wide zlib state: the compressor streams, the inflate streams not lent out, and the
 * output buffers. Owned by the server (one per loop), freed with wsl_deflate_free. */
typedef struct wsl_deflate wsl_deflate;

wsl_deflate *wsl_deflate_new(void); /* NULL when out of memory; streams are made on first use */
void wsl_deflate_free(wsl_deflate *d);

/* Compress one whole message for a peer whose window is 2^server_bits (0 means 15), without
 * context takeover and without the final 00 00 ff ff. Every server_bits below 15 gives the same
 * bytes (a 9-bit zlib window, which never reaches back past 250 bytes), so one compressed frame
 * serves all of them. 1: *out (valid until the next call on d) holds *out_len bytes, fewer than
 * n; 0: compression would not make it smaller, send it plain; -ENOMEM. */
int wsl_deflate_compress(wsl_deflate *d, unsigned server_bits, const void *in, size_t n,
                         const uint8_t **out, size_t *out_len);

/* One connection's inflate side: the window a client with context takeover refers back to
 * (2^bits bytes, made at its first compressed message), and the stream lent from the pool while
 * one of its messages is arriving in pieces. NULL when neither is needed. Freed with
 * wsl_inflater_free by the connection that owns it. */
typedef struct wsl_inflater wsl_inflater;

enum {
    WSL_INFLATE_FIRST = 1,    /* this piece starts a message */
    WSL_INFLATE_LAST = 2,     /* and this one ends it (both: the whole message) */
    WSL_INFLATE_TEXT = 4,     /* a text message: its inflated bytes must be UTF-8 */
    WSL_INFLATE_TAKEOVER = 8, /* the client keeps its context (client_bits: its window) */
};

/* Inflate the next piece of a compressed message's payload (after unmasking; the caller appends
 * nothing). The bytes it inflates to are at *out, *out_len (valid until the next call on d);
 * every piece's output is counted against max (the whole message may inflate to at most max
 * bytes) and checked as UTF-8 for text as it is produced, so a bomb stops after max + 1 bytes.
 * Returns 0, or: -EMSGSIZE past max (close 1009), -EBADMSG invalid deflate data or a message
 * that does not end on a block boundary (1007), -EILSEQ invalid UTF-8 (1007), -ENOMEM (1011),
 * -EINVAL for a piece that continues no message. After an error the message is abandoned. */
int wsl_inflate(wsl_deflate *d, wsl_inflater **inf, unsigned flags, unsigned client_bits,
                const uint8_t *in, size_t n, uint64_t max, const uint8_t **out, size_t *out_len);

/* Bytes the connection's inflate state holds (its struct, window and lent stream; an estimate
 * of zlib's own allocations), for tests and the docs' memory figures. 0 for NULL. */
size_t wsl_inflater_memory(const wsl_inflater *inf);

void wsl_inflater_free(wsl_deflate *d, wsl_inflater *inf);

/* The close code and reason for an error of wsl_inflate. */
unsigned wsl_inflate_close_code(int err, const char **reason);

#endif

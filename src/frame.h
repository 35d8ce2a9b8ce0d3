/* RFC 6455 framing: server frame headers, masking, and the receive state machine that turns a
 * client's bytes into message pieces and control frames, enforcing every rule of section 5
 * (masking, reserved bits and opcodes, fragmentation, control frame limits, UTF-8 of text,
 * close payloads, the message size limit) and RSV1 as permessage-deflate (RFC 7692) uses it.
 * Pure: no I/O and no allocation, so it is unit-tested and fuzzed on its own. */
#ifndef WSL_FRAME_H
#define WSL_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "utf8.h"

enum {
    WSL_OP_CONT = 0x0,
    WSL_OP_TEXT = 0x1,
    WSL_OP_BINARY = 0x2,
    WSL_OP_CLOSE = 0x8,
    WSL_OP_PING = 0x9,
    WSL_OP_PONG = 0xA,
};

#define WSL_FRAME_HDR_MAX  14   /* 2 + 8 length + 4 mask */
#define WSL_SERVER_HDR_MAX 10   /* server frames are never masked */
#define WSL_CONTROL_MAX    125  /* control frame payload limit */
#define WSL_FRAME_RSV1     0x40 /* first header byte: a compressed message (permessage-deflate) */

/* Header of an unmasked (server) frame; returns its length, 2 to 10 bytes. Inline: every frame
 * sent encodes one. */
static inline size_t wsl_frame_header(uint8_t out[WSL_SERVER_HDR_MAX], int opcode, bool fin,
                                      uint64_t len)
{
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

/* Header of a masked (client) frame, for tests and the load generator; 6 to 14 bytes. */
size_t wsl_frame_header_masked(uint8_t out[WSL_FRAME_HDR_MAX], int opcode, bool fin, uint64_t len,
                               const uint8_t mask[4]);

/* XOR p with the mask in place; `offset` is p's position in the payload, so a payload can be
 * (un)masked piece by piece. */
void wsl_frame_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset);

/* True when a close code may appear on the wire (RFC 6455 7.4, as Autobahn and Node's ws read
 * it): 1000-1003, 1007-1014, 3000-4999. */
bool wsl_close_code_valid(unsigned code);

/* Receive state of one connection, owned by it (embed it). Zero-initialise it; no pointers.
 * Set `deflate` once permessage-deflate is agreed: RSV1 then marks a compressed message. */
typedef struct wsl_rx {
    /* first, in this order: the four bytes a whole small frame's path reads at once */
    uint8_t msg_op;     /* WSL_OP_TEXT or WSL_OP_BINARY while a message is in progress, else 0 */
    uint8_t fin;        /* the current data frame ends its message */
    uint8_t in_frame;   /* the current data frame's payload is still arriving */
    uint8_t done;       /* a close frame or an error was returned: stop feeding */
    uint8_t deflate;    /* permessage-deflate was agreed: RSV1 allowed on a message's first frame */
    uint8_t compressed; /* the message in progress had RSV1: its payload is compressed */
    uint8_t mask[4];    /* mask key of the current data frame */
    uint32_t utf8;      /* UTF-8 state of the current text message */
    uint64_t remaining; /* payload bytes of the current data frame still to come */
    uint64_t msg_len;   /* payload bytes of the current message so far */
    uint64_t offset;    /* payload bytes of the current data frame already unmasked */
} wsl_rx;

typedef enum {
    WSL_RX_MORE,    /* nothing more can be done until more bytes arrive (see `need`) */
    WSL_RX_DATA,    /* a piece of a text or binary message */
    WSL_RX_CONTROL, /* a whole ping, pong or close frame */
    WSL_RX_ERROR,   /* the peer broke the protocol: close with `code` */
} wsl_rx_kind;

typedef struct wsl_rx_event {
    wsl_rx_kind kind;
    uint8_t opcode;  /* DATA: TEXT or BINARY (the message's); CONTROL: CLOSE, PING or PONG */
    bool first;      /* DATA: the first piece of the message */
    bool last;       /* DATA: the last piece: the message is complete */
    bool compressed; /* DATA: the message is compressed (RSV1); its bytes are not UTF-8-checked */
    uint8_t *data;   /* DATA and CONTROL: the payload, unmasked in place in the input */
    size_t len;      /* its length; a DATA piece may be empty (an empty frame) */
    uint64_t frame_left; /* DATA: bytes of this frame still to come after this piece */
    size_t need;         /* MORE: bytes of unconsumed input required before progress is possible */
    uint16_t code;       /* CONTROL close: received code or 1005 if none; ERROR: code to send */
    const char *reason;  /* CONTROL close: reason text (in data); ERROR: static description */
    size_t reason_len;
} wsl_rx_event;

/* Consume bytes from p[0..n) and describe what they held in *ev. Returns how many bytes were
 * consumed; the caller advances by that and calls again until it gets WSL_RX_MORE (then keeps
 * the unconsumed bytes for later), an ERROR, or a close CONTROL. Payload bytes are unmasked in
 * place, so p must be writable; bytes not consumed are never modified. A text message's bytes
 * are UTF-8-checked as they arrive: the first impossible byte is an ERROR 1007 even in the
 * middle of a frame. A message whose size would pass max_message is an ERROR 1009 as soon as a
 * frame header announces it (control frames do not count; UINT64_MAX means no limit).
 * A compressed message (rx->deflate and RSV1 on its first frame; RSV1 anywhere else is an
 * ERROR 1002) is handed out as it came: neither UTF-8-checked nor inflated, its payload limited
 * to max_message plus an eighth and 64 bytes (what a deflate encoder may add), its inflated size
 * and text left to the caller (deflate.h).
 *
 * Details the caller can rely on:
 * - MORE may still consume bytes (a data frame header whose payload has not arrived, or empty
 *   non-final fragments): always advance by the return value. `need` counts from there; for a
 *   header whose length field has not arrived it is a lower bound (2, then the header size),
 *   for a control frame it is the whole frame (at most 6 + 125).
 * - DATA: `first` is set on the first piece of a message, `last` on its final piece; a message
 *   fed whole in one frame is one event with both set. Only a last piece can be empty: an empty
 *   message is one DATA event (first, last, len 0), and empty fragments that do not end a
 *   message produce no event. Control frames may come between the pieces of a message.
 * - CONTROL close: `code` is the received code or 1005 for an empty payload; `reason` points
 *   to the (valid UTF-8) reason in the input, reason_len may be 0. rx->done is then set.
 * - ERROR: rx->done is set; the return value counts the bytes examined (nothing after them
 *   matters). Once done, every further call returns 0 and an ERROR. */
static inline size_t wsl_rx_next(wsl_rx *rx, uint8_t *p, size_t n, uint64_t max_message,
                                 wsl_rx_event *ev);

/* Everything wsl_rx_small does not take (frame.c). */
size_t wsl_rx_general(wsl_rx *rx, uint8_t *p, size_t n, uint64_t max_message, wsl_rx_event *ev);

/* wsl_rx_next's common case is inline, in the reader's loop: a small frame whole costs no call.
 * Unmask p[0..n), a whole frame's payload (mask offset 0), and tell whether every byte is ASCII
 * (then it is valid UTF-8): one pass over 8-byte words instead of an unmasking pass and a UTF-8
 * pass. */
static inline bool wsl_rx_unmask_ascii(uint8_t *p, size_t n, const uint8_t mask[4])
{
    uint32_t k32;
    memcpy(&k32, mask, 4);
    uint64_t key = (uint64_t)k32 << 32 | k32, acc = 0, w; /* memory order in any byte order */
    size_t i = 0;
    for (; n - i >= 8; i += 8) {
        memcpy(&w, p + i, 8);
        w ^= key;
        memcpy(p + i, &w, 8);
        acc |= w;
    }
    if (n - i >= 4) { /* i is a multiple of 8: key bytes 0-3 */
        uint32_t h;
        memcpy(&h, p + i, 4);
        h ^= k32;
        memcpy(p + i, &h, 4);
        acc |= h;
        i += 4;
    }
    for (; i < n; i++) {
        p[i] ^= mask[i & 3];
        acc |= p[i];
    }
    return !(acc & 0x8080808080808080ull);
}

/* The common case of a chat or echo server, in one step: a whole unfragmented text or binary
 * frame of at most 125 bytes (2-byte header, mask key) with no message in progress, no RSV bit,
 * within max_message, and for text valid UTF-8. Returns the bytes consumed, or 0 (with p as it
 * came) for anything else, which the general path then handles and reports. */
static inline size_t wsl_rx_small(wsl_rx *rx, uint8_t *p, size_t n, uint64_t max_message,
                                  wsl_rx_event *ev)
{
    /* msg_op, fin, in_frame and done in one load: all 0 between messages (fin is reset with
     * msg_op; were it not, the general path would just take the frame). */
    uint32_t busy;
    memcpy(&busy, &rx->msg_op, 4);
    if (n < 6 || busy) return 0;
    if ((p[0] != 0x81 && p[0] != 0x82) || p[1] < 0x80 || p[1] > 0x80 + WSL_CONTROL_MAX) return 0;
    size_t len = p[1] & 0x7F;
    if (n < 6 + len || len > max_message) return 0;
    uint8_t *d = p + 6;
    if (p[0] == 0x82) {
        wsl_frame_mask(d, len, p + 2, 0);
    } else if (!wsl_rx_unmask_ascii(d, len, p + 2) && !wsl_utf8_valid(d, len)) {
        wsl_frame_mask(d, len, p + 2, 0); /* masked again: the general path says where it fails */
        return 0;
    }
    *ev = (wsl_rx_event){.kind = WSL_RX_DATA,
                         .opcode = p[0] & 0x0F,
                         .first = true,
                         .last = true,
                         .data = d,
                         .len = len};
    return 6 + len;
}

static inline size_t wsl_rx_next(wsl_rx *rx, uint8_t *p, size_t n, uint64_t max_message,
                                 wsl_rx_event *ev)
{
    size_t whole = wsl_rx_small(rx, p, n, max_message, ev);
    return whole ? whole : wsl_rx_general(rx, p, n, max_message, ev);
}

#endif

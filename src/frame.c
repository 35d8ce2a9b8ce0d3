/* RFC 6455 framing: server frame headers, payload masking, and the receive state machine that
 * checks every rule of section 5 as early as the bytes allow (most at the first two header
 * bytes, 1009 at the length, 1007 at the first impossible UTF-8 byte). Pure: no I/O, no
 * allocation; payloads are unmasked in place in the caller's buffer. */
#include "frame.h"

#include <string.h>

#include "utf8.h"

size_t wsl_frame_header_masked(uint8_t out[WSL_FRAME_HDR_MAX], int opcode, bool fin, uint64_t len,
                               const uint8_t mask[4])
{
    size_t n = wsl_frame_header(out, opcode, fin, len);
    out[1] |= 0x80;
    memcpy(out + n, mask, 4);
    return n + 4;
}

void wsl_frame_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset)
{
    /* The key rotated to start at `offset`, twice: the 4-byte period divides 8, so one word
     * serves every 8-byte step and m[i & 7] is the key byte for any later position i. */
    uint8_t m[8];
    uint64_t key;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* One rotate: in memory order the first byte is the lowest. */
    uint32_t k32;
    memcpy(&k32, mask, 4);
    unsigned r = (unsigned)(offset & 3) * 8;
    if (r) k32 = k32 >> r | k32 << (32 - r);
    key = (uint64_t)k32 << 32 | k32;
    memcpy(m, &key, 8);
#else
    for (unsigned i = 0; i < 8; i++)
        m[i] = mask[(offset + i) & 3];
    memcpy(&key, m, 8);
#endif
    size_t i = 0;
    if (n >= 8) {
        for (; n - i >= 32; i += 32) {
            uint64_t a, b, c, d;
            memcpy(&a, p + i, 8);
            memcpy(&b, p + i + 8, 8);
            memcpy(&c, p + i + 16, 8);
            memcpy(&d, p + i + 24, 8);
            a ^= key;
            b ^= key;
            c ^= key;
            d ^= key;
            memcpy(p + i, &a, 8);
            memcpy(p + i + 8, &b, 8);
            memcpy(p + i + 16, &c, 8);
            memcpy(p + i + 24, &d, 8);
        }
        for (; n - i >= 8; i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            w ^= key;
            memcpy(p + i, &w, 8);
        }
    }
    if (n - i >= 4) { /* i is a multiple of 8 here: key bytes 0-3 */
        uint32_t w, k4;
        memcpy(&w, p + i, 4);
        memcpy(&k4, m, 4);
        w ^= k4;
        memcpy(p + i, &w, 4);
        i += 4;
    }
    for (; i < n; i++)
        p[i] ^= m[i & 7];
}

bool wsl_close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999) return true; /* libraries and applications */
    /* 1004 is reserved, 1005 and 1006 only ever stand for "no code" and "no close frame",
     * 1015 for a TLS failure; none of them may be sent. */
    return code >= 1000 && code <= 1014 && code != 1004 && code != 1005 && code != 1006;
}

static size_t fail(wsl_rx *rx, wsl_rx_event *ev, size_t used, uint16_t code, const char *why)
{
    rx->done = 1;
    ev->kind = WSL_RX_ERROR;
    ev->code = code;
    ev->reason = why;
    ev->reason_len = strlen(why);
    return used;
}

static size_t more(wsl_rx_event *ev, size_t used, size_t need)
{
    ev->kind = WSL_RX_MORE;
    ev->need = need;
    return used;
}

static void end_message(wsl_rx *rx)
{
    rx->msg_op = 0;
    rx->compressed = 0;
    rx->msg_len = 0;
    rx->utf8 = WSL_UTF8_ACCEPT;
    rx->fin = 0;
}

/* The next piece of the data frame in progress, from p[0..n). msg_len counts the bytes already
 * handed out, so the first piece of a message is the one handed out while it is still 0 (empty
 * frames that do not end a message are never handed out, see wsl_rx_next). */
static size_t data_piece(wsl_rx *rx, uint8_t *p, size_t n, wsl_rx_event *ev)
{
    if (n == 0) return more(ev, 0, 1);
    size_t k = rx->remaining < n ? (size_t)rx->remaining : n;
    wsl_frame_mask(p, k, rx->mask, rx->offset);
    if (rx->msg_op == WSL_OP_TEXT && !rx->compressed) {
        rx->utf8 = wsl_utf8_feed(rx->utf8, p, k);
        if (rx->utf8 == WSL_UTF8_REJECT)
            return fail(rx, ev, k, 1007, "invalid UTF-8 in a text message");
    }
    ev->kind = WSL_RX_DATA;
    ev->opcode = rx->msg_op;
    ev->first = rx->msg_len == 0;
    ev->compressed = rx->compressed;
    ev->data = p;
    ev->len = k;
    rx->msg_len += k;
    rx->offset += k;
    rx->remaining -= k;
    ev->frame_left = rx->remaining;
    if (rx->remaining == 0) {
        rx->in_frame = 0;
        rx->offset = 0;
        if (rx->fin) {
            if (rx->msg_op == WSL_OP_TEXT && rx->utf8 != WSL_UTF8_ACCEPT)
                return fail(rx, ev, k, 1007, "text message ends inside a UTF-8 sequence");
            ev->last = true;
            end_message(rx);
        }
    }
    return k;
}

/* A whole control frame at p (header of hdr bytes, already checked) is in the buffer. */
static size_t control_frame(wsl_rx *rx, uint8_t *p, size_t hdr, size_t len, int op,
                            wsl_rx_event *ev)
{
    uint8_t *payload = p + hdr;
    wsl_frame_mask(payload, len, p + hdr - 4, 0);
    ev->kind = WSL_RX_CONTROL;
    ev->opcode = (uint8_t)op;
    ev->data = payload;
    ev->len = len;
    if (op == WSL_OP_CLOSE) {
        ev->reason = (const char *)payload;
        if (len == 0) {
            ev->code = 1005;
        } else if (len == 1) {
            return fail(rx, ev, hdr + len, 1002, "close frame with a 1-byte payload");
        } else {
            unsigned code = (unsigned)payload[0] << 8 | payload[1];
            if (!wsl_close_code_valid(code))
                return fail(rx, ev, hdr + len, 1002, "invalid close code");
            if (!wsl_utf8_valid(payload + 2, len - 2))
                return fail(rx, ev, hdr + len, 1007, "close reason is not valid UTF-8");
            ev->code = (uint16_t)code;
            ev->reason = (const char *)payload + 2;
            ev->reason_len = len - 2;
        }
        rx->done = 1;
    }
    return hdr + len;
}

/* A compressed payload may be a little larger than what it inflates to (stored blocks add 5
 * bytes in 64 KiB, fixed Huffman codes 9 bits a byte); the inflated size is checked by whoever
 * inflates it. */
static uint64_t compressed_limit(uint64_t max)
{
    return max > UINT64_MAX / 2 ? UINT64_MAX : max + max / 8 + 64;
}

/* Every frame wsl_rx_small leaves (see frame.h). */
size_t wsl_rx_general(wsl_rx *rx, uint8_t *p, size_t n, uint64_t max_message, wsl_rx_event *ev)
{
    memset(ev, 0, sizeof *ev);
    if (rx->done) return fail(rx, ev, 0, 1002, "input after a close frame or an error");
    size_t used = 0;
    for (;;) {
        if (rx->in_frame) {
            return used + data_piece(rx, p + used, n - used, ev);
        }
        uint8_t *q = p + used;
        size_t m = n - used;
        if (m < 1) return more(ev, used, 2);

        /* Everything the first byte can tell. */
        bool fin = q[0] & 0x80;
        int op = q[0] & 0x0F;
        bool control = op & 0x08;
        bool rsv1 = false;
        if (q[0] & 0x70) { /* only RSV1, only on a message's first frame, only when agreed */
            if (q[0] & 0x30 || !rx->deflate)
                return fail(rx, ev, used, 1002, "reserved bits set (no extension)");
            if (control) return fail(rx, ev, used, 1002, "RSV1 set on a control frame");
            if (op == WSL_OP_CONT)
                return fail(rx, ev, used, 1002, "RSV1 set on a continuation frame");
            rsv1 = true;
        }
        switch (op) {
        case WSL_OP_CONT:
            if (!rx->msg_op)
                return fail(rx, ev, used, 1002, "continuation frame without a message");
            break;
        case WSL_OP_TEXT:
        case WSL_OP_BINARY:
            if (rx->msg_op)
                return fail(rx, ev, used, 1002, "new message inside a fragmented message");
            break;
        case WSL_OP_CLOSE:
        case WSL_OP_PING:
        case WSL_OP_PONG:
            if (!fin) return fail(rx, ev, used, 1002, "fragmented control frame");
            break;
        default:
            return fail(rx, ev, used, 1002, "reserved opcode");
        }
        if (m < 2) return more(ev, used, 2);

        /* The second byte. */
        if (!(q[1] & 0x80)) return fail(rx, ev, used, 1002, "client frame not masked");
        unsigned len7 = q[1] & 0x7F;
        if (control && len7 > WSL_CONTROL_MAX)
            return fail(rx, ev, used, 1002, "control frame payload over 125 bytes");
        size_t ext = len7 == 127 ? 8 : len7 == 126 ? 2 : 0;
        size_t hdr = 2 + ext + 4;
        if (control) {
            if (m < hdr + len7) return more(ev, used, hdr + len7);
            return used + control_frame(rx, q, hdr, len7, op, ev);
        }

        /* The length: refuse what can never fit before waiting for any of it. */
        if (m < 2 + ext) return more(ev, used, hdr);
        uint64_t len = len7;
        if (ext) {
            len = 0;
            for (size_t i = 0; i < ext; i++)
                len = len << 8 | q[2 + i];
            if (len >> 63) return fail(rx, ev, used, 1002, "64-bit length with the top bit set");
        }
        if (rx->msg_len > max_message || len > max_message - rx->msg_len) {
            /* rx->compressed is 0 before a message's first frame, RSV1 is 0 on the others. */
            uint64_t zmax = compressed_limit(max_message);
            if (!(rx->compressed | rsv1) || rx->msg_len > zmax || len > zmax - rx->msg_len)
                return fail(rx, ev, used, 1009, "message too big");
        }
        if (m < hdr) return more(ev, used, hdr);

        if (op != WSL_OP_CONT) {
            rx->msg_op = (uint8_t)op;
            rx->msg_len = 0;
            rx->utf8 = WSL_UTF8_ACCEPT;
            rx->compressed = rsv1;
        }
        rx->fin = fin;
        used += hdr;
        if (len == 0 && !fin) continue; /* an empty fragment adds nothing: not an event */
        memcpy(rx->mask, q + hdr - 4, 4);
        rx->remaining = len;
        rx->offset = 0;
        if (len > 0) {
            rx->in_frame = 1;
            continue; /* hand out whatever payload is already here, or ask for more */
        }
        /* An empty final frame: the message ends here, possibly empty as a whole. */
        if (rx->msg_op == WSL_OP_TEXT && rx->utf8 != WSL_UTF8_ACCEPT)
            return fail(rx, ev, used, 1007, "text message ends inside a UTF-8 sequence");
        ev->kind = WSL_RX_DATA;
        ev->opcode = rx->msg_op;
        ev->first = rx->msg_len == 0;
        ev->last = true;
        ev->compressed = rx->compressed;
        ev->data = q + hdr;
        ev->len = 0;
        end_message(rx);
        return used;
    }
}

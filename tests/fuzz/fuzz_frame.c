/* libFuzzer target for the receive state machine (src/frame.c). Input: byte 0 picks the
 * message size limit, byte 1 seeds the chunking (its top bit: permessage-deflate agreed, so
 * RSV1 may mark compressed messages), the rest is what a client sent. The stream
 * is parsed whole and again in chunks; both must tell the same story, and every call must keep
 * the contract of wsl_rx_next (bounds, progress, untouched unconsumed bytes). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "frame.h"
#include "utf8.h"

/* What a stream said, independent of how it was cut: a hash of every message, control frame
 * and the ending, in order. */
typedef struct story {
    uint64_t hash;
    unsigned messages, controls;
    int end; /* 0: wants more bytes, 1: close frame, 2: error */
    uint16_t code;
} story;

static void mix(story *s, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        s->hash = (s->hash ^ b[i]) * 0x100000001b3ull;
}

static uint32_t next_rand(uint32_t *r)
{
    *r ^= *r << 13;
    *r ^= *r >> 17;
    *r ^= *r << 5;
    return *r;
}

/* Feed `in` in chunks (all at once when seed is 0). Each call gets a fresh buffer of exactly
 * the unconsumed bytes, so AddressSanitizer sees any read past them. */
static void drive(const uint8_t *in, size_t n, uint64_t max, bool deflate, uint32_t seed, story *st)
{
    memset(st, 0, sizeof *st);
    st->hash = 0xcbf29ce484222325ull;
    uint8_t *pending = malloc(n + 1); /* unconsumed bytes, still masked */
    uint8_t *msg = malloc(n + 1);
    ASSERT(pending && msg);
    size_t have = 0, fed = 0, msg_len = 0, need = 0;
    int in_msg = 0, msg_op = 0, msg_z = 0;
    wsl_rx rx = {.deflate = deflate};
    uint32_t r = seed * 2654435761u | 1;
    while (fed < n || have) {
        size_t chunk = n - fed;
        if (seed) {
            uint32_t span = (seed & 1) ? 17 : 300;
            size_t c = 1 + next_rand(&r) % span;
            if (c < chunk) chunk = c;
        }
        memcpy(pending + have, in + fed, chunk);
        have += chunk;
        fed += chunk;
        int first_call = 1, stop = 0;
        for (;;) {
            uint8_t *buf = malloc(have ? have : 1);
            ASSERT(buf);
            memcpy(buf, pending, have);
            wsl_rx_event ev;
            size_t used = wsl_rx_next(&rx, buf, have, max, &ev);
            ASSERT(used <= have);
            /* Bytes not consumed are left as they were (only consumed payload is unmasked). */
            ASSERT(memcmp(buf + used, pending + used, have - used) == 0);
            if (first_call && need && have >= need)
                ASSERT(used > 0 || ev.kind != WSL_RX_MORE || ev.need > need);
            first_call = 0;
            need = 0;
            switch (ev.kind) {
            case WSL_RX_MORE:
                ASSERT(ev.need > 0 && ev.need <= WSL_FRAME_HDR_MAX + WSL_CONTROL_MAX);
                ASSERT(have - used < ev.need);
                need = ev.need;
                break;
            case WSL_RX_DATA:
                ASSERT(used > 0); /* progress */
                ASSERT(ev.data >= buf && ev.data + ev.len <= buf + used);
                ASSERT(ev.opcode == WSL_OP_TEXT || ev.opcode == WSL_OP_BINARY);
                ASSERT(ev.first == !in_msg);
                ASSERT(ev.len > 0 || ev.last);
                if (ev.first) msg_op = ev.opcode, msg_len = 0, msg_z = ev.compressed;
                ASSERT(ev.opcode == msg_op);
                ASSERT(ev.compressed == msg_z && (deflate || !msg_z));
                ASSERT(ev.frame_left == rx.remaining);
                in_msg = !ev.last;
                memcpy(msg + msg_len, ev.data, ev.len);
                msg_len += ev.len;
                /* A compressed payload may pass the limit by an eighth and 64 bytes; it is
                 * neither UTF-8-checked nor inflated here. */
                ASSERT(msg_len <= (msg_z ? max + max / 8 + 64 : max) || max == UINT64_MAX);
                if (msg_op == WSL_OP_TEXT && !msg_z)
                    ASSERT(wsl_utf8_feed(WSL_UTF8_ACCEPT, msg, msg_len) != WSL_UTF8_REJECT);
                if (ev.last) {
                    ASSERT(ev.frame_left == 0 && rx.msg_op == 0 && !rx.compressed);
                    if (msg_op == WSL_OP_TEXT && !msg_z) ASSERT(wsl_utf8_valid(msg, msg_len));
                    st->messages++;
                    uint8_t tag[3] = {'M', (uint8_t)msg_op, (uint8_t)msg_z};
                    mix(st, tag, 3);
                    mix(st, &msg_len, sizeof msg_len);
                    mix(st, msg, msg_len);
                }
                break;
            case WSL_RX_CONTROL: {
                ASSERT(used > 0);
                ASSERT(ev.data >= buf && ev.data + ev.len <= buf + used);
                ASSERT(ev.len <= WSL_CONTROL_MAX);
                st->controls++;
                uint8_t tag[2] = {'C', ev.opcode};
                mix(st, tag, 2);
                mix(st, &ev.len, sizeof ev.len);
                mix(st, ev.data, ev.len);
                if (ev.opcode == WSL_OP_CLOSE) {
                    ASSERT(rx.done);
                    ASSERT(ev.code == 1005 || wsl_close_code_valid(ev.code));
                    ASSERT(ev.reason >= (const char *)buf &&
                           ev.reason + ev.reason_len <= (const char *)buf + used);
                    ASSERT(wsl_utf8_valid(ev.reason, ev.reason_len));
                    st->end = 1;
                    st->code = ev.code;
                    stop = 1;
                } else {
                    ASSERT(ev.opcode == WSL_OP_PING || ev.opcode == WSL_OP_PONG);
                }
                break;
            }
            case WSL_RX_ERROR:
                ASSERT(rx.done);
                ASSERT(ev.code == 1002 || ev.code == 1007 || ev.code == 1009);
                ASSERT(ev.reason && ev.reason_len == strlen(ev.reason));
                st->end = 2;
                st->code = ev.code;
                stop = 1;
                break;
            default:
                ASSERT(0);
            }
            memmove(pending, pending + used, have - used);
            have -= used;
            free(buf);
            if (stop) {
                wsl_rx_event after;
                ASSERT(wsl_rx_next(&rx, pending, have, max, &after) == 0);
                ASSERT(after.kind == WSL_RX_ERROR);
                free(pending);
                free(msg);
                return;
            }
            if (ev.kind == WSL_RX_MORE) break;
        }
        if (fed == n) break; /* MORE with everything fed: the stream ends mid-frame */
    }
    free(pending);
    free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    /* Small limits, so 1009 is reached often; 255 means none. */
    uint64_t max = data[0] == 255 ? UINT64_MAX : (uint64_t)data[0] * 16;
    bool deflate = data[1] & 0x80;
    uint32_t seed = data[1] & 0x7F;
    story whole, cut;
    drive(data + 2, size - 2, max, deflate, 0, &whole);
    drive(data + 2, size - 2, max, deflate, seed + 1, &cut);
    ASSERT(whole.hash == cut.hash);
    ASSERT(whole.messages == cut.messages && whole.controls == cut.controls);
    ASSERT(whole.end == cut.end && whole.code == cut.code);
    return 0;
}

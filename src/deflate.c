/* permessage-deflate (RFC 7692) on zlib: the offer parser and the answer, one loop-wide
 * compressor reset for every message (the server never takes over its context, so one
 * compressed frame serves every recipient), and the inflater, which lends a pooled stream to a
 * message only while it is being inflated and keeps between messages nothing but the window of
 * a client that takes over its context. No I/O. */
#include "deflate.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "utf8.h"

/* ---- negotiation ------------------------------------------------------------------------ */

/* RFC 6455 section 9.1: extension-list = 1#extension, extension = token *( ";" param ),
 * param = token [ "=" ( token / quoted-string ) ], whitespace allowed around separators. */

typedef struct cursor {
    const char *p, *end;
} cursor;

static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void skip_ows(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static bool at(const cursor *c, char ch)
{
    return c->p < c->end && *c->p == ch;
}

static bool token(cursor *c, wsl_span *t)
{
    t->p = c->p;
    while (c->p < c->end && is_tchar((unsigned char)*c->p))
        c->p++;
    t->len = (size_t)(c->p - t->p);
    return t->len > 0;
}

/* A parameter's value, unescaped; only short ones can mean anything to us. */
typedef struct value {
    bool present;
    size_t len;
    char s[8]; /* the first bytes (len may be larger) */
} value;

static void value_put(value *v, char ch)
{
    if (v->len < sizeof v->s) v->s[v->len] = ch;
    v->len++;
}

/* A token or a quoted-string whose unescaped content is a token (RFC 6455 section 9.1). */
static bool parse_value(cursor *c, value *v)
{
    v->present = true;
    v->len = 0;
    if (!at(c, '"')) {
        wsl_span t;
        if (!token(c, &t)) return false;
        for (size_t i = 0; i < t.len; i++)
            value_put(v, t.p[i]);
        return true;
    }
    c->p++;
    for (;;) {
        if (c->p >= c->end) return false; /* unterminated */
        unsigned char ch = (unsigned char)*c->p++;
        if (ch == '"') break;
        if (ch == '\\') {
            if (c->p >= c->end) return false;
            ch = (unsigned char)*c->p++;
        }
        if (!is_tchar(ch)) return false; /* covers controls, and what a token may not hold */
        value_put(v, (char)ch);
    }
    return v->len > 0;
}

static bool span_is(wsl_span s, const char *name)
{
    size_t n = strlen(name);
    return s.len == n && strncasecmp(s.p, name, n) == 0;
}

/* "8" to "15", no sign, no leading zero; 0 for anything else. */
static unsigned window_bits(const value *v)
{
    if (v->len == 1 && (v->s[0] == '8' || v->s[0] == '9')) return (unsigned)(v->s[0] - '0');
    if (v->len == 2 && v->s[0] == '1' && v->s[1] >= '0' && v->s[1] <= '5')
        return 10u + (unsigned)(v->s[1] - '0');
    return 0;
}

/* The parameters of one permessage-deflate offer, as seen so far. */
typedef struct offer {
    bool valid;
    bool snct, cnct; /* server_ / client_no_context_takeover */
    bool sbits_seen, cbits_seen;
    unsigned sbits, cbits; /* cbits 0: client_max_window_bits without a value */
} offer;

static void offer_param(offer *o, wsl_span name, const value *v)
{
    if (span_is(name, "server_no_context_takeover") ||
        span_is(name, "client_no_context_takeover")) {
        bool *seen = (name.p[0] | 0x20) == 's' ? &o->snct : &o->cnct;
        if (*seen || v->present) o->valid = false; /* duplicate, or a value it may not have */
        *seen = true;
    } else if (span_is(name, "server_max_window_bits")) {
        if (o->sbits_seen || !v->present || !(o->sbits = window_bits(v))) o->valid = false;
        o->sbits_seen = true;
    } else if (span_is(name, "client_max_window_bits")) {
        if (o->cbits_seen || (v->present && !(o->cbits = window_bits(v)))) o->valid = false;
        o->cbits_seen = true;
    } else {
        o->valid = false; /* a parameter RFC 7692 does not define for an offer */
    }
}

/* After a malformed element: on to the next comma that is not inside a quoted string. */
static void skip_element(cursor *c, const char *start)
{
    bool quoted = false;
    for (c->p = start; c->p < c->end; c->p++) {
        char ch = *c->p;
        if (quoted) {
            if (ch == '\\' && c->p + 1 < c->end)
                c->p++;
            else if (ch == '"')
                quoted = false;
        } else if (ch == '"') {
            quoted = true;
        } else if (ch == ',') {
            return;
        }
    }
}

/* One element of the list, from c->p to its comma (or the end, where c->p is left). True when
 * it is an acceptable permessage-deflate offer (*o filled). */
static bool element(cursor *c, offer *o)
{
    const char *start = c->p;
    memset(o, 0, sizeof *o);
    o->valid = true;
    wsl_span name;
    if (!token(c, &name)) goto malformed;
    bool ours = span_is(name, "permessage-deflate");
    skip_ows(c);
    while (at(c, ';')) {
        c->p++;
        skip_ows(c);
        wsl_span pname;
        value v = {0};
        if (!token(c, &pname)) goto malformed;
        skip_ows(c);
        if (at(c, '=')) {
            c->p++;
            skip_ows(c);
            if (!parse_value(c, &v)) goto malformed;
            skip_ows(c);
        }
        if (ours) offer_param(o, pname, &v);
    }
    if (c->p < c->end && *c->p != ',') goto malformed;
    return ours && o->valid;
malformed:
    skip_element(c, start);
    return false;
}

bool wsl_deflate_negotiate(const char *offers, size_t len, unsigned client_bits,
                           wsl_deflate_params *p)
{
    if (client_bits < 8) client_bits = 8;
    if (client_bits > 15) client_bits = 15;
    cursor c = {offers, offers + len};
    for (;;) {
        skip_ows(&c);
        while (at(&c, ',')) { /* empty elements are allowed and mean nothing */
            c.p++;
            skip_ows(&c);
        }
        if (c.p >= c.end) return false;
        offer o;
        if (!element(&c, &o)) continue;
        p->server_bits = (uint8_t)o.sbits;
        /* A client may only be asked for a smaller window if it offered client_max_window_bits;
         * without that, its context would cost a 32 KiB window: ask it to drop it instead. */
        p->client_takeover = o.cbits_seen && !o.cnct;
        unsigned cb = o.cbits ? o.cbits : 15;
        p->client_bits = p->client_takeover ? (uint8_t)(cb < client_bits ? cb : client_bits) : 0;
        return true;
    }
}

bool wsl_deflate_negotiate_request(const wsl_request *req, unsigned client_bits,
                                   wsl_deflate_params *p)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        const wsl_header *h = &req->headers[i];
        if (span_is(h->name, "sec-websocket-extensions") &&
            wsl_deflate_negotiate(h->value.p, h->value.len, client_bits, p))
            return true;
    }
    return false;
}

size_t wsl_deflate_answer(const wsl_deflate_params *p, char *out, size_t cap)
{
    char client[32] = "; client_no_context_takeover", server[32] = "";
    if (p->client_takeover) {
        client[0] = '\0';
        if (p->client_bits)
            snprintf(client, sizeof client, "; client_max_window_bits=%u",
                     (unsigned)p->client_bits);
    }
    if (p->server_bits)
        snprintf(server, sizeof server, "; server_max_window_bits=%u", (unsigned)p->server_bits);
    int n =
        snprintf(out, cap, "permessage-deflate; server_no_context_takeover%s%s", client, server);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

/* ---- the loop-wide state ---------------------------------------------------------------- */

/* zlib settings of the compressor, measured on chat-sized JSON (README, COMPRESSION): level 1
 * costs half the instructions of the default 6 for 3-7% more bytes; memLevel 5 is where the
 * per-message reset (its hash table) is cheap and larger messages lose nothing measurable. */
#define DEFLATE_LEVEL    1
#define DEFLATE_MEMLEVEL 5
/* The small-window compressor serves every server_max_window_bits below 15: zlib refuses a raw
 * 8-bit window, and with 9 bits it never reaches back more than 250 bytes, which fits them all. */
#define SMALL_WINDOW 9

#define POOL_MAX   4            /* inflate streams kept for reuse */
#define OUT_START  16384        /* first size of an output buffer */
#define OUT_KEEP   (256 * 1024) /* larger output buffers are given back after use */
#define TAIL_BYTES 4

static const uint8_t TAIL[TAIL_BYTES] = {0x00, 0x00, 0xff, 0xff};

typedef struct growbuf {
    uint8_t *p;
    size_t len, cap;
} growbuf;

struct wsl_deflate {
    z_stream def[2]; /* [0]: 15-bit window, [1]: SMALL_WINDOW */
    bool def_ready[2];
    growbuf zout;             /* the latest compressed message */
    growbuf out;              /* the latest inflated piece */
    z_stream *pool[POOL_MAX]; /* inflate streams (15-bit, reset) not lent out */
    unsigned npool;
    uint8_t *dict; /* 32 KiB, for a stream that ended inside a message (see restart) */
};

/* Progress of one compressed message. */
typedef struct zmsg {
    z_stream *strm;    /* lent from the pool; NULL when no message is in progress */
    uint64_t produced; /* inflated bytes so far */
    uint32_t utf8;
    uint8_t text;
    uint8_t ended; /* the stream reached a final block and no payload came after it */
    uint8_t fed;   /* some payload arrived */
} zmsg;

struct wsl_inflater {
    zmsg msg;     /* a message arriving in pieces */
    uint8_t bits; /* log2 of win's size; 0: no window kept */
    uint32_t win_len;
    uint8_t win[]; /* the last bytes the client's messages inflated to */
};

wsl_deflate *wsl_deflate_new(void)
{
    return calloc(1, sizeof(wsl_deflate));
}

void wsl_deflate_free(wsl_deflate *d)
{
    if (!d) return;
    for (int i = 0; i < 2; i++)
        if (d->def_ready[i]) deflateEnd(&d->def[i]);
    for (unsigned i = 0; i < d->npool; i++) {
        inflateEnd(d->pool[i]);
        free(d->pool[i]);
    }
    free(d->zout.p);
    free(d->out.p);
    free(d->dict);
    free(d);
}

/* Room for at least `need` bytes after len; a buffer grown past OUT_KEEP by an earlier large
 * message shrinks again when it is next used for a small one. */
static bool reserve(growbuf *b, size_t need)
{
    size_t want = b->len + need;
    if (want < b->len) return false;
    if (b->cap > OUT_KEEP && want <= OUT_KEEP && b->len == 0) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
    if (b->cap >= want) return true;
    size_t cap = b->cap ? b->cap : OUT_START;
    while (cap < want)
        cap = cap * 2 > cap ? cap * 2 : want;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return false;
    b->p = p;
    b->cap = cap;
    return true;
}

/* ---- compressing -------------------------------------------------------------------------- */

int wsl_deflate_compress(wsl_deflate *d, unsigned server_bits, const void *in, size_t n,
                         const uint8_t **out, size_t *out_len)
{
    /* Worth it only when smaller: give zlib room for n - 1 bytes plus the tail, no more. */
    if (n == 0 || n > UINT_MAX - 16) return 0;
    int v = server_bits && server_bits < 15;
    z_stream *s = &d->def[v];
    if (!d->def_ready[v]) {
        if (deflateInit2(s, DEFLATE_LEVEL, Z_DEFLATED, v ? -SMALL_WINDOW : -15, DEFLATE_MEMLEVEL,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            return -ENOMEM;
        d->def_ready[v] = true;
    } else if (deflateReset(s) != Z_OK) {
        return -ENOMEM;
    }
    d->zout.len = 0;
    if (!reserve(&d->zout, n + TAIL_BYTES)) return -ENOMEM;
    s->next_in = (Bytef *)(uintptr_t)in;
    s->avail_in = (uInt)n;
    s->next_out = d->zout.p;
    s->avail_out = (uInt)(n - 1 + TAIL_BYTES);
    int r = deflate(s, Z_SYNC_FLUSH);
    if (r == Z_MEM_ERROR) return -ENOMEM;
    /* Out of room (avail_out 0) means it would not have been smaller. */
    if (r != Z_OK || s->avail_in != 0 || s->avail_out == 0) return 0;
    size_t len = (size_t)(s->next_out - d->zout.p);
    if (len < TAIL_BYTES || memcmp(d->zout.p + len - TAIL_BYTES, TAIL, TAIL_BYTES) != 0) return 0;
    *out = d->zout.p;
    *out_len = len - TAIL_BYTES;
    return 1;
}

/* ---- inflating ---------------------------------------------------------------------------- */

static z_stream *borrow(wsl_deflate *d)
{
    if (d->npool) return d->pool[--d->npool];
    z_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    /* Always the largest window: any client's stream inflates with it, and a stream keeps its
     * window allocation across resets only while the size stays the same. */
    if (inflateInit2(s, -15) != Z_OK) {
        free(s);
        return NULL;
    }
    return s;
}

static void give_back(wsl_deflate *d, zmsg *m)
{
    z_stream *s = m->strm;
    m->strm = NULL;
    if (!s) return;
    if (d->npool < POOL_MAX && inflateReset(s) == Z_OK) {
        d->pool[d->npool++] = s;
        return;
    }
    inflateEnd(s);
    free(s);
}

/* A final block ended the deflate stream but the message goes on (RFC 7692 section 7.2.3.4):
 * a new stream continues with the old one's history as its dictionary. */
static int restart(wsl_deflate *d, z_stream *s)
{
    if (!d->dict && !(d->dict = malloc(32768))) return -ENOMEM;
    uInt len = 0;
    if (inflateGetDictionary(s, d->dict, &len) != Z_OK || inflateReset(s) != Z_OK) return -EBADMSG;
    if (len && inflateSetDictionary(s, d->dict, len) != Z_OK) return -EBADMSG;
    return 0;
}

/* Feed in[0..n) to the message's stream, appending what it inflates to d->out. `tail` marks the
 * 00 00 ff ff that ends a message: a stream that ends inside it has simply finished. */
static int feed(wsl_deflate *d, zmsg *m, const uint8_t *in, size_t n, uint64_t max, bool tail)
{
    z_stream *s = m->strm;
    if (m->ended) {
        if (tail || !n) return 0; /* the stream finished with the payload: no tail needed */
        int r = restart(d, s);
        if (r) return r;
        m->ended = 0;
    }
    if (!n) return 0; /* nothing is ever left pending: every call below ends with room left */
    s->next_in = (Bytef *)(uintptr_t)in;
    s->avail_in = 0;
    for (;;) {
        if (!s->avail_in && n) { /* zlib counts input in 32 bits */
            size_t k = n > UINT_MAX ? UINT_MAX : n;
            s->avail_in = (uInt)k;
            n -= k;
        }
        /* Never let zlib write more than one byte past the limit: that byte is the proof. */
        uint64_t left = max - m->produced + (max < UINT64_MAX);
        if (!reserve(&d->out, OUT_START / 4)) return -ENOMEM;
        size_t room = d->out.cap - d->out.len;
        if (room > left) room = (size_t)left;
        if (room > UINT_MAX) room = UINT_MAX;
        uint8_t *o = d->out.p + d->out.len;
        s->next_out = o;
        s->avail_out = (uInt)room;
        uInt had = s->avail_in;
        int r = inflate(s, Z_SYNC_FLUSH);
        size_t got = room - s->avail_out;
        if (got) {
            /* The first fault in byte order wins, however the output was cut: the bytes up to
             * the limit are checked as text before the one past it counts. */
            bool over = got > max - m->produced;
            size_t within = over ? (size_t)(max - m->produced) : got;
            if (m->text && (m->utf8 = wsl_utf8_feed(m->utf8, o, within)) == WSL_UTF8_REJECT)
                return -EILSEQ;
            if (over) return -EMSGSIZE;
            d->out.len += got;
            m->produced += got;
        }
        if (r == Z_STREAM_END) {
            m->ended = 1;
            if (tail || (!s->avail_in && !n)) return 0;
            if ((r = restart(d, s))) return r;
            m->ended = 0;
            continue;
        }
        if (r == Z_MEM_ERROR) return -ENOMEM;
        if (r != Z_OK && r != Z_BUF_ERROR) return -EBADMSG; /* Z_DATA_ERROR, Z_NEED_DICT */
        if (!got && s->avail_in && s->avail_in == had) return -EBADMSG; /* no progress: never */
        if (!s->avail_in && !n && s->avail_out) return 0; /* all taken, all output given */
    }
}

/* The window of a client that keeps its context: the last 2^bits bytes it inflated to. */
static void keep_history(wsl_inflater *inf, const uint8_t *p, size_t n)
{
    size_t cap = (size_t)1 << inf->bits;
    if (n >= cap) {
        memcpy(inf->win, p + n - cap, cap);
        inf->win_len = (uint32_t)cap;
        return;
    }
    size_t keep = inf->win_len < cap - n ? inf->win_len : cap - n;
    memmove(inf->win, inf->win + inf->win_len - keep, keep);
    memcpy(inf->win + keep, p, n);
    inf->win_len = (uint32_t)(keep + n);
}

static wsl_inflater *inflater_new(unsigned bits)
{
    size_t win = bits ? (size_t)1 << bits : 0;
    wsl_inflater *inf = calloc(1, sizeof *inf + win);
    if (inf) inf->bits = (uint8_t)bits;
    return inf;
}

int wsl_inflate(wsl_deflate *d, wsl_inflater **pinf, unsigned flags, unsigned client_bits,
                const uint8_t *in, size_t n, uint64_t max, const uint8_t **out, size_t *out_len)
{
    bool takeover = flags & WSL_INFLATE_TAKEOVER;
    unsigned bits = takeover ? (client_bits >= 8 && client_bits <= 15 ? client_bits : 15) : 0;
    wsl_inflater *inf = *pinf;
    zmsg local = {0}, *m;
    int r = 0;
    d->out.len = 0;

    if (flags & WSL_INFLATE_FIRST) {
        if (inf && inf->msg.strm) give_back(d, &inf->msg); /* an abandoned message */
        if (!(flags & WSL_INFLATE_LAST) || takeover) {
            /* State that outlives this call: a message in pieces, or a window to keep. */
            if (!inf && !(inf = *pinf = inflater_new(bits))) return -ENOMEM;
        }
        m = (flags & WSL_INFLATE_LAST) ? &local : &inf->msg;
        *m = (zmsg){0};
        if (!(m->strm = borrow(d))) return -ENOMEM;
        m->text = (flags & WSL_INFLATE_TEXT) != 0;
        m->utf8 = WSL_UTF8_ACCEPT;
        if (takeover && inf->bits && inf->win_len &&
            inflateSetDictionary(m->strm, inf->win, inf->win_len) != Z_OK) {
            r = -EBADMSG;
            goto done;
        }
    } else {
        if (!inf || !inf->msg.strm) return -EINVAL;
        m = &inf->msg;
    }

    if ((r = feed(d, m, in, n, max, false))) goto done;
    m->fed |= n > 0;
    /* No payload at all is no deflate data, but it can only mean an empty message, and zlib
     * users send it when a flush with nothing new gives them nothing: accept it as one. */
    if ((flags & WSL_INFLATE_LAST) && m->fed) {
        if ((r = feed(d, m, TAIL, TAIL_BYTES, max, true))) goto done;
        /* The message must end where a block does: mode TYPE, no bits pending (zlib's
         * data_type is exactly 128 then), or with the end of a final block. */
        if (!m->ended && m->strm->data_type != 128) {
            r = -EBADMSG;
            goto done;
        }
        if (m->text && m->utf8 != WSL_UTF8_ACCEPT) {
            r = -EILSEQ;
            goto done;
        }
    }
    if (takeover && inf->bits) keep_history(inf, d->out.p, d->out.len);
    *out = d->out.p;
    *out_len = d->out.len;

done:
    if (r || (flags & WSL_INFLATE_LAST)) {
        give_back(d, m);
        if (!r && inf && !inf->bits) { /* nothing to keep until the next message */
            wsl_inflater_free(d, inf);
            *pinf = NULL;
        }
    }
    return r;
}

size_t wsl_inflater_memory(const wsl_inflater *inf)
{
    if (!inf) return 0;
    size_t n = sizeof *inf + (inf->bits ? (size_t)1 << inf->bits : 0);
    /* zlib's inflate state (about 7 KiB) and its 32 KiB window, while a stream is lent. */
    if (inf->msg.strm) n += sizeof(z_stream) + 7168 + 32768;
    return n;
}

void wsl_inflater_free(wsl_deflate *d, wsl_inflater *inf)
{
    if (!inf) return;
    give_back(d, &inf->msg);
    free(inf);
}

unsigned wsl_inflate_close_code(int err, const char **reason)
{
    switch (err) {
    case -EMSGSIZE:
        *reason = "message too big";
        return 1009;
    case -EBADMSG:
        *reason = "invalid compressed data";
        return 1007;
    case -EILSEQ:
        *reason = "invalid UTF-8 in a text message";
        return 1007;
    case -ENOMEM:
        *reason = "out of memory";
        return 1011;
    default:
        *reason = "compressed message out of sequence";
        return 1002;
    }
}

/* --trust-proxy: CIDR ranges, address parsing and matching, and the walk over X-Forwarded-For
 * that finds the client behind a chain of trusted proxies (the right-most address that is not
 * itself trusted, as nginx's real_ip_recursive does). Pure code. */
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* inet_pton wants a NUL-terminated string. */
static bool pton(const char *s, size_t len, wsl_ipaddr *out)
{
    char tmp[WSL_IP_STRLEN];
    if (len == 0 || len >= sizeof tmp) return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    *out = (wsl_ipaddr){0};
    if (inet_pton(AF_INET, tmp, out->b) == 1) {
        out->v4 = true;
        return true;
    }
    if (inet_pton(AF_INET6, tmp, out->b) != 1) return false;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (memcmp(out->b, mapped, sizeof mapped) == 0) {
        memmove(out->b, out->b + 12, 4);
        memset(out->b + 4, 0, 12);
        out->v4 = true;
    }
    return true;
}

static bool all_digits(const char *p, size_t n)
{
    if (n == 0 || n > 5) return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] < '0' || p[i] > '9') return false;
    return true;
}

bool wsl_ip_parse(const char *s, size_t len, wsl_ipaddr *out)
{
    if (len && s[0] == '[') { /* [v6] or [v6]:port */
        const char *close = memchr(s, ']', len);
        if (!close) return false;
        size_t rest = len - (size_t)(close + 1 - s);
        if (rest && (close[1] != ':' || !all_digits(close + 2, rest - 1))) return false;
        return pton(s + 1, (size_t)(close - s - 1), out) && !out->v4;
    }
    const char *colon = memchr(s, ':', len);
    if (colon && !memchr(colon + 1, ':', len - (size_t)(colon + 1 - s))) { /* v4:port */
        if (!all_digits(colon + 1, len - (size_t)(colon + 1 - s))) return false;
        return pton(s, (size_t)(colon - s), out) && out->v4;
    }
    return pton(s, len, out);
}

void wsl_ip_format(const wsl_ipaddr *a, char *out, size_t cap)
{
    if (!inet_ntop(a->v4 ? AF_INET : AF_INET6, a->b, out, (socklen_t)cap) && cap)
        snprintf(out, cap, "?");
}

static void mask(wsl_ipaddr *a, unsigned bits)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = bits > i * 8 ? bits - i * 8 : 0;
        if (keep < 8) a->b[i] &= (uint8_t)(0xFF00u >> keep);
    }
}

int wsl_proxy_parse(const char *list, wsl_cidr *out, size_t cap, size_t *n, char *why,
                    size_t whycap)
{
    *n = 0;
    wsl_span rest = {list, strlen(list)}, item;
    while (wsl_http_next_token(&rest, &item)) {
        if (*n == cap) {
            snprintf(why, whycap, "more than %zu ranges", cap);
            return -EINVAL;
        }
        const char *slash = memchr(item.p, '/', item.len);
        size_t alen = slash ? (size_t)(slash - item.p) : item.len;
        wsl_cidr *c = &out[*n];
        if (!pton(item.p, alen, &c->addr)) {
            snprintf(why, whycap, "'%.*s' is not an IPv4 or IPv6 address", (int)alen, item.p);
            return -EINVAL;
        }
        unsigned max = c->addr.v4 ? 32 : 128, bits = max;
        if (slash) {
            size_t blen = item.len - alen - 1;
            char digits[4] = "";
            if (blen == 0 || blen > 3 || !all_digits(slash + 1, blen) ||
                (memcpy(digits, slash + 1, blen), bits = (unsigned)atoi(digits)) > max) {
                snprintf(why, whycap, "'%.*s': the prefix length must be 0 to %u", (int)item.len,
                         item.p, max);
                return -EINVAL;
            }
        }
        c->bits = (uint8_t)bits;
        mask(&c->addr, bits);
        (*n)++;
    }
    if (*n == 0) {
        snprintf(why, whycap, "no address range given");
        return -EINVAL;
    }
    return 0;
}

bool wsl_proxy_trusted(const wsl_cidr *r, size_t n, const wsl_ipaddr *a)
{
    for (size_t i = 0; i < n; i++) {
        if (r[i].addr.v4 != a->v4) continue;
        wsl_ipaddr m = *a;
        mask(&m, r[i].bits);
        if (memcmp(m.b, r[i].addr.b, 16) == 0) return true;
    }
    return false;
}

/* The last element of a comma list, or false when it has none. */
static bool last_token(wsl_span list, wsl_span *last)
{
    wsl_span tok;
    bool any = false;
    while (wsl_http_next_token(&list, &tok)) {
        *last = tok;
        any = true;
    }
    return any;
}

static bool span_ieq(wsl_span s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.len != n) return false;
    for (size_t i = 0; i < n; i++)
        if (wsl_ascii_lower_char(s.p[i]) != lit[i]) return false;
    return true;
}

/* Walk one X-Forwarded-For value from the right. 1: the client was found (*client); 0: every
 * element was trusted (*client, *have: the left-most so far); -1: the walk ends here. */
static int walk(const wsl_cidr *r, size_t n, wsl_span v, wsl_ipaddr *client, bool *have)
{
    const char *end = v.p + v.len;
    while (end > v.p) {
        const char *start = end;
        while (start > v.p && start[-1] != ',')
            start--;
        const char *a_end = end;
        end = start > v.p ? start - 1 : v.p;
        while (start < a_end && (*start == ' ' || *start == '\t'))
            start++;
        while (a_end > start && (a_end[-1] == ' ' || a_end[-1] == '\t'))
            a_end--;
        if (start == a_end) continue; /* an empty element, as in "a,,b" */
        wsl_ipaddr a;
        if (!wsl_ip_parse(start, (size_t)(a_end - start), &a)) return -1;
        *client = a;
        *have = true;
        if (!wsl_proxy_trusted(r, n, &a)) return 1;
    }
    return 0;
}

bool wsl_proxy_client(const wsl_cidr *r, size_t n, const wsl_request *req, wsl_ipaddr *client,
                      bool *secure)
{
    bool have = false;
    for (size_t i = req->nheaders; i-- > 0;) {
        const wsl_header *h = &req->headers[i];
        if (!span_ieq(h->name, "x-forwarded-for")) continue;
        if (walk(r, n, h->value, client, &have) != 0) break;
    }
    if (!have) {
        for (size_t i = req->nheaders; i-- > 0;) {
            const wsl_header *h = &req->headers[i];
            if (!span_ieq(h->name, "x-real-ip")) continue;
            have = wsl_ip_parse(h->value.p, h->value.len, client);
            break;
        }
    }
    for (size_t i = req->nheaders; i-- > 0;) {
        const wsl_header *h = &req->headers[i];
        wsl_span proto = {NULL, 0};
        if (!span_ieq(h->name, "x-forwarded-proto") || !last_token(h->value, &proto)) continue;
        if (span_ieq(proto, "https")) *secure = true;
        if (span_ieq(proto, "http")) *secure = false;
        break;
    }
    return have;
}

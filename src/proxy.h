/* --trust-proxy: the address ranges whose peers (reverse proxies) may say who the client is, and
 * the client such a peer names: X-Forwarded-For walked from the right past the addresses that are
 * trusted themselves, else X-Real-IP; X-Forwarded-Proto says whether the client came over TLS.
 * Peers outside the ranges cannot set any of it. Pure code: no I/O, no allocation. */
#ifndef WSL_PROXY_H
#define WSL_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

#define WSL_PROXY_MAX_RANGES 32
#define WSL_IP_STRLEN        46 /* INET6_ADDRSTRLEN: the longest address text with its NUL */

/* An IPv4 or IPv6 address; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is stored as IPv4, so
 * a dual-stack socket's peers match IPv4 ranges. */
typedef struct wsl_ipaddr {
    uint8_t b[16]; /* IPv4: b[0..3] */
    bool v4;
} wsl_ipaddr;

/* addr/bits; an IPv4 range matches IPv4 addresses only, an IPv6 one IPv6 addresses only. */
typedef struct wsl_cidr {
    wsl_ipaddr addr; /* the bits past the prefix are zero */
    uint8_t bits;
} wsl_cidr;

/* An address as a client or proxy writes it: IPv4, IPv6, IPv6 in brackets, either with a
 * ":port" (dropped); surrounding whitespace is not allowed. */
bool wsl_ip_parse(const char *s, size_t len, wsl_ipaddr *out);
/* The address as text (IPv6 without brackets) into out (WSL_IP_STRLEN bytes). */
void wsl_ip_format(const wsl_ipaddr *a, char *out, size_t cap);

/* "CIDR[,CIDR...]": each ADDR/BITS, or a bare ADDR (one address). 0 and the ranges in out[0..*n),
 * or -EINVAL with the reason in why (an address, a prefix length, more than cap ranges). */
int wsl_proxy_parse(const char *list, wsl_cidr *out, size_t cap, size_t *n, char *why,
                    size_t whycap);

/* Whether a lies inside one of the n ranges. */
bool wsl_proxy_trusted(const wsl_cidr *r, size_t n, const wsl_ipaddr *a);

/* For a request from a trusted peer: the client its headers name. X-Forwarded-For (every such
 * header, in order, as one list) is walked from the right: a trusted address is another proxy
 * and is passed; the first one that is not is the client; when all are trusted, the left-most;
 * an element that is no address ends the walk (nothing left of it can be believed). Without a
 * usable X-Forwarded-For, X-Real-IP. True and *client when a client was named. *secure is set
 * from the last X-Forwarded-Proto element when it says "https" or "http", else left alone. */
bool wsl_proxy_client(const wsl_cidr *r, size_t n, const wsl_request *req, wsl_ipaddr *client,
                      bool *secure);

#endif

/* Streaming UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF).
 * The state survives between calls, so a text message split across frames or reads is checked
 * as it arrives and fails at the first byte that makes it impossible. Pure. */
#ifndef WSL_UTF8_H
#define WSL_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WSL_UTF8_ACCEPT 0u  /* between code points: the text so far is complete and valid */
#define WSL_UTF8_REJECT 12u /* impossible; sticky: feeding more bytes never leaves it */

/* Feed n bytes; returns the new state. Any other value than ACCEPT or REJECT means "valid so far,
 * in the middle of a code point". */
uint32_t wsl_utf8_feed(uint32_t state, const uint8_t *p, size_t n);

static inline bool wsl_utf8_valid(const void *p, size_t n)
{
    return wsl_utf8_feed(WSL_UTF8_ACCEPT, (const uint8_t *)p, n) == WSL_UTF8_ACCEPT;
}

#endif

/* The Sec-WebSocket-Accept computation of RFC 6455 section 4.2.2: SHA-1 and base64, plus the
 * check that a client's key is base64 of exactly 16 bytes. Pure. */
#ifndef WSL_HANDSHAKE_H
#define WSL_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WSL_ACCEPT_LEN 28 /* base64 of a 20-byte SHA-1 */

void wsl_sha1(const void *data, size_t len, uint8_t out[20]);

/* Writes 4 * ceil(n / 3) characters plus a NUL; returns the characters written (without NUL). */
size_t wsl_base64_encode(const uint8_t *in, size_t n, char *out);

/* True when key is canonical base64 (padding included) of exactly 16 bytes: 24 characters. */
bool wsl_handshake_key_valid(const char *key, size_t len);

/* out receives WSL_ACCEPT_LEN characters and a NUL. */
void wsl_handshake_accept(const char *key, size_t len, char out[WSL_ACCEPT_LEN + 1]);

#endif

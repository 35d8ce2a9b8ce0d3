/* Streaming UTF-8 validation as a small DFA: each byte maps to one of 12 classes, and the state
 * (a multiple of 12, so state + class indexes the transition table directly) says how much of a
 * code point is still owed and which second bytes are allowed. Pure. */
#include "utf8.h"

#include <string.h>

/* Byte classes. The lead bytes E0, ED, F0 and F4 get classes of their own because they restrict
 * the byte after them: E0 and F0 to exclude overlongs, ED to exclude surrogates (U+D800..DFFF),
 * F4 to stop at U+10FFFF. C0, C1 and F5..FF can never appear. */
enum {
    C_ASCII = 0, /* 00..7F */
    C_CONT_LO,   /* 80..8F */
    C_CONT_MID,  /* 90..9F */
    C_CONT_HI,   /* A0..BF */
    C_BAD,       /* C0 C1 F5..FF */
    C_LEAD2,     /* C2..DF */
    C_E0,        /* E0: then A0..BF */
    C_LEAD3,     /* E1..EC EE EF */
    C_ED,        /* ED: then 80..9F */
    C_F0,        /* F0: then 90..BF */
    C_LEAD4,     /* F1..F3 */
    C_F4,        /* F4: then 80..8F */
    N_CLASSES
};

/* clang-format off */
static const uint8_t byte_class[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 10 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 20 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 30 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 40 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 50 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 60 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 70 */
    1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  /* 80 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 90 */
    3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  /* A0 */
    3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  /* B0 */
    4,  4,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  /* C0 */
    5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  /* D0 */
    6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  7,  /* E0 */
    9,  10, 10, 10, 11, 4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* F0 */
};
/* clang-format on */

/* States, each a row of N_CLASSES entries. */
enum {
    S_ACCEPT = 0,  /* between code points */
    S_REJECT = 12, /* impossible, forever */
    S_NEED1 = 24,  /* one more continuation byte, any 80..BF */
    S_NEED2 = 36,  /* two more, any */
    S_E0 = 48,     /* after E0: A0..BF, then one more */
    S_ED = 60,     /* after ED: 80..9F, then one more */
    S_F0 = 72,     /* after F0: 90..BF, then two more */
    S_NEED3 = 84,  /* three more, any (after F1..F3) */
    S_F4 = 96,     /* after F4: 80..8F, then two more */
    N_STATES = 9
};

_Static_assert(S_ACCEPT == WSL_UTF8_ACCEPT && S_REJECT == WSL_UTF8_REJECT,
               "the header's constants are states of this table");

#define R S_REJECT
/* clang-format off */
static const uint8_t transition[N_STATES * N_CLASSES] = {
    /*            ASCII     80..8F    90..9F    A0..BF    BAD LEAD2    E0    LEAD3    ED    F0    LEAD4    F4 */
    /* ACCEPT */ S_ACCEPT, R,        R,        R,        R,  S_NEED1, S_E0, S_NEED2, S_ED, S_F0, S_NEED3, S_F4,
    /* REJECT */ R,        R,        R,        R,        R,  R,       R,    R,       R,    R,    R,       R,
    /* NEED1  */ R,        S_ACCEPT, S_ACCEPT, S_ACCEPT, R,  R,       R,    R,       R,    R,    R,       R,
    /* NEED2  */ R,        S_NEED1,  S_NEED1,  S_NEED1,  R,  R,       R,    R,       R,    R,    R,       R,
    /* E0     */ R,        R,        R,        S_NEED1,  R,  R,       R,    R,       R,    R,    R,       R,
    /* ED     */ R,        S_NEED1,  S_NEED1,  R,        R,  R,       R,    R,       R,    R,    R,       R,
    /* F0     */ R,        R,        S_NEED2,  S_NEED2,  R,  R,       R,    R,       R,    R,    R,       R,
    /* NEED3  */ R,        S_NEED2,  S_NEED2,  S_NEED2,  R,  R,       R,    R,       R,    R,    R,       R,
    /* F4     */ R,        S_NEED2,  R,        R,        R,  R,       R,    R,       R,    R,    R,       R,
};
/* clang-format on */
#undef R

#define HIGH_BITS 0x8080808080808080ull

uint32_t wsl_utf8_feed(uint32_t state, const uint8_t *p, size_t n)
{
    /* A state that is not one of ours would index past the table. */
    if (state % N_CLASSES != 0 || state >= N_STATES * N_CLASSES) return WSL_UTF8_REJECT;
    if (n == 0) return state; /* p may be NULL */
    const uint8_t *end = p + n;
    while (p < end) {
        if (state == S_ACCEPT) {
            /* Text is mostly ASCII: between code points, skip 8 bytes at a time while none has
             * its high bit set. */
            while ((size_t)(end - p) >= 8) {
                uint64_t w;
                memcpy(&w, p, 8);
                if (w & HIGH_BITS) break;
                p += 8;
            }
            while (p < end && *p < 0x80)
                p++; /* the ASCII tail, without the table */
            if (p == end) break;
        }
        state = transition[state + byte_class[*p++]];
        if (state == S_REJECT) break;
    }
    return state;
}

/* Shared by the fuzz targets: an assertion that stays on in every build (libFuzzer reports the
 * abort with the input that caused it). */
#ifndef WSL_FUZZ_H
#define WSL_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #c);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif

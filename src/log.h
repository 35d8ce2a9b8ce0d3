/* Timestamped, levelled log lines on stderr: one line (or one multi-line block, for a traceback)
 * per event, written with a single write() so lines never interleave. */
#ifndef WSL_LOG_H
#define WSL_LOG_H

#include <stdbool.h>

typedef enum { WSL_LOG_ERROR, WSL_LOG_WARN, WSL_LOG_INFO, WSL_LOG_DEBUG } wsl_log_level;

void wsl_log_set_level(wsl_log_level max);
/* Name this process in every later line ("w1" -> "INFO [w1] message"); NULL or "" for none. */
void wsl_log_set_name(const char *name);
bool wsl_log_enabled(wsl_log_level level);
void wsl_log(wsl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define wsl_error(...) wsl_log(WSL_LOG_ERROR, __VA_ARGS__)
#define wsl_warn(...)  wsl_log(WSL_LOG_WARN, __VA_ARGS__)
#define wsl_info(...)  wsl_log(WSL_LOG_INFO, __VA_ARGS__)
#define wsl_debug(...)                                                                             \
    do {                                                                                           \
        if (wsl_log_enabled(WSL_LOG_DEBUG)) wsl_log(WSL_LOG_DEBUG, __VA_ARGS__);                   \
    } while (0)

#endif

/* Log lines: "2026-11-25T20:33:57.123Z INFO message", or "... INFO [w1] message" in a process that
 * has a name (a worker, the supervisor). Each line is formatted into one buffer and
 * written with one write(2), so concurrent writers (and a test reading stderr) never see half a
 * line. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static wsl_log_level max_level = WSL_LOG_INFO;
static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static char proc_name[32]; /* "" or "[name] ", ready to print */

void wsl_log_set_name(const char *name)
{
    if (name && *name)
        snprintf(proc_name, sizeof proc_name, "[%.*s] ", (int)sizeof proc_name - 4, name);
    else
        proc_name[0] = '\0';
}

void wsl_log_set_level(wsl_log_level max)
{
    max_level = max;
}

bool wsl_log_enabled(wsl_log_level level)
{
    return level <= max_level;
}

void wsl_log(wsl_log_level level, const char *fmt, ...)
{
    if (level > max_level) return;

    char line[8192];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, names[level], proc_name);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2; /* truncated: still end the line */
    line[len++] = '\n';

    const char *p = line;
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, p, len);
        if (w <= 0) break; /* nowhere left to report a failing stderr */
        p += w;
        len -= (size_t)w;
    }
}

/* Timestamped, levelled log lines on stderr: one line (or one multi-line block, for a traceback)
 * per event in the text format, one JSON object per line in the JSON format, each written with a
 * single write() so lines never interleave. */
#ifndef WSL_LOG_H
#define WSL_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef enum { WSL_LOG_ERROR, WSL_LOG_WARN, WSL_LOG_INFO, WSL_LOG_DEBUG } wsl_log_level;
typedef enum { WSL_LOG_TEXT, WSL_LOG_JSON } wsl_log_format;

void wsl_log_set_level(wsl_log_level max);
/* --log-format: text (the default) or JSON lines; set once, before any line is written. */
void wsl_log_set_format(wsl_log_format format);
/* Name this process in every later line ("w1" -> "INFO [w1] message", or "worker":"w1" in
 * JSON); NULL or "" for none. */
void wsl_log_set_name(const char *name);
bool wsl_log_enabled(wsl_log_level level);
void wsl_log(wsl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A line about one connection: "conn#ID REMOTE: message" in text; in JSON the message alone,
 * with the id and the address as the fields conn and remote. */
void wsl_log_conn(wsl_log_level level, uint64_t id, const char *remote, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A message that names its connection in its own words (a Lua error, ws.log(conn, ...)): the text
 * line is the message as it is; JSON adds the fields conn and remote. */
void wsl_log_about(wsl_log_level level, uint64_t id, const char *remote, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A message of len bytes as it is (ws.log's): JSON keeps every byte, NULs included, and adds
 * conn and remote when has_conn; the text line escapes control bytes (\n, \r, \xHH). */
void wsl_log_bytes(wsl_log_level level, bool has_conn, uint64_t id, const char *remote,
                   const char *msg, size_t len);
/* An error before the server runs (no script, a bad --static): "wsluad: message" in text, as a
 * command-line tool says it; an ordinary error line in JSON, so a log reader sees it too. */
void wsl_log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "2026-11-25T20:33:57.123Z" (UTC, milliseconds) for a CLOCK_REALTIME time at or after 1970:
 * WSL_LOG_STAMP_LEN characters and a NUL into out. Async-signal-safe. */
#define WSL_LOG_STAMP_LEN 24
void wsl_log_stamp(char *out, const struct timespec *ts);

/* A line written from a signal handler, in the format in force: nothing here takes a lock or
 * formats with stdio. msg: printable ASCII with no quote or backslash (written as it is). */
void wsl_log_from_signal(wsl_log_level level, const char *msg);

#define wsl_error(...) wsl_log(WSL_LOG_ERROR, __VA_ARGS__)
#define wsl_warn(...)  wsl_log(WSL_LOG_WARN, __VA_ARGS__)
#define wsl_info(...)  wsl_log(WSL_LOG_INFO, __VA_ARGS__)
#define wsl_debug(...)                                                                             \
    do {                                                                                           \
        if (wsl_log_enabled(WSL_LOG_DEBUG)) wsl_log(WSL_LOG_DEBUG, __VA_ARGS__);                   \
    } while (0)

/* ---- the JSON line writer, pure, for the tests --------------------------------------------- */

/* One line's content; the strings are borrowed for the call. */
typedef struct wsl_log_entry {
    struct timespec ts; /* CLOCK_REALTIME */
    wsl_log_level level;
    const char *worker; /* NULL: no "worker" field */
    bool has_conn;      /* false: no "conn" field */
    uint64_t conn;
    const char *remote; /* NULL: no "remote" field */
    const char *msg;    /* any bytes; msg_len of them */
    size_t msg_len;
} wsl_log_entry;

/* The smallest buffer wsl_log_json accepts: room for every field but the message. */
#define WSL_LOG_JSON_MIN 1024

/* Writes e as one JSON object and a '\n' into out (cap >= WSL_LOG_JSON_MIN bytes) and returns
 * its length, never more than cap; no NUL is added. Fields in this order: ts, level, worker,
 * conn, remote, msg. Strings are escaped so that any input gives valid JSON: quote, backslash
 * and control characters (a traceback's newlines become \n), DEL as \u007f, and each ill-formed
 * UTF-8 sequence as one \ufffd. A message that does not fit is cut at a character and the
 * object gets "truncated":true; worker and remote are cut to 64 bytes
 * first. */
size_t wsl_log_json(char *out, size_t cap, const wsl_log_entry *e);

#endif

/* Log lines: "2026-11-25T20:33:57.123Z INFO message", or "... INFO [w1] message" in a process that
 * has a name (a worker, the supervisor); with --log-format json, one JSON object per line
 * ({"ts":...,"level":"info","worker":"w1","conn":7,"remote":"...","msg":"..."}). Each line is
 * formatted into one buffer and written with one write(2), so concurrent writers (and a test
 * reading stderr) never see half a line. */
#include "log.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static wsl_log_level max_level = WSL_LOG_INFO;
static wsl_log_format format = WSL_LOG_TEXT;
static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static const char *const json_names[] = {"error", "warn", "info", "debug"};
static char proc_name[32]; /* "" or "[name] ", ready to print */
static char proc_raw[32];  /* "" or "name", for the JSON field */

void wsl_log_set_name(const char *name)
{
    if (name && *name) {
        snprintf(proc_name, sizeof proc_name, "[%.*s] ", (int)sizeof proc_name - 4, name);
        snprintf(proc_raw, sizeof proc_raw, "%.*s", (int)sizeof proc_name - 4, name);
    } else {
        proc_name[0] = proc_raw[0] = '\0';
    }
}

void wsl_log_set_level(wsl_log_level max)
{
    max_level = max;
}

void wsl_log_set_format(wsl_log_format f)
{
    format = f;
}

bool wsl_log_enabled(wsl_log_level level)
{
    return level <= max_level;
}

/* ---- the time stamp ------------------------------------------------------------------------ */

/* Writes the digits of v, width of them (v < 10^width). */
static char *digits(char *p, long v, int width)
{
    for (int i = width - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
    return p + width;
}

/* Without gmtime_r, which may take a lock: the civil date of a day count since 1970 is
 * H. Hinnant's civil_from_days. */
void wsl_log_stamp(char *out, const struct timespec *ts)
{
    long z = (long)(ts->tv_sec / 86400) + 719468, secs = (long)(ts->tv_sec % 86400);
    long era = z / 146097, doe = z - era * 146097;
    long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    long day = doy - (153 * mp + 2) / 5 + 1, month = mp < 10 ? mp + 3 : mp - 9;
    char *p = digits(out, yoe + era * 400 + (month <= 2), 4);
    *p++ = '-';
    p = digits(p, month, 2);
    *p++ = '-';
    p = digits(p, day, 2);
    *p++ = 'T';
    p = digits(p, secs / 3600, 2);
    *p++ = ':';
    p = digits(p, secs / 60 % 60, 2);
    *p++ = ':';
    p = digits(p, secs % 60, 2);
    *p++ = '.';
    p = digits(p, ts->tv_nsec / 1000000, 3);
    *p++ = 'Z';
    *p = '\0';
}

/* ---- the JSON line writer ------------------------------------------------------------------ */

/* Output into a fixed buffer; a put that does not fit writes nothing and returns false. */
typedef struct jw {
    char *p;
    size_t len, cap;
} jw;

static bool put(jw *w, const char *s, size_t n)
{
    if (w->cap - w->len < n) return false;
    memcpy(w->p + w->len, s, n);
    w->len += n;
    return true;
}

/* The length of the well-formed UTF-8 character at p (1 to 4 bytes), or 0 when it is ill-formed;
 * *bad then says how many bytes to replace with one U+FFFD: the maximal subpart of a character
 * that could have been well-formed, at least 1 (Unicode's recommended practice, chapter 3.9). */
static size_t utf8_char(const unsigned char *p, size_t n, size_t *bad)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0; /* overlong */
        if (c == 0xED) hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90; /* overlong */
        if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
    } else {
        *bad = 1;
        return 0;
    }
    size_t i = 1;
    for (; i < need && i < n; i++) {
        unsigned char b = p[i];
        if (i == 1 ? b < lo || b > hi : b < 0x80 || b > 0xBF) break;
    }
    if (i == need) return need;
    *bad = i;
    return 0;
}

/* s[0..n) as the inside of a JSON string, never past `limit` bytes of output. Returns false when
 * it had to stop early (at a character: an escape or a character is never cut). */
static bool put_escaped(jw *w, const char *s, size_t n, size_t limit)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        char esc[8];
        const char *out = s + i;
        size_t olen = 1, adv = 1;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            out = esc;
            olen = 2;
        } else if (c < 0x20 || c == 0x7F) {
            static const char short_form[] = "btn\0fr"; /* \b \t \n, \f \r: 8..13 but 11 */
            if (c >= '\b' && c <= '\r' && short_form[c - '\b']) {
                esc[0] = '\\';
                esc[1] = short_form[c - '\b'];
                olen = 2;
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                olen = 6;
            }
            out = esc;
        } else if (c >= 0x80) {
            size_t bad = 1, k = utf8_char(p + i, n - i, &bad);
            if (k) {
                olen = adv = k;
            } else {
                out = "\\ufffd";
                olen = 6;
                adv = bad;
            }
        }
        if (limit < w->len || limit - w->len < olen) return false;
        memcpy(w->p + w->len, out, olen);
        w->len += olen;
        i += adv;
    }
    return true;
}

/* ,"name":"value" with value cut to 64 bytes. */
static bool put_field(jw *w, const char *name, const char *value)
{
    char head[32];
    int h = snprintf(head, sizeof head, ",\"%s\":\"", name);
    size_t n = strlen(value);
    return put(w, head, (size_t)h) && put_escaped(w, value, n > 64 ? 64 : n, w->cap) &&
           put(w, "\"", 1);
}

size_t wsl_log_json(char *out, size_t cap, const wsl_log_entry *e)
{
    static const char end[] = "\"}\n", cut[] = "\",\"truncated\":true}\n";
    if (cap < WSL_LOG_JSON_MIN) return 0;
    jw w = {out, 0, cap};
    char stamp[WSL_LOG_STAMP_LEN + 1];
    wsl_log_stamp(stamp, &e->ts);
    unsigned level = (unsigned)e->level < 4 ? (unsigned)e->level : WSL_LOG_ERROR;
    char head[128];
    int h =
        snprintf(head, sizeof head, "{\"ts\":\"%s\",\"level\":\"%s\"", stamp, json_names[level]);
    /* Everything before the message fits in WSL_LOG_JSON_MIN (log.h says why). */
    put(&w, head, (size_t)h);
    if (e->worker) put_field(&w, "worker", e->worker);
    if (e->has_conn) {
        h = snprintf(head, sizeof head, ",\"conn\":%llu", (unsigned long long)e->conn);
        put(&w, head, (size_t)h);
    }
    if (e->remote) put_field(&w, "remote", e->remote);
    put(&w, ",\"msg\":\"", 8);
    if (put_escaped(&w, e->msg, e->msg_len, cap - (sizeof cut - 1)))
        put(&w, end, sizeof end - 1);
    else
        put(&w, cut, sizeof cut - 1);
    return w.len;
}

/* ---- writing ------------------------------------------------------------------------------- */

static void write_line(const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, p, len);
        if (w <= 0) break; /* nowhere left to report a failing stderr */
        p += w;
        len -= (size_t)w;
    }
}

/* How a line names its connection. */
typedef enum { NO_CONN, CONN_PREFIX, CONN_FIELDS } conn_mode;

static void emit_json(wsl_log_level level, conn_mode mode, uint64_t id, const char *remote,
                      const char *msg, size_t len)
{
    char line[16384];
    wsl_log_entry e = {.level = level,
                       .worker = proc_raw[0] ? proc_raw : NULL,
                       .has_conn = mode != NO_CONN,
                       .conn = id,
                       .remote = mode != NO_CONN ? remote : NULL,
                       .msg = msg,
                       .msg_len = len};
    clock_gettime(CLOCK_REALTIME, &e.ts);
    write_line(line, wsl_log_json(line, sizeof line, &e));
}

static void emit(wsl_log_level level, conn_mode mode, uint64_t id, const char *remote,
                 const char *fmt, va_list ap)
{
    if (format == WSL_LOG_JSON) {
        /* A message cut here is longer than the line: the writer says it was cut. */
        char msg[16384];
        int m = vsnprintf(msg, sizeof msg, fmt, ap);
        emit_json(level, mode, id, remote, msg,
                  m < 0                    ? 0
                  : (size_t)m < sizeof msg ? (size_t)m
                                           : sizeof msg - 1);
        return;
    }
    char line[8192];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char stamp[WSL_LOG_STAMP_LEN + 1];
    wsl_log_stamp(stamp, &ts);
    int n = snprintf(line, sizeof line, "%s %s %s", stamp, names[level], proc_name);
    if (mode == CONN_PREFIX) {
        int p = snprintf(line + n, sizeof line - (size_t)n,
                         "conn#%llu %s: ", (unsigned long long)id, remote ? remote : "");
        if (p > 0 && (size_t)p < sizeof line - (size_t)n - 1) n += p;
    }
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) { /* too long: cut at a character, say so, still end the line */
        static const char cut[] = " [cut: the line was longer than 8 KiB]";
        len = sizeof line - 2 - (sizeof cut - 1);
        while (len > (size_t)n && ((unsigned char)line[len] & 0xC0) == 0x80)
            len--;
        memcpy(line + len, cut, sizeof cut - 1);
        len += sizeof cut - 1;
    }
    line[len++] = '\n';
    write_line(line, len);
}

void wsl_log(wsl_log_level level, const char *fmt, ...)
{
    if (level > max_level) return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, NO_CONN, 0, NULL, fmt, ap);
    va_end(ap);
}

void wsl_log_conn(wsl_log_level level, uint64_t id, const char *remote, const char *fmt, ...)
{
    if (level > max_level) return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, CONN_PREFIX, id, remote, fmt, ap);
    va_end(ap);
}

void wsl_log_about(wsl_log_level level, uint64_t id, const char *remote, const char *fmt, ...)
{
    if (level > max_level) return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, format == WSL_LOG_JSON ? CONN_FIELDS : NO_CONN, id, remote, fmt, ap);
    va_end(ap);
}

void wsl_log_bytes(wsl_log_level level, bool has_conn, uint64_t id, const char *remote,
                   const char *msg, size_t len)
{
    if (level > max_level) return;
    if (format == WSL_LOG_JSON) {
        emit_json(level, has_conn ? CONN_FIELDS : NO_CONN, id, remote, msg, len);
        return;
    }
    /* The message is the script's and may carry what a client sent: a line break must not start
     * a forged line, an escape sequence must not drive a terminal, a NUL must not end the line
     * early. Control bytes are escaped as in C (a tab stays). */
    static const char hex[] = "0123456789abcdef";
    char text[8192];
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)msg[i];
        char esc[4] = {(char)ch};
        size_t k = 1;
        if (ch == '\n' || ch == '\r') {
            esc[0] = '\\';
            esc[1] = ch == '\n' ? 'n' : 'r';
            k = 2;
        } else if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            memcpy(esc, (char[]){'\\', 'x', hex[ch >> 4], hex[ch & 15]}, 4);
            k = 4;
        }
        if (o + k > sizeof text) break; /* longer than a line: cut, as any line is */
        memcpy(text + o, esc, k);
        o += k;
    }
    wsl_log(level, "%.*s", (int)o, text);
}

void wsl_log_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (format == WSL_LOG_JSON) {
        emit(WSL_LOG_ERROR, NO_CONN, 0, NULL, fmt, ap);
    } else {
        char line[8192];
        int m = vsnprintf(line + 8, sizeof line - 9, fmt, ap);
        size_t len = 8 + (m < 0 ? 0 : (size_t)m);
        if (len > sizeof line - 2) len = sizeof line - 2;
        memcpy(line, "wsluad: ", 8);
        line[len++] = '\n';
        write_line(line, len);
    }
    va_end(ap);
}

/* ---- from a signal handler ------------------------------------------------------------------ */

/* put() of a string; its pieces here are short and fixed, so they always fit. */
static void put_str(jw *w, const char *s)
{
    put(w, s, strlen(s));
}

void wsl_log_from_signal(wsl_log_level level, const char *msg)
{
    if (level > max_level) return;
    unsigned lv = (unsigned)level < 4 ? (unsigned)level : WSL_LOG_ERROR;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char stamp[WSL_LOG_STAMP_LEN + 1], line[512];
    wsl_log_stamp(stamp, &ts);
    jw w = {line, 0, sizeof line - 1}; /* (the last byte for the '\n') */
    if (format == WSL_LOG_JSON) {
        put_str(&w, "{\"ts\":\"");
        put_str(&w, stamp);
        put_str(&w, "\",\"level\":\"");
        put_str(&w, json_names[lv]);
        if (proc_raw[0]) {
            put_str(&w, "\",\"worker\":\"");
            put_str(&w, proc_raw);
        }
        put_str(&w, "\",\"msg\":\"");
        put_str(&w, msg);
        put_str(&w, "\"}");
    } else {
        put_str(&w, stamp);
        put_str(&w, " ");
        put_str(&w, names[lv]);
        put_str(&w, " ");
        put_str(&w, proc_name);
        put_str(&w, msg);
    }
    line[w.len++] = '\n';
    write_line(line, w.len);
}

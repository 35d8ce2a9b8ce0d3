/* The one error convention: a function that can fail returns 0 (or a count, where it says so) on
 * success and a negative code on failure, as libuv does. Codes are negated errno values, plus a
 * few of wsluad's own below WSL_ERR_BASE. In Lua a failure is `nil, message, name`. */
#ifndef WSL_ERROR_H
#define WSL_ERROR_H

#include <errno.h>

#define WSL_ERR_BASE (-4000)
#define WSL_ECLOSED  (WSL_ERR_BASE - 1) /* the connection (or request) is not open any more */
#define WSL_EDOWN    (WSL_ERR_BASE - 2) /* the Redis link is down */
#define WSL_ENOMEM   (-ENOMEM)

/* "closed", "out of memory", strerror(-code) for the errno values. Never NULL. */
const char *wsl_strerror(int code);
/* The code's short name: "ECLOSED", "ENOMEM", "ECONNREFUSED" ... Never NULL. */
const char *wsl_err_name(int code);

#endif

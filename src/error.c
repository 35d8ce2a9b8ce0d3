/* Text for the error codes of error.h: wsluad's own, then the errno values through the C
 * library (strerrorname_np names them on glibc 2.32 and later). */
#include "error.h"

#include <string.h>

const char *wsl_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case WSL_ECLOSED:
        return "closed";
    case WSL_EDOWN:
        return "redis link down";
    case WSL_ENOMEM:
        return "out of memory";
    default:
        return code < 0 && code > WSL_ERR_BASE ? strerror(-code) : "unknown error";
    }
}

const char *wsl_err_name(int code)
{
    switch (code) {
    case 0:
        return "OK";
    case WSL_ECLOSED:
        return "ECLOSED";
    case WSL_EDOWN:
        return "EDOWN";
    default: {
        const char *n = code < 0 && code > WSL_ERR_BASE ? strerrorname_np(-code) : NULL;
        return n ? n : "EUNKNOWN";
    }
    }
}

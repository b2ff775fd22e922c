/*
 * printf_attr.h: printf-format checking of a function's (format index, first argument index), for the library
 * (internal.h) and the tools' utilities (portable.h), which do not include each other's headers.
 * MinGW-w64's printf family is C99's with __USE_MINGW_ANSI_STDIO (gnu_printf), not the msvcrt one that `printf`
 * would check (no %zu).
 */
#ifndef INFLLM_PRINTF_ATTR_H
#define INFLLM_PRINTF_ATTR_H

#if defined(__MINGW32__)
#define PF_PRINTF(f, a) __attribute__((format(gnu_printf, f, a)))
#elif defined(__GNUC__)
#define PF_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PF_PRINTF(f, a)
#endif

#endif

/*
 * portable.h: the few operating-system calls that differ between POSIX and Windows (MinGW-w64), for the model
 * runtime, the command and the .npy reader / writer: opening a file that must be a regular one, read-only file
 * mappings, mkdir, replacing a file, same-file checks, path separators, printf checks.
 */
#ifndef INFLLM_PORTABLE_H
#define INFLLM_PORTABLE_H

#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>

/* open() flags for reading a file that must be regular: O_NONBLOCK where FIFOs exist (a FIFO in its place then
 * fails the caller's regular-file check instead of blocking the open); binary mode on Windows (its open() is in
 * text mode by default, which would turn CR LF into LF in the data) */
#ifdef _WIN32
#define PF_O_READ (O_RDONLY | O_BINARY)
#else
#define PF_O_READ (O_RDONLY | O_NONBLOCK)
#endif

/* A read-only mapping of the first size (> 0) bytes of the open file fd (mmap PROT_READ / MAP_PRIVATE; Windows: a
 * file mapping's view). NULL on failure with errno set. The mapping stays valid after fd is closed. */
void *pf_map_read(int fd, size_t size);
/* Unmaps what pf_map_read returned (size: the same). */
void pf_unmap(void *p, size_t size);
/* mkdir with mode 0777 (less the umask) on POSIX; Windows has no mode */
int pf_mkdir(const char *path);
/* Clears O_NONBLOCK from a file opened with PF_O_READ, so that reads block as stdio expects (no-op on Windows).
 * 0, or -1 with errno set. */
int pf_blocking(int fd);
/* rename() that replaces an existing `to` (Windows' rename does not: MoveFileEx). 0, or -1 with errno set. */
int pf_replace(const char *from, const char *to);

/* fopen(path, "rb") for a file that must be regular: a FIFO in its place fails instead of blocking the open, a
 * device or a folder is refused before anything is read. NULL on failure: *not_regular (may be NULL) is then 1 when
 * the path opened but is not a regular file (errno is meaningless), else 0 with errno set. *size (may be NULL): the
 * file's size. */
FILE *pf_fopen_regular(const char *path, int *not_regular, long long *size);

/* 1 when the paths a and b name one existing file or folder (POSIX: device and inode; Windows: volume serial
 * number and file index), else 0 (also when either cannot be read) */
int pf_same_entry(const char *a, const char *b);

/* the last path separator in path ('/'; on Windows '\\' too), or NULL */
const char *pf_last_sep(const char *path);
/* 1 when c separates path components ('/'; on Windows '\\' too) */
int pf_is_sep(char c);

/* PF_PRINTF(format index, first argument index): printf-format checking, shared with the library's internal.h */
#include "../core/printf_attr.h"

#endif

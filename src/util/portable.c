/* portable.c: see portable.h. */
#include "portable.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef _WIN32
#include <direct.h>
#include <io.h>
#include <windows.h>

void *pf_map_read(int fd, size_t size) {
    HANDLE file = (HANDLE)_get_osfhandle(fd);
    if (file == INVALID_HANDLE_VALUE || size == 0) {
        errno = EBADF;
        return NULL;
    }
    HANDLE map = CreateFileMappingA(file, NULL, PAGE_READONLY, 0, 0, NULL);
    if (!map) {
        errno = EACCES;
        return NULL;
    }
    void *view = MapViewOfFile(map, FILE_MAP_READ, 0, 0, size);
    CloseHandle(map); /* the view keeps the mapping */
    if (!view) errno = ENOMEM;
    return view;
}

void pf_unmap(void *p, size_t size) {
    (void)size;
    if (p) UnmapViewOfFile(p);
}

int pf_mkdir(const char *path) { return _mkdir(path); }

int pf_blocking(int fd) {
    (void)fd;
    return 0;
}

int pf_replace(const char *from, const char *to) {
    if (MoveFileExA(from, to, MOVEFILE_REPLACE_EXISTING)) return 0;
    errno = EACCES;
    return -1;
}

/* the volume and file index of an existing file or folder (FILE_FLAG_BACKUP_SEMANTICS opens folders too) */
static int file_id(const char *path, BY_HANDLE_FILE_INFORMATION *info) {
    HANDLE h = CreateFileA(path, 0, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL, OPEN_EXISTING,
                           FILE_FLAG_BACKUP_SEMANTICS, NULL);
    if (h == INVALID_HANDLE_VALUE) return -1;
    const BOOL ok = GetFileInformationByHandle(h, info);
    CloseHandle(h);
    return ok ? 0 : -1;
}

int pf_same_entry(const char *a, const char *b) {
    BY_HANDLE_FILE_INFORMATION ia, ib;
    return a && b && file_id(a, &ia) == 0 && file_id(b, &ib) == 0 &&
           ia.dwVolumeSerialNumber == ib.dwVolumeSerialNumber && ia.nFileIndexHigh == ib.nFileIndexHigh &&
           ia.nFileIndexLow == ib.nFileIndexLow;
}

int pf_is_sep(char c) { return c == '/' || c == '\\'; }

const char *pf_last_sep(const char *path) {
    const char *a = strrchr(path, '/'), *b = strrchr(path, '\\');
    if (!a || !b) return a ? a : b;
    return a > b ? a : b;
}
#else
#include <sys/mman.h>

void *pf_map_read(int fd, size_t size) {
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

void pf_unmap(void *p, size_t size) {
    if (p) munmap(p, size);
}

int pf_mkdir(const char *path) { return mkdir(path, 0777); }

int pf_blocking(int fd) {
    const int fl = fcntl(fd, F_GETFL);
    return fl >= 0 ? fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) : -1;
}

int pf_replace(const char *from, const char *to) { return rename(from, to); }

int pf_same_entry(const char *a, const char *b) {
    struct stat sa, sb;
    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

const char *pf_last_sep(const char *path) { return strrchr(path, '/'); }

int pf_is_sep(char c) { return c == '/'; }
#endif

FILE *pf_fopen_regular(const char *path, int *not_regular, long long *size) {
    if (not_regular) *not_regular = 0;
    const int fd = open(path, PF_O_READ);
    if (fd < 0) return NULL;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || pf_blocking(fd) != 0) {
        close(fd);
        if (not_regular) *not_regular = 1;
        return NULL;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        const int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    if (size) *size = (long long)sb.st_size;
    return f;
}

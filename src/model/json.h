/*
 * json.h: a small strict JSON parser (RFC 8259) into a read-only DOM.
 *
 * Used for config.json, tokenizer.json (several MB: parsing is linear time, one pass, arena
 * allocated) and model.safetensors.index.json / safetensors headers.
 *
 * Strictness: exactly one value at top level (surrounding whitespace allowed), no trailing
 * commas, no comments, no NaN/Infinity, no leading zeros, no unescaped control characters in
 * strings, the input must be valid UTF-8 (overlongs, surrogates, > U+10FFFF rejected).
 * String escapes, \uXXXX included, are decoded to UTF-8; a surrogate pair becomes one 4-byte
 * sequence; a lone surrogate is an error. Strings may contain NUL (from \u0000): use the
 * length. Duplicate object keys are kept; json_get returns the LAST one (as Python does).
 *
 * Errors never crash: json_parse returns NULL and fills *err with the byte offset into the
 * input and a reason.
 *
 * Thread safety: a parsed document is immutable; any number of threads may read it.
 */
#ifndef INFLLM_JSON_H
#define INFLLM_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    JSON_NULL = 0,
    JSON_BOOL = 1,
    JSON_NUMBER = 2,
    JSON_STRING = 3,
    JSON_ARRAY = 4,
    JSON_OBJECT = 5,
} json_type;

typedef struct json_value json_value;
typedef struct json_member json_member;

/* One DOM node. Fields are public for fast iteration; use the accessors when in doubt. */
struct json_value {
    json_type type;
    bool boolean;     /* JSON_BOOL */
    bool is_int;      /* JSON_NUMBER: the literal had no fraction/exponent and fits int64 */
    uint32_t len;     /* STRING: bytes (excluding the terminating NUL); ARRAY/OBJECT: count */
    int64_t i;        /* JSON_NUMBER with is_int */
    double num;       /* JSON_NUMBER (always set; rounded for big integers) */
    union {
        const char *str;           /* JSON_STRING: UTF-8, NUL-terminated */
        const json_value *items;   /* JSON_ARRAY: len values */
        const json_member *members;/* JSON_OBJECT: len members in document order */
    } u;
};

struct json_member {
    const char *key; /* UTF-8, NUL-terminated (may contain NUL: use key_len) */
    uint32_t key_len;
    json_value value;
};

/* Limits; zero fields mean the default. */
typedef struct {
    size_t max_input;   /* bytes of input (default 1 GiB) */
    int max_depth;      /* nesting of arrays/objects (default 256) */
    size_t max_nodes;   /* total values (default 64 Mi) */
} json_limits;

typedef struct {
    size_t offset;      /* byte offset into the input where the error was detected */
    char msg[128];      /* reason, e.g. "expected ':' after object key" */
    int io;             /* 1: json_parse_file could not read the file (msg says why; offset means nothing) */
} json_error;

typedef struct json_doc json_doc;

/* Parses text[0..len). The input needs no NUL terminator and is not referenced afterwards.
 * lim may be NULL (defaults), err may be NULL. Returns NULL on error (or out of memory). */
json_doc *json_parse(const char *text, size_t len, const json_limits *lim, json_error *err);

/* Reads a whole file and parses it. On I/O errors err->io is 1, err->offset 0 and msg says why. */
json_doc *json_parse_file(const char *path, const json_limits *lim, json_error *err);

/* err as one phrase for a message after the file's name: msg alone for an I/O error ("cannot open: No such file
 * or directory"), "JSON error at byte N: msg" for a parse error. Returns buf. */
const char *json_error_text(const json_error *err, char *buf, size_t buflen);

void json_free(json_doc *doc);              /* NULL is fine */
const json_value *json_root(const json_doc *doc);

/* Lookup helpers: all accept NULL and a value of the wrong type, returning NULL / false. */
const json_value *json_get(const json_value *obj, const char *key);        /* last match */
const json_value *json_getn(const json_value *obj, const char *key, size_t key_len);
const json_value *json_index(const json_value *arr, size_t i);              /* NULL if OOB */
/* Dotted path of object keys, e.g. json_path(root, "model.vocab") (no array indexing). */
const json_value *json_path(const json_value *v, const char *dotted);
size_t json_len(const json_value *v);  /* array/object count, string bytes, else 0 */
bool json_is(const json_value *v, json_type t);

const char *json_str(const json_value *v, size_t *len_out);   /* NULL if not a string */
bool json_num(const json_value *v, double *out);              /* any number */
bool json_int(const json_value *v, int64_t *out);             /* integer literal in int64 */
bool json_bool(const json_value *v, bool *out);
bool json_is_null(const json_value *v);                        /* false for NULL pointer */

/* Convenience with defaults: the value if present and of the right type, else dflt. */
double json_get_num(const json_value *obj, const char *key, double dflt);
int64_t json_get_int(const json_value *obj, const char *key, int64_t dflt);
bool json_get_bool(const json_value *obj, const char *key, bool dflt);
const char *json_get_str(const json_value *obj, const char *key, const char *dflt);

const char *json_type_name(json_type t);

#endif

/* fuzz_json.c: libFuzzer target for the JSON parser. Any input must parse or fail with an
 * offset inside the input; a parsed document is walked completely. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static size_t walk(const json_value *v, int depth) {
    size_t n = 1;
    if (depth > 300) abort();
    if (v->type == JSON_ARRAY)
        for (uint32_t i = 0; i < v->len; i++) n += walk(&v->u.items[i], depth + 1);
    else if (v->type == JSON_OBJECT)
        for (uint32_t i = 0; i < v->len; i++) {
            const json_member *m = &v->u.members[i];
            if (m->key[m->key_len] != 0) abort();
            if (json_getn(v, m->key, m->key_len) == NULL) abort();
            n += walk(&m->value, depth + 1);
        }
    else if (v->type == JSON_STRING && v->u.str[v->len] != 0)
        abort();
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_error e;
    json_limits lim = {0, 64, 100000};
    json_doc *d = json_parse((const char *)data, size, &lim, &e);
    if (d) {
        walk(json_root(d), 0);
        json_free(d);
    } else if (e.offset > size || e.msg[0] == 0) {
        abort();
    }
    return 0;
}

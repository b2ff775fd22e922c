/* fuzz_chat_template.c: libFuzzer target for the chat-template reading of src/model/mtok.c (a model file's
 * template is untrusted text): mdl_chat_from_template on the input as a C string, then, when it is taken, a first
 * turn with and without a system prompt and a later turn, each checked to end in the style's generation prompt
 * (Mistral's: in its [/INST], and refused only where the template has no system role). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mtok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *tpl = malloc(size + 1);
    if (!tpl) return 0;
    memcpy(tpl, data, size);
    tpl[size] = 0;
    mdl_chat c;
    if (mdl_chat_from_template(tpl, &c) == 0) {
        const char *sys[3] = {NULL, "Be brief.", ""};
        for (int i = 0; i < 3; i++) {
            size_t n = 0;
            char *t = i < 2 ? mdl_chat_first(&c, sys[i], " hi ", 4, &n) : mdl_chat_next(&c, 0, "again", 5, &n);
            const size_t g = strlen(c.assistant_open);
            if (t && (n != strlen(t) || n < g || strcmp(t + n - g, c.assistant_open))) abort();
            /* Mistral: no generation prompt, a turn ends with the user message's [/INST]; a system prompt is refused
             * only by a template without a system role */
            const size_t k = strlen(c.inst_close);
            if (c.kind == MDL_CHAT_MISTRAL && (t ? n < k || strcmp(t + n - k, c.inst_close)
                                                 : !(sys[i] && i < 2 && c.system_place == MDL_CHAT_SYS_NONE)))
                abort();
            free(t);
        }
        mdl_chat_free(&c);
    }
    free(tpl);
    return 0;
}

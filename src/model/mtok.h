/* mtok.h: the tokenizer of a loaded model (GGUF metadata or the HF folder's tokenizer.json),
 * and chat formatting from the model's template. */
#ifndef INFLLM_MTOK_H
#define INFLLM_MTOK_H

#include <stddef.h>

#include "model.h"
#include "tokenizer.h"

/* NULL on failure (mdl_error()). */
infllm_tokenizer *mdl_load_tokenizer(const mdl_model *m);
/* Formats one user turn (+ optional system prompt) as ChatML with the generation prompt.
 * When system is NULL and the model's template inserts a default system prompt (SmolLM2),
 * that one is used. Returns a malloc'ed string, or NULL with mdl_error() when the model's
 * template is not ChatML-style. */
char *mdl_chat_format(const mdl_model *m, const char *system, const char *user);

#endif

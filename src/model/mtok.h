/* mtok.h: the tokenizer of a loaded model (GGUF metadata or the HF folder's tokenizer.json),
 * and chat formatting from the model's template. */
#ifndef INFLLM_MTOK_H
#define INFLLM_MTOK_H

#include <stddef.h>

#include "model.h"
#include "tokenizer.h"

/* NULL on failure (mdl_error()). */
infllm_tokenizer *mdl_load_tokenizer(const mdl_model *m);
/* Chat formatting: the styles this runtime writes, recognised in the model's chat template (a GGUF's
 * tokenizer.chat_template; a Hugging Face folder's chat_template.jinja, else chat_template.json's or
 * tokenizer_config.json's), written as transformers renders those templates for a system prompt, user messages and
 * the generation prompt (no tools):
 *   ChatML (<|im_start|>: Qwen, SmolLM, MiniCPM; also a model without a template): its literal default system
 *     prompt when none is given (SmolLM2's, Qwen2.5's);
 *   Llama 3 (<|start_header_id|> ... <|eot_id|>): contents trimmed; 3.1+ templates ("Cutting Knowledge Date") open
 *     with a dated system message, today's date where the template calls strftime_now (3.2), else its date_string;
 *   Phi-3 (<|user|>, <|assistant|>, <|end|>).
 * Another template is refused (mdl_chat_init fails). */
typedef enum mdl_chat_kind { MDL_CHAT_CHATML, MDL_CHAT_LLAMA3, MDL_CHAT_PHI3 } mdl_chat_kind;
typedef struct mdl_chat {
    mdl_chat_kind kind;
    int has_template;           /* the model has a chat template (0: ChatML assumed) */
    int bos;                    /* the template writes the BOS token first (bos_token): the caller adds it */
    char *default_system;       /* the system prompt the template writes when none is given, or NULL */
    char date[40];              /* Llama 3.1+: the system message's "Today Date", "" for templates without one */
    int trim;                   /* contents trimmed of surrounding whitespace (Llama 3) */
    const char *system_open, *user_open, *assistant_open; /* the message headers (assistant_open: the generation
                                                              prompt) */
    const char *turn_end;       /* the token that ends every message, the answer's too ("<|im_end|>", ...) */
    const char *after_end;      /* what follows it ("\n", or "" for Llama 3) */
} mdl_chat;
/* 0, or -1 with mdl_error() (a template of another style, a template file that cannot be read). */
int mdl_chat_init(const mdl_model *m, mdl_chat *c);
/* The same from the template's text (NULL: the model has none, ChatML); what mdl_chat_init does after reading it. */
int mdl_chat_from_template(const char *tpl, mdl_chat *c);
void mdl_chat_free(mdl_chat *c);
/* "ChatML", "Llama 3" or "Phi-3" */
const char *mdl_chat_style_name(const mdl_chat *c);
/* The first turn: the system message (system, or the template's default when NULL), a user message of
 * user[0..user_len) and the generation prompt. malloc'ed, NUL-terminated, its length in *len (may be NULL); NULL
 * with mdl_error() when out of memory. */
char *mdl_chat_first(const mdl_chat *c, const char *system, const char *user, size_t user_len, size_t *len);
/* A later turn after an answer: its end (turn_end, unless answer_closed: the answer's last token was it and was fed),
 * a user message of line[0..line_len) and the generation prompt. As mdl_chat_first. */
char *mdl_chat_next(const mdl_chat *c, int answer_closed, const char *line, size_t line_len, size_t *len);

#endif

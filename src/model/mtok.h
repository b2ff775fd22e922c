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
 *   Phi-3 (<|user|>, <|assistant|>, <|end|>);
 *   Mistral ([INST] ... [/INST], the answer closed by the EOS token, no generation prompt), with the [INST] / [/INST]
 *     spacing the template writes (v0.1 / v0.2 "[INST] x [/INST]" or " [INST] x [/INST]", v0.3 / Large-2407
 *     "[INST] x[/INST]", Nemo and the tekken ones "[INST]x[/INST]") and its place for the system prompt: none (the
 *     original v0.1 / v0.2 templates raise on one: a system prompt is refused), in the first user message
 *     ("sys\n\n" before it: the v0.1 / v0.2 / Mixtral templates of 2024), in the last user message (v0.3,
 *     Large-2407, Nemo: see MDL_CHAT_SYS_LAST_USER), or a [SYSTEM_PROMPT] message first (v7: Large-2411, Small 3.x,
 *     Devstral, Ministral), with the template's default_system_message (literals, and strftime_now's date) when
 *     none is given. A template that writes an answer as ' ' + content relies on the model's first answer piece
 *     carrying that space (SentencePiece's U+2581, as Mistral's v1 / v3 tokenizers generate it): nothing is added.
 * Another template is refused (mdl_chat_init fails), as is one with [INST] markers that writes its messages another
 * way (Llama 2's <<SYS>>, a space before the EOS, a generation prompt, a user message trimmed). */
typedef enum mdl_chat_kind { MDL_CHAT_CHATML, MDL_CHAT_LLAMA3, MDL_CHAT_PHI3, MDL_CHAT_MISTRAL } mdl_chat_kind;
/* where the template writes the system prompt */
typedef enum mdl_chat_system_place {
    MDL_CHAT_SYS_OWN,        /* a message of its own before the first user message (every style but some Mistral) */
    MDL_CHAT_SYS_NONE,       /* nowhere: the template raises on a system message; mdl_chat_first refuses one */
    MDL_CHAT_SYS_FIRST_USER, /* "sys\n\n" at the head of the first user message */
    MDL_CHAT_SYS_LAST_USER,  /* the same at the head of the last user message: transformers moves it to each new
                                user message, out of the one already fed, which an incremental conversation cannot
                                do: mdl_chat_next writes a later turn as without a system prompt, and a caller that
                                took one must refuse a second turn (infllm run refuses --system with -i) */
} mdl_chat_system_place;
typedef struct mdl_chat {
    mdl_chat_kind kind;
    mdl_chat_system_place system_place;
    int has_template;           /* the model has a chat template (0: ChatML assumed) */
    int bos;                    /* the template writes the BOS token first (bos_token): the caller adds it */
    char *default_system;       /* the system prompt the template writes when none is given, or NULL */
    char date[40];              /* Llama 3.1+: the system message's "Today Date", "" for templates without one */
    int trim;                   /* contents trimmed of surrounding whitespace (Llama 3) */
    const char *system_open, *user_open, *assistant_open; /* the message headers (assistant_open: the generation
                                                              prompt) */
    const char *turn_end;       /* the token that ends every message, the answer's too ("<|im_end|>", ...); Mistral:
                                   the answer's only, its EOS token ("</s>" until mdl_chat_set_eos) */
    const char *after_end;      /* what follows it ("\n", or "" for Llama 3 and Mistral) */
    /* Mistral: the markers as the template spells them (user_open, system_open: ""); a user message is inst_open +
     * content + inst_close, a system message sys_open + content + sys_close; turn_end points to eos, into the struct
     * itself, so a mdl_chat is used where mdl_chat_init made it, not copied */
    char inst_open[16], inst_close[16], sys_open[24], sys_close[24], eos[64];
    int eos_literal;            /* Mistral: the template ends an answer with a literal, not eos_token */
} mdl_chat;
/* 0, or -1 with mdl_error() (a template of another style, a template file that cannot be read). */
int mdl_chat_init(const mdl_model *m, mdl_chat *c);
/* The same from the template's text (NULL: the model has none, ChatML); what mdl_chat_init does after reading it. */
int mdl_chat_from_template(const char *tpl, mdl_chat *c);
void mdl_chat_free(mdl_chat *c);
/* Mistral: the answer's end (turn_end) as the template writes it, eos_token: tok's EOS token's text, as transformers
 * fills eos_token from the tokenizer's config (a template writing a literal end keeps it; the other styles: nothing
 * to do). 0, or -1 with mdl_error() when tok has none or its text is longer than 63 bytes. */
int mdl_chat_set_eos(mdl_chat *c, const infllm_tokenizer *tok);
/* "ChatML", "Llama 3", "Phi-3" or "Mistral" */
const char *mdl_chat_style_name(const mdl_chat *c);
/* The first turn: the system message (system, or the template's default when NULL), a user message of
 * user[0..user_len) and the generation prompt. malloc'ed, NUL-terminated, its length in *len (may be NULL); NULL
 * with mdl_error() when out of memory, or when system is given to a template without a system role
 * (MDL_CHAT_SYS_NONE). */
char *mdl_chat_first(const mdl_chat *c, const char *system, const char *user, size_t user_len, size_t *len);
/* A later turn after an answer: its end (turn_end, unless answer_closed: the answer's last token was it and was fed),
 * a user message of line[0..line_len) and the generation prompt. As mdl_chat_first. */
char *mdl_chat_next(const mdl_chat *c, int answer_closed, const char *line, size_t line_len, size_t *len);

#endif

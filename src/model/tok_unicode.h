/* tok_unicode.h: Unicode property tables for the tokenizer's pre-tokenizers (internal). */
#ifndef INFLLM_TOK_UNICODE_H
#define INFLLM_TOK_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Sorted, disjoint inclusive ranges [lo, hi] (generated: tok_unicode.c). */
extern const uint32_t tok_unicode_letter[][2]; /* general category L* (\p{L}) */
extern const size_t tok_unicode_letter_n;
extern const uint32_t tok_unicode_number[][2]; /* general category N* (\p{N}) */
extern const size_t tok_unicode_number_n;
/* the tekken / o200k split patterns' case classes: [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] ("upper": a word's head) and
 * [\p{Ll}\p{Lm}\p{Lo}\p{M}] ("lower": its tail); Lm, Lo and the marks are in both */
extern const uint32_t tok_unicode_upper[][2];
extern const size_t tok_unicode_upper_n;
extern const uint32_t tok_unicode_lower[][2];
extern const size_t tok_unicode_lower_n;

#endif

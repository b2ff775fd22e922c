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

#endif

/*
 * kern_rows6.h: the row driver of the x86 attention kernels (kern_avx512.c, kern_dot16_avx512bf16.c, kern_avx2.c),
 * whose register tiles hold 6 rows. Internal to src/attn.
 */
#ifndef INFLLM_KERN_ROWS6_H
#define INFLLM_KERN_ROWS6_H

/* BLK(6) over whole blocks of 6 of the R rows, then BLK(R % 6) over the rest. Between blocks the kernel's pointers
 * advance by STEP_DENSE (rows NULL: rows consecutive in memory) or STEP_LISTED (rows given: the index list), each a
 * parenthesised comma expression. BLK(RR) is a statement (RR a constant, so that each block size compiles to its
 * own fully unrolled code). */
#define KERN_ROWS6(R, rows, BLK, STEP_DENSE, STEP_LISTED)                                                            \
    do {                                                                                                             \
        int r6_ = 0;                                                                                                 \
        if (!(rows)) {                                                                                               \
            for (; r6_ + 6 <= (R); r6_ += 6, STEP_DENSE) BLK(6);                                                     \
        } else {                                                                                                     \
            for (; r6_ + 6 <= (R); r6_ += 6, STEP_LISTED) BLK(6);                                                    \
        }                                                                                                            \
        switch ((R) - r6_) {                                                                                         \
        case 1: BLK(1); break;                                                                                       \
        case 2: BLK(2); break;                                                                                       \
        case 3: BLK(3); break;                                                                                       \
        case 4: BLK(4); break;                                                                                       \
        case 5: BLK(5); break;                                                                                       \
        default: break;                                                                                              \
        }                                                                                                            \
    } while (0)

#endif

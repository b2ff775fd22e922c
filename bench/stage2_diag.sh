#!/usr/bin/env bash
# stage2_diag.sh: one device call's decomposition of the sparse stage 2 (k_flash90), the way session 17
# took it apart at 128K (docs/CUDA_NOTES.md "Session 17"): the same grid and union walk with one part
# removed at a time, timed round-robin against the unmodified tree by bench/cuda_ab.sh.
#
#   bench/stage2_diag.sh [-r ROUNDS] [-s SIZES] [--out DIR] [--dry-run] [TREE]
#
#   walk    no warpgroup computes (S, softmax and P V skipped): the union walk, its TMA loads, barriers
#   noload  the sparse TMA copies are not issued (each stage's mbarrier completes on thread 0's arrive):
#           the math and the coupling between the warpgroups, no bytes
#   free    noload, and no stage release or barrier between the two warpgroups: each one's own chain
#   hot     every sparse chunk read from the first 128 chunks of K / V (L2-resident): no L2 misses
#
# TREE is a source tree (default: this repository). The variants are copies of it under DIR/trees with
# one-line edits of src/cuda/cuda_attn.cu; if the code they anchor on has changed, the script stops and
# names the anchor (update the edits below with the kernel). The variants' outputs are meaningless, so
# no dump comparison and no cuda_check run. Defaults: -r 2, -s 131072, --out /tmp/stage2_diag.
# --dry-run makes the trees and prints cuda_ab's commands without running them (a local check of the
# edits). Needs
# the device machine (nvcc, PyTorch); exit status non-zero if an edit, a build or a timing failed.
exec bash "$(dirname "$0")/diag_ab.sh" "$0" src/cuda/cuda_attn.cu 131072 "$@" <<'EDITS'
{
    "walk": [("const bool wg_needed = SPARSE ? need : c * 64 <= wg_last_pos;",
              "const bool wg_needed = SPARSE ? false : c * 64 <= wg_last_pos; /* DIAG walk */")],
    "noload": [("mbar_expect_tx(&sBar[st], 2 * KVB * 2);",
                "mbar_expect_tx(&sBar[st], SPARSE ? 0 : 2 * KVB * 2); /* DIAG noload */"),
               ("for (int h = 0; h < D / 64; h++) {\n                    tma_load(",
                "for (int h = 0; h < (SPARSE ? 0 : D / 64); h++) { /* DIAG noload */\n                    tma_load(")],
    "free": [("        if (by_tma(cc)) {\n            if (tid == 0) {",
              "        if (by_tma(cc)) {\n            if (!SPARSE && tid == 0) { /* DIAG free */"),
             ("        if (tma_chunk) {\n            mbar_wait(",
              "        if (tma_chunk && !SPARSE) { /* DIAG free */\n            mbar_wait("),
             ("            released = cnn >= 0 && by_tma(cnn);\n            if (!released)",
              "            released = false; /* DIAG free */\n            if (!(cnn >= 0 && by_tma(cnn)))")],
    "hot": [("const int tok = (int)(k0 + cc * 64);",
             "const int tok = (int)(k0 + (SPARSE ? (cc & 127) : cc) * 64); /* DIAG hot */")],
}
EDITS

#!/usr/bin/env bash
# select_diag.sh: one device call's decomposition of the fused selection (k_select90), the way session 21
# found that its top-k finalize is a fifth of select (docs/CUDA_NOTES.md "Session 21"): the same grid with
# one part removed at a time, timed round-robin against the unmodified tree by bench/cuda_ab.sh. The
# "select" column is the one to read (stage 2 runs on whatever the variant selected).
#
#   bench/select_diag.sh [-r ROUNDS] [-s SIZES] [--out DIR] [--dry-run] [TREE]
#
#   nofin    no top-k: each finalize team writes blocks 0..K-1 (a valid selection, so that the bench's
#            stage 2 still runs) instead of sel90_topk_radix: what the keys, the radix passes and the scan cost
#   nopass1  no pass-1 tiles (the tile stream starts at pass 2's) and -LSE = 0 for every row, so pass 2
#            runs its full exps and max-pool: what the LSE pass over c2 and its merge cost
#
# TREE is a source tree (default: this repository). The variants are copies of it under DIR/trees with
# one-line edits of src/cuda/cuda_select.cu; if the code they anchor on has changed, the script stops and
# names the anchor (update the edits below with the kernel). The variants' selections are meaningless,
# so no dump comparison and no cuda_check run. Defaults: -r 2, -s 65536,131072, --out /tmp/select_diag.
# --dry-run makes the trees and prints cuda_ab's commands without running them (a local check of the
# edits). Needs the device machine (nvcc, PyTorch); exit status non-zero if an edit, a build or a timing
# failed.
exec bash "$(dirname "$0")/diag_ab.sh" "$0" src/cuda/cuda_select.cu 65536,131072 "$@" <<'EDITS'
{
    "nofin": [("        sel90_topk_radix<TW>(sBS + tt * nbs, qb + 1, Kb, qb, row, p.topk_out,\n"
               "                             reinterpret_cast<uint32_t *>(sC) + team * SEL90_TOPK_TEAM_WORDS, tw, team, key_of);",
               "        (void)key_of; /* DIAG nofin: blocks 0..K-1 (qb + 1 > K), -1 after */\n"
               "        for (int c = tw * 32 + lane; c < p.topk_out; c += 32 * TW) row[c] = c < Kb ? c : -1;")],
    "nopass1": [("    const int ntL = (maxvisL + CT - 1) / CT;",
                 "    const int ntL = 0 * ((maxvisL + CT - 1) / CT); /* DIAG nopass1 */"),
                ("            sNL[prow + 8 * ri] = lt > 0.f && gid + 8 * ri < p.G ? -(mn + __log2f(lt)) : -INFINITY;",
                 "            sNL[prow + 8 * ri] = gid + 8 * ri < p.G ? 0.f * lt : -INFINITY; /* DIAG nopass1 */")],
}
EDITS

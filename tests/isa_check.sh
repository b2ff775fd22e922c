#!/usr/bin/env bash
# isa_check.sh BUILD_DIR: the per-instruction-set kernel objects (*_avx512.c.o, *_avx512bf16.c.o, *_amx.c.o, *_avx2.c.o,
# *_avxvnni.c.o) hold
# only instructions of the extensions that their run-time dispatch checks before calling them:
#   src/attn/*_avx512: avx512f / bw / vl / dq (cpu_attn.c), src/attn/*_avx512bf16: the same and avx512_bf16
#   (cpu_dot16_get), src/attn/*_amx: the same, avx512_bf16 and AMX-TILE / AMX-BF16 (cpu_dot16_get), src/model/*_avx512: avx512f / bw / vl / dq and avx512vnni (quant_avx512.c), src/model/*_amx: those and AMX-TILE / AMX-INT8 (quant_amx_available), *_avx2: avx2 / fma
#   / f16c (VEX only: no EVEX register, mask or encoding), src/model/*_avxvnni: those and AVX-VNNI's VEX vpdpbusd /
#   vpdpwssd (quant_avxvnni_available).
# Compiling such a file with a flag for any other extension lets the compiler use it anywhere: session 35 found
# GCC loading 16-bit scalars with AVX512-FP16's `vmovw` in the model's kernels (built with -mavx512fp16), which
# is SIGILL on AVX-512 CPUs without FP16 (AMD Zen 4 / 5, Ice Lake, Cascade Lake): test_quant died on a Zen 4.
# Exit 0 clean, 1 with the offending instructions listed, 77 (skip) without objdump or per-ISA objects.
set -u
dir=${1:?usage: isa_check.sh BUILD_DIR}
command -v objdump >/dev/null || { echo "isa_check: SKIP (no objdump)"; exit 77; }
mapfile -t objs < <(find "$dir" -name '*_avx512.c.o' -o -name '*_avx512bf16.c.o' -o -name '*_amx.c.o' -o -name '*_avx2.c.o' \
  -o -name '*_avxvnni.c.o' | sort)
[ ${#objs[@]} -gt 0 ] || { echo "isa_check: SKIP (no per-ISA objects: not an x86 build)"; exit 77; }
fail=0
for o in "${objs[@]}"; do
  # "mnemonic operands" of every instruction
  ins=$(objdump -d --no-show-raw-insn "$o" | awk -F'\t' 'NF >= 2 && $1 ~ /^ *[0-9a-f]+:$/ {print $2}')
  case "$o" in
    *_avx512.c.o | *_avx512bf16.c.o | *_amx.c.o)
      # FP16 (v*ph / v*sh / vmovw, but the F16C / AVX512F conversions vcvtph2ps / vcvtps2ph), BF16, AMX,
      # VBMI / VBMI2 / BITALG / VPOPCNTDQ / IFMA / GFNI / VAES / VPCLMULQDQ
      deny='^(vmovw|v[a-z0-9]*(ph|sh|phx|psx)|vcvtne2?ps2bf16|vdpbf16ps|tile[a-z]*|tdp[a-z0-9]*|vperm[it]?2?b|vpermb|vpmultishiftqb|vpcompress[bw]|vpexpand[bw]|vpsh[lr]dv?[wdq]|vpopcnt[bwdq]|vpshufbitqmb|vpmadd52[lh]uq|vgf2p8[a-z0-9]*|vaes[a-z]*|vpclmulqdq)$'
      allow='^(vcvtph2ps|vcvtps2ph)$'
      case "$o" in */src/model/*) ;; *) deny="${deny%)\$}|vpdpbusds?|vpdpwssds?)\$" ;; esac
      # the bf16 dot kernels' file: its dispatch checks AVX512_BF16 (vdpbf16ps, vcvtne2ps2bf16, vcvtneps2bf16)
      case "$o" in *_avx512bf16.c.o) allow='^(vcvtph2ps|vcvtps2ph|vdpbf16ps|vcvtne2?ps2bf16[a-z]*)$' ;; esac
      # the AMX kernels' file: AVX512_BF16 and the AMX-TILE / AMX-BF16 instructions (not AMX-INT8's, not FP16's)
      case "$o" in *_amx.c.o) allow='^(vcvtph2ps|vcvtps2ph|vdpbf16ps|vcvtne2?ps2bf16[a-z]*|ldtilecfg|sttilecfg|tilerelease|tilezero|tileloadd(t1)?|tilestored|tdpbf16ps)$' ;; esac
      # the model's AMX file (qgemm_amx.c): AVX512-VNNI and AMX-TILE / AMX-INT8 (quant_amx_available), not AMX-BF16
      case "$o" in */src/model/*_amx.c.o) allow='^(vcvtph2ps|vcvtps2ph|ldtilecfg|sttilecfg|tilerelease|tilezero|tileloadd(t1)?|tilestored|tdpb[su][su]d)$' ;; esac
      bad=$(echo "$ins" | awk '{print $1}' | grep -E "$deny" | grep -vE "$allow" | sort | uniq -c)
      ;;
    *_avxvnni.c.o)
      # the AVX-VNNI K-quant tiles: VEX only, and of the dot-product instructions only AVX-VNNI's (objdump writes
      # their VEX forms with a {vex} prefix, so braces other than that one mean EVEX)
      bad=$( { echo "$ins" | sed 's/^{vex} *//' | grep -E '%zmm|%k[0-7]|\{' ; echo "$ins" | sed 's/^{vex} *//' |
        awk '{print $1}' | grep -E '^vpdp' | grep -vE '^vpdp(busd|wssd)$'; } | awk '{print $1}' | sort | uniq -c)
      ;;
    *)
      # AVX2 objects: VEX only (no zmm, no mask registers, no EVEX-only forms), no AVX-VNNI
      bad=$( { echo "$ins" | grep -E '%zmm|%k[0-7]|\{' ; echo "$ins" | awk '{print $1}' | grep -E '^vpdp[a-z]*'; } |
        awk '{print $1}' | sort | uniq -c)
      ;;
  esac
  if [ -n "$bad" ]; then
    echo "isa_check: FAIL: $o uses instructions its dispatch does not check:"
    echo "$bad"
    fail=1
  else
    echo "isa_check: ok: $o ($(echo "$ins" | wc -l) instructions)"
  fi
done
if [ $fail = 0 ]; then echo "isa_check: all passed"; else echo "isa_check: FAILED"; fi
exit $fail

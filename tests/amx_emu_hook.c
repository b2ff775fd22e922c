/*
 * amx_emu_hook.c: linked into test_diff_amxemu and test_cache_amxemu (tests/CMakeLists.txt), which are test_diff and
 * test_cache with the CPU's bf16 attention on the AMX kernels' own source (src/attn/kern_dot16_amx.c), the tile
 * instructions emulated by tests/amx_emu.h: the grid's tolerances, the golden-free bitwise rules (decode == prefill
 * rows, chunked == one-shot, sparse with every block == dense) and the NaN cases hold the kernels as the library
 * calls them, on any CPU. A constructor installs them before main (cpu_dot16_test_override) and sets
 * INFLLM_TEST_AMX_EMULATED=1, which test_diff reads to skip its dispatch-rule check (the override is no CPU's rule).
 */
#define INFLLM_AMX_EMULATE 1
#define cpu_dot16_amx cpu_dot16_amx_emulated /* not the library's symbol */
#include "../src/attn/cpu_kern.h"
extern const cpu_dot16 cpu_dot16_amx_emulated;
#include "../src/attn/kern_dot16_amx.c"

#include <stdlib.h>

__attribute__((constructor)) static void amx_emu_install(void) {
    cpu_dot16_test_override(&cpu_dot16_amx_emulated);
    setenv("INFLLM_TEST_AMX_EMULATED", "1", 1);
}

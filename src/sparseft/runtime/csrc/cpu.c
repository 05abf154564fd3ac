/* CPU feature detection of the runtime, in one place: which code path (ISA_*) this CPU runs. */
#include "sparse_common.h"

int sp_best_isa(void) {
    static int cached = -1;
    if (cached >= 0) return cached;
    int isa = ISA_PORTABLE;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        isa = ISA_AVX2;
    if (isa == ISA_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vbmi2") &&
        __builtin_cpu_supports("avx512vnni"))
        isa = ISA_AVX512;
#endif
    cached = isa; /* a benign race: every thread computes the same value */
    return isa;
}

int sp_spmv_sequential = 0;

int sp_default_sequential(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_is("amd");
#else
    return 0;
#endif
}

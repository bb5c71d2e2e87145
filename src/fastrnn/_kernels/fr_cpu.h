/* Which x86-64 micro-architecture levels this CPU (and its OS) supports.
 *
 * The levels are the psABI ones the dispatched kernels are compiled for
 * (-march=x86-64-v3 / -v4).  GCC's and clang's __builtin_cpu_supports read
 * CPUID and, for AVX and AVX-512, check that the OS saves the wider
 * registers (XGETBV), so a level reported here cannot raise SIGILL.  Other
 * architectures have one level, their baseline (NEON on aarch64).
 */
#ifndef FASTRNN_FR_CPU_H
#define FASTRNN_FR_CPU_H

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
static inline int fr_cpu_has_x86_64_v3(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2")
        && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi")
        && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c")
        && __builtin_cpu_supports("lzcnt") && __builtin_cpu_supports("movbe");
}

static inline int fr_cpu_has_x86_64_v4(void)
{
    return fr_cpu_has_x86_64_v3()
        && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vl");
}
#else
static inline int fr_cpu_has_x86_64_v3(void) { return 0; }
static inline int fr_cpu_has_x86_64_v4(void) { return 0; }
#endif

#endif

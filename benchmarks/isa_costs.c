/* Throughput of the instructions the batch-1 kernels are built from (expand, bf16 dot, FMA).
 *   gcc -O2 -o /tmp/isa_costs benchmarks/isa_costs.c && /tmp/isa_costs
 * On the machine of BENCHMARKS.md an expand costs ~1.1-1.2 ns (~3 cycles) whatever its element width,
 * an FMA ~0.18 ns: the fp32 kernel (4 expands per 64 columns) is compute-bound, int8 (1 per 64) is not. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
#include <stdint.h>
static double now(){struct timespec t;clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t);return t.tv_sec+t.tv_nsec*1e-9;}
__attribute__((target("avx512f,avx512bw,avx512vbmi2,avx512bf16,avx512vnni")))
int main(){
  float buf[64]; for(int i=0;i<64;i++)buf[i]=i;
  __m512 src=_mm512_loadu_ps(buf); __m512 acc[8]; for(int i=0;i<8;i++)acc[i]=_mm512_setzero_ps();
  long N=100000000; uint64_t m=0x9e3779b97f4a7c15ULL;
  double t=now();
  for(long i=0;i<N;i++){ m = m*6364136223846793005ULL+1;
    #pragma GCC unroll 8
    for(int q=0;q<8;q++){ __mmask16 k=(__mmask16)(m>>(q*6)); acc[q]=_mm512_add_ps(acc[q], _mm512_maskz_expand_ps(k,src)); }
  }
  double dt=now()-t; float s=0; for(int i=0;i<8;i++) s+=_mm512_reduce_add_ps(acc[i]);
  printf("expandps reg: %.2f ns per expand (%g)\n", dt/N/8*1e9, s);
  __m512i si=_mm512_loadu_si512(buf); __m512i ai[8]; for(int i=0;i<8;i++)ai[i]=_mm512_setzero_si512();
  t=now();
  for(long i=0;i<N;i++){ m = m*6364136223846793005ULL+1;
    #pragma GCC unroll 8
    for(int q=0;q<8;q++){ __mmask32 k=(__mmask32)(m>>(q*4)); ai[q]=_mm512_add_epi32(ai[q], _mm512_maskz_expand_epi16(k,si)); }
  }
  dt=now()-t; printf("expandw reg: %.2f ns\n", dt/N/8*1e9);
  t=now();
  for(long i=0;i<N;i++){ m = m*6364136223846793005ULL+1;
    #pragma GCC unroll 8
    for(int q=0;q<8;q++){ __mmask64 k=(__mmask64)(m>>(q*4)); ai[q]=_mm512_add_epi32(ai[q], _mm512_maskz_expand_epi8(k,si)); }
  }
  dt=now()-t; printf("expandb reg: %.2f ns\n", dt/N/8*1e9);
  t=now();
  for(long i=0;i<N;i++){
    #pragma GCC unroll 8
    for(int q=0;q<8;q++){ acc[q]=_mm512_dpbf16_ps(acc[q], (__m512bh)si, (__m512bh)si); }
  }
  dt=now()-t; s=0; for(int i=0;i<8;i++) s+=_mm512_reduce_add_ps(acc[i]); printf("dpbf16: %.2f ns (%g)\n", dt/N/8*1e9, s);
  t=now();
  for(long i=0;i<N;i++){
    #pragma GCC unroll 8
    for(int q=0;q<8;q++){ acc[q]=_mm512_fmadd_ps(acc[q], src, src); }
  }
  dt=now()-t; s=0; for(int i=0;i<8;i++) s+=_mm512_reduce_add_ps(acc[i]); printf("fma: %.2f ns (%g)\n", dt/N/8*1e9, s);
  int x=0; for(int i=0;i<8;i++) x+=_mm512_reduce_add_epi32(ai[i]); return x==12345;
}

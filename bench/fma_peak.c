/* Peak FP32 FMA throughput: 8 independent accumulators of the widest vector the compiler
 * targets (-march=native), on OMP_NUM_THREADS threads. Prints GFLOP/s, best of 5. */
#include <omp.h>
#include <stdio.h>
#include <time.h>
#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif
typedef float vec __attribute__((vector_size(LANES * 4)));
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
int main(void) {
  const long iters = 20000000;
  int threads = omp_get_max_threads();
  double best = 0;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = now();
#pragma omp parallel
    {
      vec a0, a1, a2, a3, a4, a5, a6, a7, b, c;
      for (int l = 0; l < LANES; l++) {
        a0[l] = 0; a1[l] = 1; a2[l] = 2; a3[l] = 3; a4[l] = 4; a5[l] = 5; a6[l] = 6; a7[l] = 7;
        b[l] = 1.0000001f; c[l] = 1e-7f;
      }
      for (long i = 0; i < iters; i++) {
        a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c;
        a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5), "+x"(a6), "+x"(a7));
      }
      vec s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
      if (s[0] == 1234.5f) printf("#");
    }
    double flops = (double)threads * iters * 8 * LANES * 2;
    double g = flops / (now() - t0) / 1e9;
    if (g > best) best = g;
  }
  printf("%.2f\n", best);
  return 0;
}

/* darts_lite: the weight gradient of a stride-1, same-padded depthwise convolution on the CPU.

   out[c, 0, i, j] = sum over n, h, w of x[n, h + d*i - p, w + d*j - p, c] * g[n, h, w, c]

   x (the convolution's input) and g (its output gradient) are laid out channels-last, [N, H, W, C] in memory,
   and have the same size (stride 1, padding p = d * (k - 1) / 2). A row of either is W*C contiguous values, and
   tap (i, j) reads row h + d*i - p of x shifted by (d*j - p)*C values: each tap of each output row is one dot
   product of two contiguous stretches, summed lane by lane into an accumulator whose lane u holds the products
   of channel u % C (the accumulator spans P values, a multiple of C and of the vector, held in registers up to
   16 vectors). Threads split the rows n*H + h; each sums into a buffer of its own, and the buffers are added
   in a fixed order at the end, so a result depends only on the thread count. Built without OpenMP, one thread
   runs them all.

   darts_lite compiles this file at first use (darts_lite/spaces/native.py) and calls it through ctypes. */

#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(DARTS_LITE_NO_CLONES)
/* one copy per instruction set, the widest the CPU has picked when the library loads */
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

#ifdef _OPENMP
/* the OpenMP runtime PyTorch has loaded (libgomp.so.1 in its Linux wheels): its threads, not new ones competing
   with them for the cores */
#define PARALLEL _Pragma("omp parallel for num_threads(nt) schedule(static, 1)")
#else
#define PARALLEL
#endif
/* the loops over the M accumulators unrolled, so that they stay in registers */
#define UNROLL _Pragma("GCC unroll 16")
#define LOAD(v, p) memcpy(&(v), (p), 64)
#define STORE(p, v) memcpy((p), &(v), 64)

static long gcd(long a, long b) { while (b) { long t = a % b; a = b; b = t; } return a; }

/* one stretch with M accumulators in registers: whole periods of P = M vectors, then the whole vectors left */
#define SUM(T, VEC, M)                                                                                          \
  case M: {                                                                                                     \
    VEC a[M], u, v;                                                                                             \
    UNROLL for (long m = 0; m < M; ++m) LOAD(a[m], b + m * V);                                                  \
    for (; q + M * V <= S; q += M * V)                                                                          \
      UNROLL for (long m = 0; m < M; ++m) {                                                                     \
        LOAD(u, xs + q + m * V); LOAD(v, gs + q + m * V); a[m] += u * v;                                        \
      }                                                                                                         \
    UNROLL for (long m = 0; m + 1 < M; ++m) /* less than a period left: its vectors are the first phases' */    \
      if (q + V <= S) {                                                                                         \
        LOAD(u, xs + q); LOAD(v, gs + q); a[m] += u * v; q += V;                                                \
      }                                                                                                         \
    UNROLL for (long m = 0; m < M; ++m) STORE(b + m * V, a[m]);                                                 \
    break;                                                                                                      \
  }

/* the rows [r0, r1) of one thread, added into buf[k][k][P]: P is a multiple of C and of a vector */
#define ROWS(T, NAME)                                                                                           \
  typedef T NAME##_vec __attribute__((vector_size(64), aligned(sizeof(T))));                                    \
  CLONES static void NAME##_rows(const T *x, const T *g, T *buf, long P, long H, long W, long C, long k,        \
                                 long d, long p, long r0, long r1) {                                            \
    const long V = 64 / (long)sizeof(T);                                                                        \
    for (long r = r0; r < r1; ++r) {                                                                            \
      long n = r / H, h = r % H;                                                                                \
      const T *gr = g + (size_t)(n * H + h) * W * C;                                                            \
      for (long i = 0; i < k; ++i) {                                                                            \
        long hi = h + d * i - p;                                                                                \
        if (hi < 0 || hi >= H) continue;                                                                        \
        const T *xr = x + (size_t)(n * H + hi) * W * C;                                                         \
        for (long j = 0; j < k; ++j) {                                                                          \
          long off = d * j - p, w0 = off < 0 ? -off : 0, w1 = off > 0 ? W - off : W;                            \
          if (w1 <= w0) continue;                                                                               \
          const T *xs = xr + (size_t)(w0 + off) * C, *gs = gr + (size_t)w0 * C;                                 \
          long S = (w1 - w0) * C, q = 0;                                                                        \
          T *b = buf + (size_t)(i * k + j) * P;                                                                 \
          switch (P / V) { /* P / V accumulators held in registers over the stretch, up to 16 */                \
            SUM(T, NAME##_vec, 1) SUM(T, NAME##_vec, 2) SUM(T, NAME##_vec, 3) SUM(T, NAME##_vec, 4)             \
            SUM(T, NAME##_vec, 5) SUM(T, NAME##_vec, 6) SUM(T, NAME##_vec, 7) SUM(T, NAME##_vec, 8)             \
            SUM(T, NAME##_vec, 9) SUM(T, NAME##_vec, 10) SUM(T, NAME##_vec, 11) SUM(T, NAME##_vec, 12)          \
            SUM(T, NAME##_vec, 13) SUM(T, NAME##_vec, 14) SUM(T, NAME##_vec, 15) SUM(T, NAME##_vec, 16)         \
          default: /* a period of more than 16 vectors: the accumulator is the buffer */                        \
            for (; q + V <= S; q += V) {                                                                        \
              NAME##_vec a, u, v;                                                                               \
              T *bb = b + q % P;                                                                                \
              LOAD(a, bb); LOAD(u, xs + q); LOAD(v, gs + q); a += u * v; STORE(bb, a);                          \
            }                                                                                                   \
          }                                                                                                     \
          for (; q < S; ++q) b[q % P] += xs[q] * gs[q];                                                         \
        }                                                                                                       \
      }                                                                                                         \
    }                                                                                                           \
  }                                                                                                             \
                                                                                                                \
  /* 0: done; 1: arguments out of range; 2: out of memory */                                                    \
  int NAME(const T *x, const T *g, T *out, long N, long H, long W, long C, long k, long d, long p,              \
           long threads) {                                                                                      \
    const long V = 64 / (long)sizeof(T);                                                                        \
    if (N < 1 || H < 1 || W < 1 || C < 1 || k < 1 || d < 1 || p < 0) return 1;                                  \
    /* the period: lcm(C, four vectors) where it is at most 16 vectors (four independent sums at least), else   \
       lcm(C, one vector) */                                                                                    \
    long P = C / gcd(C, 4 * V) * 4 * V;                                                                         \
    if (P > 16 * V) P = C / gcd(C, V) * V;                                                                      \
    long R = N * H, nt = threads < 1 ? 1 : threads;                                                             \
    if (nt > R) nt = R;                                                                                         \
    size_t K = (size_t)(k * k * P);                                                                             \
    T *buf = calloc(K * (size_t)nt, sizeof(T));                                                                 \
    if (!buf) return 2;                                                                                         \
    PARALLEL                                                                                                    \
    for (long t = 0; t < nt; ++t)                                                                               \
      NAME##_rows(x, g, buf + K * t, P, H, W, C, k, d, p, R * t / nt, R * (t + 1) / nt);                        \
    for (long c = 0; c < C; ++c)                                                                                \
      for (long q = 0; q < k * k; ++q) {                                                                        \
        T s = 0;                                                                                                \
        for (long t = 0; t < nt; ++t)                                                                           \
          for (long u = c; u < P; u += C) s += buf[K * t + (size_t)(q * P + u)];                                \
        out[(size_t)(c * k * k + q)] = s;                                                                       \
      }                                                                                                         \
    free(buf);                                                                                                  \
    return 0;                                                                                                   \
  }

ROWS(float, darts_lite_depthwise_weight_grad_f32)
ROWS(double, darts_lite_depthwise_weight_grad_f64)

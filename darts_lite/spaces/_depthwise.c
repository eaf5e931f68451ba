/* darts_lite: the weight gradient of a stride-1, same-padded depthwise convolution on the CPU.

   out[c, 0, i, j] = sum over n, h, w of x[n, h + d*i - p, w + d*j - p, c] * g[n, h, w, c]

   x (the convolution's input) and g (its output gradient) are laid out channels-last, [N, H, W, C] in memory,
   and have the same size (stride 1, padding p = d * (k - 1) / 2). A row of either is W*C contiguous values, and
   tap (i, j) reads row h + d*i - p of x shifted by (d*j - p)*C values: each tap of each output row is one dot
   product of two contiguous stretches, summed lane by lane into an accumulator whose lane u holds the products
   of channel u % C. Threads split the rows n*H + h; each sums into a buffer of its own, and the buffers are added
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
#define LOAD(v, p) memcpy(&(v), (p), 64)
#define STORE(p, v) memcpy((p), &(v), 64)

static long gcd(long a, long b) { while (b) { long t = a % b; a = b; b = t; } return a; }

/* the rows [r0, r1) of one thread, added into buf[k][k][P]: P is a multiple of C and of four vectors */
#define ROWS(T, NAME)                                                                                           \
  typedef T NAME##_vec __attribute__((vector_size(64), aligned(sizeof(T))));                                   \
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
          long off = d * j - p, w0 = off < 0 ? -off : 0, w1 = off > 0 ? W - off : W;                           \
          if (w1 <= w0) continue;                                                                               \
          const T *xs = xr + (size_t)(w0 + off) * C, *gs = gr + (size_t)w0 * C;                                 \
          long S = (w1 - w0) * C, q = 0;                                                                        \
          T *b = buf + (size_t)(i * k + j) * P;                                                                 \
          NAME##_vec a0, a1, a2, a3, u, v;                                                                      \
          if (P == 4 * V) { /* four accumulators held in registers over the stretch */                         \
            LOAD(a0, b); LOAD(a1, b + V); LOAD(a2, b + 2 * V); LOAD(a3, b + 3 * V);                             \
            for (; q + 4 * V <= S; q += 4 * V) {                                                                \
              LOAD(u, xs + q); LOAD(v, gs + q); a0 += u * v;                                                    \
              LOAD(u, xs + q + V); LOAD(v, gs + q + V); a1 += u * v;                                            \
              LOAD(u, xs + q + 2 * V); LOAD(v, gs + q + 2 * V); a2 += u * v;                                    \
              LOAD(u, xs + q + 3 * V); LOAD(v, gs + q + 3 * V); a3 += u * v;                                    \
            }                                                                                                   \
            if (q + V <= S) { LOAD(u, xs + q); LOAD(v, gs + q); a0 += u * v; q += V; }                          \
            if (q + V <= S) { LOAD(u, xs + q); LOAD(v, gs + q); a1 += u * v; q += V; }                          \
            if (q + V <= S) { LOAD(u, xs + q); LOAD(v, gs + q); a2 += u * v; q += V; }                          \
            STORE(b, a0); STORE(b + V, a1); STORE(b + 2 * V, a2); STORE(b + 3 * V, a3);                         \
          } else { /* a channel count that does not divide four vectors: the accumulator is the buffer */       \
            for (; q + V <= S; q += V) {                                                                        \
              T *bb = b + q % P;                                                                                \
              LOAD(a0, bb); LOAD(u, xs + q); LOAD(v, gs + q); a0 += u * v; STORE(bb, a0);                       \
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
    long P = C / gcd(C, 4 * V) * 4 * V; /* lcm(C, four vectors) */                                              \
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

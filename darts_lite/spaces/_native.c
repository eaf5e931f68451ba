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
#include <math.h>

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

/* ---- BatchNorm of a channels-last float32 tensor, training mode, no affine parameters ---------------------------

   x is [rows, C] in memory (rows = N*H*W). The forward pass gives the output, the batch mean and 1/sqrt(var + eps)
   and updates the running statistics; the backward pass gives the input gradient. Both compute what PyTorch's CPU
   kernels for channels-last tensors compute (torch 2.x, ATen built for AVX2 or AVX-512), value for value: the same
   per-thread partial sums over the same rows (at::parallel_for's split of the rows among `nt` threads, each
   channel summed row after row in float), added across threads in double in thread order, and the same
   elementwise expressions with a fused multiply-add exactly where that build contracts one: in the backward
   pass's last step, for the channels in whole groups of 8 and not for the C % 8 after them (its loop's tail).
   darts_lite checks the equality against PyTorch's kernel in its tests (and on the machine running them: the
   kernels serve only where PyTorch's CPU capability is AVX2 or AVX-512, darts_lite/spaces/native.py).

   Rounding is spelled out: nothing here may be contracted by the compiler. */

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

/* AVX2 and FMA: these serve only where PyTorch's build is AVX2 or AVX-512, whose CPUs have both */
#define BN_TARGET __attribute__((target("avx2,fma")))

/* a thread's rows per iteration (PARALLEL, above); elementwise passes split the rows evenly */
#ifdef _OPENMP
#define EACH_ROW _Pragma("omp parallel for num_threads(nt) schedule(static)")
#else
#define EACH_ROW
#endif

/* rows [*b, *e) of thread t of nt: at::parallel_for's static split (grain 1) */
static void bn_rows(long rows, long nt, long t, long *b, long *e) {
  long used = nt < rows ? nt : rows, size = (rows + used - 1) / used;
  *b = t < used ? t * size : rows;
  *e = *b + size < rows ? *b + size : rows;
}

/* a vector of 8 channels; a block of n < 8 channels (the last of a row) is read and written through a mask, its
   other lanes reading 0 */
BN_TARGET static inline __m256i bn_mask(long n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
BN_TARGET static inline __m256 bn_load(const float *p, long n, __m256i m) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
}
BN_TARGET static inline void bn_store(float *p, __m256 v, long n, __m256i m) {
  if (n >= 8) _mm256_storeu_ps(p, v); else _mm256_maskstore_ps(p, m, v);
}

/* per-channel sums over rows [b, e), channel after channel row after row as PyTorch's kernel sums them, in
   sweeps of up to 4 blocks of 8 channels held in registers. KIND 0: sum of x; 1: sum of (x - mean)^2 (fused);
   2: sum of g into out, sum of (x - mean) * g (fused) into out2 */
#define BN_SWEEP(NAME, KIND)                                                                                    \
  BN_TARGET static void NAME(const float *x, const float *g, const float *mean, float *out, float *out2,       \
                             long b, long e, long C) {                                                          \
    for (long c0 = 0; c0 < C; c0 += 32) {                                                                       \
      long n = C - c0 < 32 ? C - c0 : 32, k[4];                                                                 \
      __m256i m[4];                                                                                             \
      __m256 a[4], a2[4], mu[4];                                                                                \
      for (int j = 0; j < 4; ++j) {                                                                             \
        k[j] = n - 8 * j;                                                                                       \
        m[j] = bn_mask(k[j]);                                                                                   \
        a[j] = a2[j] = _mm256_setzero_ps();                                                                     \
        mu[j] = KIND ? bn_load(mean + c0 + 8 * j, k[j], m[j]) : a[j];                                           \
      }                                                                                                         \
      for (long i = b; i < e; ++i) {                                                                            \
        const float *r = x + i * C + c0, *q = KIND == 2 ? g + i * C + c0 : r;                                   \
        for (int j = 0; j < 4; ++j) {                                                                           \
          if (k[j] <= 0) break;                                                                                 \
          __m256 v = bn_load(r + 8 * j, k[j], m[j]);                                                            \
          if (KIND == 0) a[j] = _mm256_add_ps(a[j], v);                                                         \
          if (KIND == 1) { __m256 d = _mm256_sub_ps(v, mu[j]); a[j] = _mm256_fmadd_ps(d, d, a[j]); }           \
          if (KIND == 2) {                                                                                      \
            __m256 w = bn_load(q + 8 * j, k[j], m[j]);                                                          \
            a[j] = _mm256_add_ps(a[j], w);                                                                      \
            a2[j] = _mm256_fmadd_ps(_mm256_sub_ps(v, mu[j]), w, a2[j]);                                         \
          }                                                                                                     \
        }                                                                                                       \
      }                                                                                                         \
      for (int j = 0; j < 4 && k[j] > 0; ++j) {                                                                 \
        bn_store(out + c0 + 8 * j, a[j], k[j], m[j]);                                                           \
        if (KIND == 2) bn_store(out2 + c0 + 8 * j, a2[j], k[j], m[j]);                                          \
      }                                                                                                         \
    }                                                                                                           \
  }
BN_SWEEP(bn_sum, 0)
BN_SWEEP(bn_squares, 1)
BN_SWEEP(bn_gradient_sums, 2)

/* the threads' sums added in double, in thread order, rounded to float */
static float bn_total(const float *buf, long c, long C, long nt) {
  double s = 0;
  for (long t = 0; t < nt; ++t) s += buf[t * C + c];
  return (float)s;
}

/* 0: done; 1: arguments out of range; 2: out of memory */
BN_TARGET int darts_lite_batch_norm_f32(const float *x, float *y, float *save_mean, float *save_invstd,
                                        float *running_mean, float *running_var, const float *weight,
                                        const float *bias, long rows, long C, double momentum, double eps, long nt) {
  if (rows < 2 || C < 1 || nt < 1 || rows <= nt) return 1;
  float *buf = calloc((size_t)(nt * C + 2 * C), sizeof(float));
  if (!buf) return 2;
  float *alpha = buf + nt * C, *beta = alpha + C;
  PARALLEL
  for (long t = 0; t < nt; ++t) {
    long b, e;
    bn_rows(rows, nt, t, &b, &e);
    bn_sum(x, NULL, NULL, buf + t * C, NULL, b, e, C);
  }
  for (long c = 0; c < C; ++c) {
    double s = 0;
    for (long t = 0; t < nt; ++t) s += buf[t * C + c];
    save_mean[c] = (float)(s / (double)rows);
  }
  PARALLEL
  for (long t = 0; t < nt; ++t) {
    long b, e;
    bn_rows(rows, nt, t, &b, &e);
    bn_squares(x, NULL, save_mean, buf + t * C, NULL, b, e, C);
  }
  const float m = (float)momentum;
  for (long c = 0; c < C; ++c) {
    float var_sum = bn_total(buf, c, C, nt), mean = save_mean[c];
    double var = (double)(var_sum / (float)rows);
    save_invstd[c] = (var != 0 || eps != 0) ? (float)(1.0 / sqrt(var + eps)) : 0.0f;
    if (running_mean) running_mean[c] = m * mean + (1 - m) * running_mean[c];
    if (running_var) {
      double unbiased = (double)(var_sum / (float)(rows - 1));
      running_var[c] = (float)((double)m * unbiased + (double)((1 - m) * running_var[c]));
    }
    /* the affine parameters (weight 1 and bias 0 without them: the same bits) folded in as PyTorch folds them */
    alpha[c] = save_invstd[c] * (weight ? weight[c] : 1.0f);
    beta[c] = fmaf(-mean, alpha[c], bias ? bias[c] : 0.0f);  /* one rounding, as PyTorch's build computes it */
  }
  EACH_ROW
  for (long i = 0; i < rows; ++i)
    for (long c = 0; c < C; c += 8) {
      long n = C - c;
      __m256i mk = bn_mask(n);
      __m256 v = bn_load(x + i * C + c, n, mk);
      bn_store(y + i * C + c, _mm256_fmadd_ps(v, bn_load(alpha + c, n, mk), bn_load(beta + c, n, mk)), n, mk);
    }
  free(buf);
  return 0;
}

/* dx (where not NULL) and, where not NULL, the affine parameters' gradients dweight and dbias */
BN_TARGET int darts_lite_batch_norm_backward_f32(const float *x, const float *dy, const float *mean,
                                                 const float *invstd, const float *weight, float *dx, float *dweight,
                                                 float *dbias, long rows, long C, long nt) {
  if (rows < 2 || C < 1 || nt < 1 || rows <= nt) return 1;
  float *buf = calloc((size_t)(2 * nt * C + 2 * C), sizeof(float));
  if (!buf) return 2;
  float *sums = buf, *dots = buf + nt * C, *k = dots + nt * C, *grad_mean = k + C;
  PARALLEL
  for (long t = 0; t < nt; ++t) {
    long b, e;
    bn_rows(rows, nt, t, &b, &e);
    bn_gradient_sums(x, dy, mean, sums + t * C, dots + t * C, b, e, C);
  }
  const float n = (float)rows;
  for (long c = 0; c < C; ++c) {
    float sum = bn_total(sums, c, C, nt), dot = bn_total(dots, c, C, nt);
    k[c] = dot * invstd[c] * invstd[c] / n;
    grad_mean[c] = sum / n;
    if (dweight) dweight[c] = dot * invstd[c];
    if (dbias) dbias[c] = sum;
  }
  if (!dx) {
    free(buf);
    return 0;
  }
  /* channels in whole groups of 8: (g - grad_mean) - (x - mean) * k fused; the C % 8 after them: not fused */
  const long whole = C - C % 8;
  EACH_ROW
  for (long i = 0; i < rows; ++i) {
    const float *xi = x + i * C, *gi = dy + i * C;
    float *di = dx + i * C;
    for (long c = 0; c < C; c += 8) {
      long left = C - c;
      __m256i mk = bn_mask(left);
      __m256 centred = _mm256_sub_ps(bn_load(xi + c, left, mk), bn_load(mean + c, left, mk));
      __m256 kc = bn_load(k + c, left, mk);
      __m256 g = _mm256_sub_ps(bn_load(gi + c, left, mk), bn_load(grad_mean + c, left, mk));
      __m256 r = c < whole ? _mm256_fnmadd_ps(centred, kc, g) : _mm256_sub_ps(g, _mm256_mul_ps(centred, kc));
      r = _mm256_mul_ps(r, bn_load(invstd + c, left, mk));
      bn_store(di + c, weight ? _mm256_mul_ps(r, bn_load(weight + c, left, mk)) : r, left, mk);
    }
  }
  free(buf);
  return 0;
}

/* out = g * (x * invstd + (-mean * invstd)): an output gradient times the BatchNorm's output (affine-free), the
   latter computed as the forward pass computed it (one fused multiply-add per element, the shift rounded once) but
   never written: the products a weight's gradient sums, in one pass instead of two. g's rows (pixels) are g_rows
   values apart (C, or more where g is a slice of a gradient of more channels) */
BN_TARGET int darts_lite_times_normalised_f32(const float *x, const float *g, const float *mean, const float *invstd,
                                              float *out, long rows, long C, long g_rows, long nt) {
  if (rows < 1 || C < 1 || nt < 1) return 1;
  float *beta = malloc((size_t)C * sizeof(float));
  if (!beta) return 2;
  for (long c = 0; c < C; ++c) beta[c] = -mean[c] * invstd[c];
  EACH_ROW
  for (long i = 0; i < rows; ++i)
    for (long c = 0; c < C; c += 8) {
      long n = C - c;
      __m256i mk = bn_mask(n);
      __m256 y = _mm256_fmadd_ps(bn_load(x + i * C + c, n, mk), bn_load(invstd + c, n, mk), bn_load(beta + c, n, mk));
      bn_store(out + i * C + c, _mm256_mul_ps(bn_load(g + i * g_rows + c, n, mk), y), n, mk);
    }
  free(beta);
  return 0;
}

#else /* not x86-64 with GCC or Clang: PyTorch's kernels serve (darts_lite/spaces/native.py never asks) */

int darts_lite_batch_norm_f32(const float *x, float *y, float *save_mean, float *save_invstd, float *running_mean,
                              float *running_var, const float *weight, const float *bias, long rows, long C,
                              double momentum, double eps, long nt) {
  (void)x; (void)y; (void)save_mean; (void)save_invstd; (void)running_mean; (void)running_var; (void)weight;
  (void)bias; (void)rows; (void)C; (void)momentum; (void)eps; (void)nt;
  return 1;
}

int darts_lite_batch_norm_backward_f32(const float *x, const float *dy, const float *mean, const float *invstd,
                                       const float *weight, float *dx, float *dweight, float *dbias, long rows, long C,
                                       long nt) {
  (void)x; (void)dy; (void)mean; (void)invstd; (void)weight; (void)dx; (void)dweight; (void)dbias; (void)rows;
  (void)C; (void)nt;
  return 1;
}

int darts_lite_times_normalised_f32(const float *x, const float *g, const float *mean, const float *invstd, float *out,
                                    long rows, long C, long g_rows, long nt) {
  (void)x; (void)g; (void)mean; (void)invstd; (void)out; (void)rows; (void)C; (void)g_rows; (void)nt;
  return 1;
}

#endif

#pragma GCC pop_options

/* ---- channels-last 2-d pooling: max and average, forward and input gradient ------------------------------------

   x [N, H, W, C] -> y [N, OH, OW, C] (channels-last memory), window kh x kw, stride sh x sw, padding ph x pw,
   dilation 1; the output size (floor or ceil mode) is the caller's. The values are PyTorch's channels-last CPU
   kernels' bit for bit, by the same arithmetic in the same order:

   - max: each window read row by row, a value taken where it is greater than the maximum so far or NaN (the
     first maximum wins, the last NaN); its gradient goes to that element. The backward pass finds the element
     again from x, so no index tensor is kept or written (PyTorch's forward writes one 64-bit index per output);
   - average: the window's sum from 0 in the same order, divided by the window's size (the padding counted or
     not, count_include_pad); its gradient adds grad / size to each element of the window;
   - an input gradient sums its contributions output pixel after output pixel, image by image, as PyTorch's
     (one image per thread at a time). Here the maximum's gradient adds 0 to the window's other elements: a sum
     that starts at +0 never becomes -0, so adding +0 changes no bit of it.

   No rounding differs between instruction sets (max, add, divide), so the clones (avx512f, avx2, default) all
   compute the same values. */

/* vectors of 8 and 4 channels (GCC's vector extensions; the clones pick the instructions), loaded and stored
   unaligned. Not 16: AVX-512's comparisons give masks that GCC turns into vectors of lanes only with AVX512DQ,
   which its clones cannot ask for, and lane by lane without */
typedef float pool_f8 __attribute__((vector_size(32), aligned(4)));
typedef int pool_i8 __attribute__((vector_size(32), aligned(4)));
typedef float pool_f4 __attribute__((vector_size(16), aligned(4)));
typedef int pool_i4 __attribute__((vector_size(16), aligned(4)));

/* a lane-wise choice: where m (all ones or all zeros) then a else b */
#define POOL_PICK(F, I, m, a, b) ((F)(((m) & (I)(a)) | (~(m) & (I)(b))))
#define POOL_SPLAT(T, v) ((T){0} + (v))

/* the rows [*a, *b) of a window clipped to the image, and in *padded its size clipped to the padded image only
   (the average pool's count with padding) */
static void pool_window(long o, long s, long p, long k, long size, long *a, long *b, long *padded) {
  long lo = o * s - p, hi = lo + k;
  *padded = (hi < size + p ? hi : size + p) - lo;
  *a = lo > 0 ? lo : 0;
  *b = hi < size ? hi : size;
}

/* the blocks of a row's C channels: BODY(F, I, c, n) for n channels from c in a vector of type F (floats) and I
   (ints, the same lanes): 8 at a time, then 4, then the C % 4 left in a 4-lane vector (its other lanes
   read as 0 and never stored) */
#define POOL_BLOCKS(C, BODY)                                                                                    \
  {                                                                                                             \
    long c = 0;                                                                                                 \
    for (; c + 8 <= (C); c += 8) BODY(pool_f8, pool_i8, c, 8)                                                   \
    for (; c + 4 <= (C); c += 4) BODY(pool_f4, pool_i4, c, 4)                                                   \
    if (c < (C)) BODY(pool_f4, pool_i4, c, (C) - c)                                                             \
  }
#define POOL_LOAD(F, v, p, n) F v = (F){0}; memcpy(&v, (p), (n) * sizeof(float))
#define POOL_STORE(p, v, n) memcpy((p), &(v), (n) * sizeof(float))
/* the pixel (ih, iw) of image `img` of an [N, H, W, C] tensor, at channel c */
#define POOL_AT(t, ih, iw, c) ((t) + ((img * H + (ih)) * W + (iw)) * C + (c))
/* each element of the window, row by row; k counts them */
#define POOL_EACH(k) for (long ih = h0, k = 0; ih < h1; ++ih) for (long iw = w0; iw < w1; ++iw, ++k)

/* the maximum so far and where it is: taken where greater or NaN */
#define MAX_STEP(F, I, v, best)                                                                                 \
  I m = (v > best) | (v != v);                                                                                  \
  best = POOL_PICK(F, I, m, v, best);

#define MAX_FORWARD(F, I, c, n)                                                                                 \
  {                                                                                                             \
    F best = POOL_SPLAT(F, -INFINITY);                                                                          \
    POOL_EACH(k) {                                                                                              \
      (void)k;                                                                                                  \
      POOL_LOAD(F, v, POOL_AT(x, ih, iw, c), n);                                                                \
      MAX_STEP(F, I, v, best)                                                                                   \
    }                                                                                                           \
    POOL_STORE(out + c, best, n);                                                                               \
  }

#define MAX_BACKWARD(F, I, c, n)                                                                                \
  {                                                                                                             \
    F best = POOL_SPLAT(F, -INFINITY);                                                                          \
    I at = (I){0};                                                                                              \
    POOL_EACH(k) {                                                                                              \
      POOL_LOAD(F, v, POOL_AT(x, ih, iw, c), n);                                                                \
      MAX_STEP(F, I, v, best)                                                                                   \
      at = (m & POOL_SPLAT(I, (int)k)) | (~m & at);                                                             \
    }                                                                                                           \
    POOL_LOAD(F, go, grad + c, n);                                                                              \
    POOL_EACH(k) {                                                                                              \
      POOL_LOAD(F, gi, POOL_AT(gx, ih, iw, c), n);                                                              \
      gi = gi + (F)((at == POOL_SPLAT(I, (int)k)) & (I)go); /* + 0 where another element is the maximum */      \
      POOL_STORE(POOL_AT(gx, ih, iw, c), gi, n);                                                                \
    }                                                                                                           \
  }

#define AVG_FORWARD(F, I, c, n)                                                                                 \
  {                                                                                                             \
    F sum = (F){0};                                                                                             \
    POOL_EACH(k) {                                                                                              \
      (void)k;                                                                                                  \
      POOL_LOAD(F, v, POOL_AT(x, ih, iw, c), n);                                                                \
      sum = sum + v;                                                                                            \
    }                                                                                                           \
    sum = sum / POOL_SPLAT(F, size);                                                                            \
    POOL_STORE(out + c, sum, n);                                                                                \
  }

#define AVG_BACKWARD(F, I, c, n)                                                                                \
  {                                                                                                             \
    POOL_LOAD(F, go, grad + c, n);                                                                              \
    F share = go / POOL_SPLAT(F, size);                                                                         \
    POOL_EACH(k) {                                                                                              \
      (void)k;                                                                                                  \
      POOL_LOAD(F, gi, POOL_AT(gx, ih, iw, c), n);                                                              \
      gi = gi + share;                                                                                          \
      POOL_STORE(POOL_AT(gx, ih, iw, c), gi, n);                                                                \
    }                                                                                                           \
  }

/* the forward passes: each thread a contiguous block of output rows (image, oh), so that the input rows a window
   reads are the ones its thread's previous output row read (in its cache) */
#ifdef _OPENMP
#define POOL_ROWS _Pragma("omp parallel for num_threads(nt) schedule(static)")
#else
#define POOL_ROWS
#endif
#define POOL_FORWARD(NAME, BODY, KIND, ...)                                                                     \
  CLONES int NAME(const float *restrict x, float *restrict y, long N, long H, long W, long C, long OH, long OW,  \
                  long kh, long kw, long sh, long sw, long ph, long pw, ##__VA_ARGS__, long nt) {               \
    POOL3_TRY(KIND)                                                                                             \
    POOL_ROWS for (long r = 0; r < N * OH; ++r) {                                                                \
      long img = r / OH, oh = r % OH, h0, h1, hp;                                                               \
      pool_window(oh, sh, ph, kh, H, &h0, &h1, &hp);                                                            \
      for (long ow = 0; ow < OW; ++ow) {                                                                        \
        long w0, w1, wp;                                                                                        \
        pool_window(ow, sw, pw, kw, W, &w0, &w1, &wp);                                                          \
        float *out = y + ((img * OH + oh) * OW + ow) * C;                                                       \
        if (h0 >= h1 || w0 >= w1) { /* a window in the padding only: 0 */                                      \
          memset(out, 0, C * sizeof(float));                                                                    \
          continue;                                                                                             \
        }                                                                                                       \
        POOL_SIZE                                                                                               \
        POOL_BLOCKS(C, BODY)                                                                                    \
      }                                                                                                         \
    }                                                                                                           \
    return 0;                                                                                                   \
  }

/* the input gradients: a thread per image at a time, its gradient zeroed, then summed output pixel after output
   pixel (`grad` the output pixel's gradient) */
#define POOL_BACKWARD(NAME, BODY, ...)                                                                          \
  CLONES int NAME(const float *restrict x, const float *restrict gy, float *restrict gx, long N, long H, long W, \
                  long C, long OH, long OW, long kh, long kw, long sh, long sw, long ph, long pw, ##__VA_ARGS__,  \
                  long nt) {                                                                                    \
    (void)x;                                                                                                    \
    PARALLEL for (long img = 0; img < N; ++img) {                                                               \
      memset(gx + img * H * W * C, 0, H * W * C * sizeof(float));                                               \
      for (long oh = 0; oh < OH; ++oh) {                                                                        \
        long h0, h1, hp;                                                                                        \
        pool_window(oh, sh, ph, kh, H, &h0, &h1, &hp);                                                          \
        for (long ow = 0; ow < OW; ++ow) {                                                                      \
          long w0, w1, wp;                                                                                      \
          pool_window(ow, sw, pw, kw, W, &w0, &w1, &wp);                                                        \
          const float *grad = gy + ((img * OH + oh) * OW + ow) * C;                                             \
          if (h0 >= h1 || w0 >= w1) continue;                                                                   \
          POOL_SIZE                                                                                             \
          POOL_BLOCKS(C, BODY)                                                                                  \
        }                                                                                                       \
      }                                                                                                         \
    }                                                                                                           \
    return 0;                                                                                                   \
  }

/* ---- 3x3 windows, the vectors of the CPU: pool3

   The forward pass of a 3x3 window wholly inside the image (every window but those at the border, which the code
   above computes) on whole vectors of 16 channels (AVX-512) or 8 (AVX2): one load and one instruction per element
   instead of the lane masks above, no window arithmetic per pixel, and four output pixels at a time (four
   independent chains of maxima or sums). The same values bit for bit:

   - average: the same sum, from +0 in the same order, divided by 9 (the window's size counted either way);
   - maximum: MAXPS(v, best) is v where v > best and best otherwise (ties keep the first: +0 against -0 too), as
     above for every value but a NaN v, which above is taken and here is not: a vector with a NaN in any of its
     windows' lanes is computed again by the code above (the last NaN taken). */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(DARTS_LITE_NO_CLONES)
#include <immintrin.h>

/* the rest of a pixel's channels, from the variable c on: the code above */
#define POOL_REST(BODY)                                                                                         \
  {                                                                                                             \
    for (; c + 8 <= C; c += 8) BODY(pool_f8, pool_i8, c, 8)                                                     \
    for (; c + 4 <= C; c += 4) BODY(pool_f4, pool_i4, c, 4)                                                     \
    if (c < C) BODY(pool_f4, pool_i4, c, C - c)                                                                 \
  }

/* output pixel ow of the row, from channel `from` on, by the code above */
#define POOL3_ABOVE(ow, from)                                                                                   \
  {                                                                                                             \
    long w0, w1, wp, c = (from);                                                                                \
    pool_window((ow), sw, pw, 3, W, &w0, &w1, &wp);                                                             \
    float *out = y + ((img * OH + oh) * OW + (ow)) * C;                                                         \
    if (h0 >= h1 || w0 >= w1) {                                                                                 \
      memset(out + c, 0, (C - c) * sizeof(float));                                                              \
    } else if (avg) {                                                                                           \
      float size = (float)(count_padding ? hp * wp : (h1 - h0) * (w1 - w0));                                    \
      POOL_REST(AVG_FORWARD)                                                                                    \
    } else {                                                                                                    \
      POOL_REST(MAX_FORWARD)                                                                                    \
    }                                                                                                           \
  }

/* E(q, offset) for the nine elements of pixel q's window, row by row (offsets from its top left, channel c) */
#define POOL3_NINE(E, q)                                                                                        \
  E(q, 0) E(q, C) E(q, 2 * C) E(q, row) E(q, row + C) E(q, row + 2 * C) E(q, 2 * row) E(q, 2 * row + C)         \
  E(q, 2 * row + 2 * C)

/* Q (1 or 4) pixels' lanes [c, c + LANES) from window corners p + q * step, out + q * C */
#define POOL3_SUM(q, o) s##q = VADD(s##q, VLOAD(p + q * step + (o) + c));
#define POOL3_MAX(q, o)                                                                                         \
  {                                                                                                             \
    VEC v = VLOAD(p + q * step + (o) + c);                                                                      \
    NAN_ADD(nan, v);                                                                                            \
    b##q = VMAX(v, b##q);                                                                                       \
  }
#define POOL3_LANES(Q)                                                                                          \
  if (avg) {                                                                                                    \
    VEC s0 = VZERO, s1 = VZERO, s2 = VZERO, s3 = VZERO;                                                         \
    POOL3_NINE(POOL3_SUM, 0)                                                                                    \
    if (Q == 4) { POOL3_NINE(POOL3_SUM, 1) POOL3_NINE(POOL3_SUM, 2) POOL3_NINE(POOL3_SUM, 3) }                  \
    VSTORE(out + c, VDIV(s0, nine));                                                                            \
    if (Q == 4) {                                                                                               \
      VSTORE(out + C + c, VDIV(s1, nine));                                                                      \
      VSTORE(out + 2 * C + c, VDIV(s2, nine));                                                                  \
      VSTORE(out + 3 * C + c, VDIV(s3, nine));                                                                  \
    }                                                                                                           \
    (void)s1; (void)s2; (void)s3;                                                                               \
  } else {                                                                                                      \
    VEC b0 = lowest, b1 = lowest, b2 = lowest, b3 = lowest;                                                     \
    NAN_TYPE nan = NAN_NONE;                                                                                    \
    POOL3_NINE(POOL3_MAX, 0)                                                                                    \
    if (Q == 4) { POOL3_NINE(POOL3_MAX, 1) POOL3_NINE(POOL3_MAX, 2) POOL3_NINE(POOL3_MAX, 3) }                  \
    if (NAN_ANY(nan)) {                                                                                         \
      for (long q = 0; q < Q; ++q) {                                                                            \
        long w0 = (ow + q) * sw - pw, w1 = w0 + 3;                                                              \
        float *out = y + ((img * OH + oh) * OW + ow + q) * C;                                                   \
        for (long cc = c; cc < c + LANES; cc += 8) MAX_FORWARD(pool_f8, pool_i8, cc, 8)                         \
      }                                                                                                         \
    } else {                                                                                                    \
      VSTORE(out + c, b0);                                                                                      \
      if (Q == 4) {                                                                                             \
        VSTORE(out + C + c, b1);                                                                                \
        VSTORE(out + 2 * C + c, b2);                                                                            \
        VSTORE(out + 3 * C + c, b3);                                                                            \
      }                                                                                                         \
    }                                                                                                           \
    (void)b1; (void)b2; (void)b3;                                                                               \
  }

#define POOL3(NAME, TARGET)                                                                                     \
  __attribute__((target(TARGET))) static int NAME(int avg, const float *restrict x, float *restrict y, long N,   \
                                                  long H, long W, long C, long OH, long OW, long sh, long sw,    \
                                                  long ph, long pw, long count_padding, long nt) {              \
    const long step = sw * C, row = W * C, whole = C - C % LANES;                                               \
    const VEC nine = VSET1(9.0f), lowest = VSET1(-INFINITY);                                                    \
    POOL_ROWS for (long r = 0; r < N * OH; ++r) {                                                               \
      long img = r / OH, oh = r % OH, h0, h1, hp;                                                               \
      pool_window(oh, sh, ph, 3, H, &h0, &h1, &hp);                                                             \
      /* the output pixels whose windows lie wholly inside the image: [lo, hi) */                              \
      long lo = (pw + sw - 1) / sw, hi = W + pw >= 3 ? (W + pw - 3) / sw + 1 : 0;                               \
      hi = hi < OW ? hi : OW;                                                                                   \
      if (h1 - h0 != 3 || lo >= hi) lo = hi = OW;                                                               \
      for (long ow = 0; ow < lo; ++ow) POOL3_ABOVE(ow, 0)                                                       \
      for (long ow = lo; ow < hi;) {                                                                            \
        const long Q = hi - ow >= 4 ? 4 : 1;                                                                    \
        const float *p = POOL_AT(x, h0, ow * sw - pw, 0);                                                       \
        float *out = y + ((img * OH + oh) * OW + ow) * C;                                                       \
        for (long c = 0; c < whole; c += LANES) {                                                               \
          if (Q == 4) {                                                                                         \
            POOL3_LANES(4)                                                                                      \
          } else {                                                                                              \
            POOL3_LANES(1)                                                                                      \
          }                                                                                                     \
        }                                                                                                       \
        if (whole < C)                                                                                          \
          for (long q = 0; q < Q; ++q) POOL3_ABOVE(ow + q, whole)                                               \
        ow += Q;                                                                                                \
      }                                                                                                         \
      for (long ow = hi; ow < OW; ++ow) POOL3_ABOVE(ow, 0)                                                      \
    }                                                                                                           \
    return 0;                                                                                                   \
  }

#define VEC __m512
#define LANES 16
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VADD _mm512_add_ps
#define VDIV _mm512_div_ps
#define VMAX _mm512_max_ps
#define VSET1 _mm512_set1_ps
#define VZERO _mm512_setzero_ps()
#define NAN_TYPE __mmask16
#define NAN_NONE 0
#define NAN_ADD(nan, v) nan = _kor_mask16(nan, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q))
#define NAN_ANY(nan) ((nan) != 0)
POOL3(pool3_avx512, "avx512f")
#undef VEC
#undef LANES
#undef VLOAD
#undef VSTORE
#undef VADD
#undef VDIV
#undef VMAX
#undef VSET1
#undef VZERO
#undef NAN_TYPE
#undef NAN_NONE
#undef NAN_ADD
#undef NAN_ANY

#define VEC __m256
#define LANES 8
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VADD _mm256_add_ps
#define VDIV _mm256_div_ps
#define VMAX _mm256_max_ps
#define VSET1 _mm256_set1_ps
#define VZERO _mm256_setzero_ps()
#define NAN_TYPE __m256
#define NAN_NONE _mm256_setzero_ps()
#define NAN_ADD(nan, v) nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q))
#define NAN_ANY(nan) _mm256_movemask_ps(nan)
POOL3(pool3_avx2, "avx2")
#undef VEC
#undef LANES
#undef VLOAD
#undef VSTORE
#undef VADD
#undef VDIV
#undef VMAX
#undef VSET1
#undef VZERO
#undef NAN_TYPE
#undef NAN_NONE
#undef NAN_ADD
#undef NAN_ANY

#define POOL3_TRY(KIND)                                                                                         \
  if (kh == 3 && kw == 3 && C >= 8) {                                                                           \
    if (C >= 16 && __builtin_cpu_supports("avx512f"))                                                           \
      return pool3_avx512(KIND, x, y, N, H, W, C, OH, OW, sh, sw, ph, pw, POOL3_COUNT, nt);                     \
    if (__builtin_cpu_supports("avx2"))                                                                         \
      return pool3_avx2(KIND, x, y, N, H, W, C, OH, OW, sh, sw, ph, pw, POOL3_COUNT, nt);                       \
  }
#else
#define POOL3_TRY(KIND)
#endif

/* the maximum has no size; the average's is the window's, with or without the padding */
#define POOL_SIZE (void)hp; (void)wp;
#define POOL3_COUNT 0
POOL_FORWARD(darts_lite_max_pool_f32, MAX_FORWARD, 0)
POOL_BACKWARD(darts_lite_max_pool_backward_f32, MAX_BACKWARD)
#undef POOL_SIZE
#undef POOL3_COUNT
#define POOL_SIZE float size = (float)(count_padding ? hp * wp : (h1 - h0) * (w1 - w0));
#define POOL3_COUNT count_padding
POOL_FORWARD(darts_lite_avg_pool_f32, AVG_FORWARD, 1, long count_padding)
POOL_BACKWARD(darts_lite_avg_pool_backward_f32, AVG_BACKWARD, long count_padding)
#undef POOL_SIZE

/* Per-(sentence, unit) statistics over a batch's real tokens in one pass over the activations: the sentence
 * score (mean, or max, over real tokens) and the peak token of each direction (maximum and minimum, first
 * position among equal values, as torch.max(dim)) packed with its value, for every layer of a batch.
 *
 * The torch path needs a matrix product for the scores, then per direction a hole fill, a max-pool (and for
 * minima a negation) and a pack: four to six passes over the activations, each with its own temporaries.
 * Here each row's tokens stream past running statistics per unit (sum, max, min and their first positions,
 * a few KB that stay in L1), in 8-wide vectors with compare-and-blend updates (GCC/Clang vector extensions;
 * plain conditional code makes compilers emit slow masked stores).
 *
 * Build: cc -O3 -march=native -shared -fPIC (miner/mining/native/__init__.py, cached per source, compiler and CPU).
 * Example: one unit, activations [8, 2, 7, 7, 9] over tokens with real [0 1 1 1 0] -> score (2+7+7)/3,
 * max 7 at position 2 (the first of the tied 7s), min 2 at position 1.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));

static inline int64_t pack(float v, int32_t pos) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return (int64_t)(((uint64_t)bits << 32) | (uint64_t)(uint32_t)pos);
}

/* Activations are float32, or bfloat16 (the upper half of a float32: widening is exact, so a bf16 batch gives
 * the bits its float32 copy gives). xs holds element pointers of either; `bf16` selects the loads. */
static inline __attribute__((always_inline)) v8f load8(const void *base, int64_t i, int bf16) {
    if (bf16) {
        v8h h;
        memcpy(&h, (const uint16_t *)base + i, sizeof h);
        return (v8f)(__builtin_convertvector(h, v8u) << 16);
    }
    v8f v;
    memcpy(&v, (const float *)base + i, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) float load1(const void *base, int64_t i, int bf16) {
    if (bf16) {
        const uint32_t bits = (uint32_t)((const uint16_t *)base)[i] << 16;
        float v;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
    return ((const float *)base)[i];
}

static inline v8f blend(v8i m, v8f a, v8f b) { return (v8f)(((v8i)a & m) | ((v8i)b & ~m)); }
static inline v8i blendi(v8i m, v8i a, v8i b) { return (a & m) | (b & ~m); }

/* Rows b0..b1-1 of a batch of T tokens per row (see miner_token_stats).
 * xs[l]: float32 (bf16: bfloat16) [B, T, widths[l]] contiguous; its units are columns offsets[l].. of the
 * [B, U] outputs.
 * real: uint8 [B, T] (1 = the token counts). mean: 1 for the mean over real tokens, 0 for the maximum.
 * score: float32 [B, U]; top, bottom: int64 [B, U] packed (value bits << 32 | position); bottom may be NULL.
 * NaN never wins a comparison here: callers use these scores and peaks only when every activation is
 * finite, which is what the return value tells: the number of cells whose sum (or score) is NaN or infinite
 * (a row without real tokens gets NaN scores and zero payloads), or -1 when out of memory. */
static inline __attribute__((always_inline)) int64_t rows_stats(
        int64_t n_layers, const void *const *xs, const int64_t *widths, const int64_t *offsets, int64_t T, int64_t U,
        const uint8_t *real, int64_t b0, int64_t b1, int mean, float *score, int64_t *top, int64_t *bottom,
        int bf16) {
    int64_t wmax = 8;
    for (int64_t l = 0; l < n_layers; l++)
        if (widths[l] > wmax) wmax = widths[l];
    const int64_t nv = wmax / 8 + 1;
    v8f *run = aligned_alloc(32, 3 * (size_t)nv * sizeof(v8f));
    v8i *at = aligned_alloc(32, 2 * (size_t)nv * sizeof(v8i));
    if (!run || !at) {
        free(run);
        free(at);
        return -1;
    }
    int64_t nonfinite = 0;
    v8f *sum = run, *mx = run + nv, *mn = run + 2 * nv;
    v8i *ix = at, *in = at + nv;
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t *r = real + b * T;
        int64_t first = -1, n = 0;
        for (int64_t t = 0; t < T; t++)
            if (r[t]) {
                if (first < 0) first = t;
                n++;
            }
        for (int64_t l = 0; l < n_layers; l++) {
            const int64_t w = widths[l], full = w / 8;
            float *s_out = score + b * U + offsets[l];
            int64_t *t_out = top + b * U + offsets[l];
            int64_t *b_out = bottom ? bottom + b * U + offsets[l] : NULL;
            if (n == 0) {
                nonfinite += w;
                for (int64_t u = 0; u < w; u++) {
                    s_out[u] = __builtin_nanf("");
                    t_out[u] = 0;
                    if (b_out) b_out[u] = 0;
                }
                continue;
            }
            const int64_t x = b * T * w; /* element index of the row in xs[l] */
            const void *xl = xs[l];
            const v8i t0 = (v8i){0} + (int32_t)first;
            for (int64_t k = 0; k < full; k++) {
                sum[k] = mx[k] = mn[k] = load8(xl, x + first * w + 8 * k, bf16);
                ix[k] = in[k] = t0;
            }
            for (int64_t t = first + 1; t < T; t++) {
                if (!r[t]) continue;
                const int64_t xt = x + t * w;
                const v8i tt = (v8i){0} + (int32_t)t;
                for (int64_t k = 0; k < full; k++) {
                    const v8f v = load8(xl, xt + 8 * k, bf16), hi = mx[k], lo = mn[k];
                    const v8i gt = v > hi, lt = v < lo;  /* strict: the first position wins ties */
                    sum[k] += v;
                    mx[k] = blend(gt, v, hi);
                    ix[k] = blendi(gt, tt, ix[k]);
                    mn[k] = blend(lt, v, lo);
                    in[k] = blendi(lt, tt, in[k]);
                }
            }
            for (int64_t k = 0; k < full; k++)
                for (int j = 0; j < 8; j++) {
                    const int64_t u = 8 * k + j;
                    s_out[u] = mean ? sum[k][j] / (float)n : mx[k][j];
                    t_out[u] = pack(mx[k][j], ix[k][j]);
                    if (b_out) b_out[u] = pack(mn[k][j], in[k][j]);
                }
            for (int64_t u = 8 * full; u < w; u++) { /* the last w % 8 units, one at a time */
                float s = load1(xl, x + first * w + u, bf16), hi = s, lo = s;
                int32_t ih = (int32_t)first, il = ih;
                for (int64_t t = first + 1; t < T; t++) {
                    if (!r[t]) continue;
                    const float v = load1(xl, x + t * w + u, bf16);
                    s += v;
                    if (v > hi) {
                        hi = v;
                        ih = (int32_t)t;
                    }
                    if (v < lo) {
                        lo = v;
                        il = (int32_t)t;
                    }
                }
                s_out[u] = mean ? s / (float)n : hi;
                t_out[u] = pack(hi, ih);
                if (b_out) b_out[u] = pack(lo, il);
                nonfinite += !__builtin_isfinite(s);
            }
            for (int64_t k = 0; k < full; k++) /* a NaN never wins a comparison, but it poisons the sum */
                for (int j = 0; j < 8; j++) nonfinite += !__builtin_isfinite(sum[k][j]);
        }
    }
    free(run);
    free(at);
    return nonfinite;
}

/* Every row of a batch of B rows (activations float32, or bfloat16 when `bf16`), split over `threads` OpenMP threads. Built with -fopenmp, the library
 * uses the libgomp that torch already loaded (same soname), so its team is torch's own intra-op threads,
 * which are still spinning from the forward pass, rather than a second set competing with them.
 * Returns the number of non-finite scores, or -1 when out of memory. */
static int64_t rows_f32(int64_t n_layers, const void *const *xs, const int64_t *widths, const int64_t *offsets,
                        int64_t T, int64_t U, const uint8_t *real, int64_t b0, int64_t b1, int mean, float *score,
                        int64_t *top, int64_t *bottom) {
    return rows_stats(n_layers, xs, widths, offsets, T, U, real, b0, b1, mean, score, top, bottom, 0);
}

static int64_t rows_bf16(int64_t n_layers, const void *const *xs, const int64_t *widths, const int64_t *offsets,
                         int64_t T, int64_t U, const uint8_t *real, int64_t b0, int64_t b1, int mean, float *score,
                         int64_t *top, int64_t *bottom) {
    return rows_stats(n_layers, xs, widths, offsets, T, U, real, b0, b1, mean, score, top, bottom, 1);
}

int64_t miner_token_stats(int64_t n_layers, const void *const *xs, const int64_t *widths, const int64_t *offsets,
                          int64_t B, int64_t T, int64_t U, const uint8_t *real, int mean, int threads,
                          float *score, int64_t *top, int64_t *bottom, int bf16) {
    int64_t total = 0;
    int failed = 0;
    if (threads < 1) threads = 1;
    if (threads > B) threads = (int)(B > 0 ? B : 1);
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total) reduction(| : failed)
    for (int part = 0; part < threads; part++) {
        const int64_t b0 = B * part / threads, b1 = B * (part + 1) / threads;
        const int64_t got = bf16 ? rows_bf16(n_layers, xs, widths, offsets, T, U, real, b0, b1, mean, score, top, bottom)
                                 : rows_f32(n_layers, xs, widths, offsets, T, U, real, b0, b1, mean, score, top, bottom);
        if (got < 0)
            failed = 1;
        else
            total += got;
    }
    return failed ? -1 : total;
}

/* A block's per-unit sums and score histogram (miner/mining/block_sums.py, BatchSums.add; the histogram's integer
 * formula repeats miner/mining/sketch.py) in one pass over float32 score matrices [rows[k], U] (parts k = 0..
 * n_parts-1, in order): per unit u, total += v and squares += v * v (float64, row by row), low / high the
 * minimum / maximum (NaN propagates, as torch.aminmax and torch.minimum do), positive += (v > 0), and
 * hist[u * 388 + bin(v)] += 1 (int32 counters with hist32, else int64). The moment pointers may be NULL (the
 * histogram only). Units are split over `threads` OpenMP threads in strips of 16 (one cache line of a score
 * row), each strip walked through every row of every part, so its counters stay in cache: passing several
 * batches at once reads each unit's histogram (1.5 KB) once for all of them rather than once per batch. The
 * same result for any thread count. */
#define SKETCH_BINS 388
#define SKETCH_HALF 192
#define SKETCH_ZERO 193
#define SKETCH_LOW (115 * 8)
void miner_batch_sums(const float *const *scores, const int64_t *rows, int64_t n_parts, int64_t U, int threads,
                      double *total, double *squares, float *low, float *high, double *positive, void *hist,
                      int hist32) {
    const int64_t strips = (U + 15) / 16;
    if (threads < 1) threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t t = 0; t < strips; t++) {
        const int64_t u0 = t * 16, u1 = u0 + 16 < U ? u0 + 16 : U;
        for (int64_t k = 0; k < n_parts; k++)
            for (int64_t b = 0; b < rows[k]; b++) {
                const float *row = scores[k] + b * U;
                if (total) {
                    for (int64_t u = u0; u < u1; u++) {
                        const float v = row[u];
                        const double x = v;
                        total[u] += x;
                        squares[u] += x * x;
                        if (v < low[u] || v != v) low[u] = v; /* once NaN, no comparison replaces it */
                        if (v > high[u] || v != v) high[u] = v;
                        positive[u] += v > 0.0f;
                    }
                }
                for (int64_t u = u0; u < u1; u++) {
                    int32_t bits;
                    memcpy(&bits, row + u, sizeof bits);
                    const int32_t mag = bits & 0x7FFFFFFF;
                    int32_t j = (mag >> 20) - SKETCH_LOW;
                    j = j < -1 ? -1 : (j > SKETCH_HALF ? SKETCH_HALF : j);
                    const int32_t sign = (bits >> 31) | 1;
                    const int32_t bin = mag > 0x7F800000 ? SKETCH_BINS - 1 : SKETCH_ZERO + sign * (j + 1);
                    if (hist32)
                        ((int32_t *)hist)[u * SKETCH_BINS + bin] += 1;
                    else
                        ((int64_t *)hist)[u * SKETCH_BINS + bin] += 1;
                }
            }
    }
}

/* The score histogram alone, int64 counters (see miner_batch_sums). */
void miner_score_histogram(const float *score, int64_t B, int64_t U, int threads, int64_t *hist) {
    miner_batch_sums(&score, &B, 1, U, threads, NULL, NULL, NULL, NULL, NULL, hist, 0);
}

/* The queues' hot paths on the CPU (miner/mining/topn.py; the torch operations stay their oracle): a batch's
 * candidates added to a block's window, each full row cut back to its N best on the spot (`miner_window_add`,
 * WindowedQueues.add_scored); candidates merged into queue rows (`miner_merge_rows`, TopNQueues.merge); queue
 * rows cut back to their N best (`miner_cut_rows`, TopNQueues.settle).
 *
 * Each is a selection per row: the N-th largest key is found on a scratch copy of the filled keys (a sampled
 * bracket, then quickselect on what lies inside it: kth_largest_long), then the row is compacted in place, keys
 * and payloads together, keeping the slot order of what stays, with branch-free passes. The torch path does a
 * torch.topk over [rows, width] (a (value, index) pair per slot, nth_element, then the indices), a gather of the
 * payloads by those indices and comparisons of the indices for the fresh counts, with their temporaries.
 *
 * Keys: int64, SENTINEL (INT64_MIN) marks an empty slot. Keys of one row are distinct (a sentence enters a row
 * once and the key holds its id); should two be equal anyway, the first in slot order among those tied at the
 * N-th key stay, so the result is deterministic.
 *
 * Build: with token_stats.c into one library (miner/mining/native/__init__.py).
 * Example (N = 2): a row [5, SENTINEL, 9, 7] -> [9, 7, SENTINEL, SENTINEL], count 2, row minimum 7;
 * with before = 2, both kept keys come from slots >= 2: fresh 2.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SENTINEL INT64_MIN
#define MAX_SENTENCE_ID 0xFFFFFFFFu

/* encode_keys of one score and sentence id (topn.py): the score's float32 bits made to sort as integers in the
 * high half (-0.0 first made +0.0), 0xFFFFFFFF - id in the low half. */
static inline int64_t encode_key(float score, int64_t id) {
    const float s = score + 0.0f; /* IEEE: -0.0 + 0.0 = +0.0 (no -ffast-math here) */
    int32_t bits;
    memcpy(&bits, &s, sizeof bits);
    const int32_t hi = bits ^ ((bits >> 31) & 0x7FFFFFFF);
    return (int64_t)(((uint64_t)(int64_t)hi << 32) | (uint64_t)(MAX_SENTENCE_ID - (uint64_t)id));
}

static inline void swap64(int64_t *a, int64_t *b) {
    const int64_t t = *a;
    *a = *b;
    *b = t;
}

static int cmp_desc(const void *x, const void *y) {
    const int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a < b) - (a > b);
}

/* The k-th largest (0-based) of a[0..len-1], which it reorders: quickselect with a median-of-three pivot, a sort
 * for short ranges and, past a depth of 2 log2(len) + 8 rounds (an adversarial order), a full sort. */
static int64_t kth_largest(int64_t *a, int64_t len, int64_t k) {
    int64_t lo = 0, hi = len - 1;
    int depth = 8;
    for (int64_t m = len; m > 1; m >>= 1) depth += 2;
    while (hi - lo > 16) {
        if (--depth < 0) {
            qsort(a + lo, (size_t)(hi - lo + 1), sizeof *a, cmp_desc);
            return a[k];
        }
        const int64_t mid = lo + (hi - lo) / 2;
        /* median of three into a[mid], descending order: a[lo] >= a[mid] >= a[hi] */
        if (a[mid] > a[lo]) swap64(a + mid, a + lo);
        if (a[hi] > a[lo]) swap64(a + hi, a + lo);
        if (a[hi] > a[mid]) swap64(a + hi, a + mid);
        const int64_t pivot = a[mid];
        int64_t i = lo, j = hi;
        while (i <= j) { /* Hoare partition, descending: [lo, j] >= pivot >= [i, hi] */
            while (a[i] > pivot) i++;
            while (a[j] < pivot) j--;
            if (i <= j) {
                swap64(a + i, a + j);
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return a[k]; /* j < k < i: a[k] == pivot */
    }
    for (int64_t x = lo + 1; x <= hi; x++) { /* insertion sort, descending */
        const int64_t v = a[x];
        int64_t y = x - 1;
        while (y >= lo && a[y] < v) {
            a[y + 1] = a[y];
            y--;
        }
        a[y + 1] = v;
    }
    return a[k];
}

/* The k-th largest (0-based) of a[0..len-1] for long rows, with `spare` room for len keys; both are reordered.
 * Partition steps mispredict about every other branch, so a row of 2,000 keys costs ~15 us by quickselect
 * alone. Here two keys of an evenly spread sample of 64 bracket the k-th (its rank in the sample, +-6), one
 * branch-free pass counts the keys above the bracket and copies those inside it to `spare`, and the search goes
 * on there (a tenth to a fifth of the row) with the roles of the buffers swapped; when the bracket misses
 * the k-th (an unlucky sample), quickselect runs on the whole row. Exact either way. */
static int64_t kth_largest_long(int64_t *a, int64_t len, int64_t k, int64_t *spare) {
    enum { S = 64, D = 6 };
    if (len < 4 * S) return kth_largest(a, len, k);
    int64_t sample[S];
    for (int64_t i = 0; i < S; i++) sample[i] = a[i * len / S];
    const int64_t j = k * S / len;
    const int64_t hi = j - D < 0 ? INT64_MAX : kth_largest(sample, S, j - D);
    const int64_t lo = j + D > S - 1 ? INT64_MIN : kth_largest(sample, S, j + D);
    int64_t above = 0, inside = 0;
    for (int64_t i = 0; i < len; i++) {
        const int64_t x = a[i];
        spare[inside] = x;
        inside += (x <= hi) & (x >= lo);
        above += x > hi;
    }
    if (above <= k && k < above + inside && inside < len) /* inside < len: equal keys cannot loop */
        return kth_largest_long(spare, inside, k - above, a);
    return kth_largest(a, len, k);
}

/* Whether a key stays in a row cut at kth (1 or 0, branch-free: a kept/dropped branch would mispredict half the
 * time): keys above kth, and keys equal to it while *ties lasts (counted down). Without a cut kth is SENTINEL,
 * below every filled slot, and *ties 0. */
static inline int64_t kept(int64_t k, int64_t kth, int64_t *ties) {
    const int64_t tie = (k == kth) & (k != SENTINEL) & (*ties > 0);
    *ties -= tie;
    return (k > kth) | tie;
}

/* One row: keep its n best filled slots among the first `width`, compacted to slots 0.., SENTINEL after them
 * (`scratch` holds 2 x width keys).
 * Returns how many are kept; *fresh: how many kept ones came from slots >= before; *low: the smallest kept key
 * when n are kept, else SENTINEL (the row's threshold, as the minimum over its n slots). */
static int64_t cut_row(int64_t *keys, int64_t *payload, int64_t width, int64_t n, int64_t before, int64_t *scratch,
                       int64_t *fresh, int64_t *low) {
    int64_t m = 0;
    for (int64_t i = 0; i < width; i++)
        if (keys[i] != SENTINEL) scratch[m++] = keys[i];
    int64_t kth = SENTINEL, ties = 0;
    if (m > n) {
        int64_t greater = 0;
        kth = kth_largest_long(scratch, m, n - 1, scratch + width);
        for (int64_t i = 0; i < width; i++) greater += keys[i] > kth;
        ties = n - greater; /* how many keys equal to kth stay (1 when keys are distinct) */
    }
    /* branch-free compaction (see kept) */
    int64_t out = 0, f = 0, mn = INT64_MAX;
    for (int64_t i = 0; i < width; i++) {
        const int64_t k = keys[i];
        const int64_t keep = kept(k, kth, &ties);
        keys[out] = k;
        payload[out] = payload[i];
        f += keep & (i >= before);
        mn = keep & (k < mn) ? k : mn;
        out += keep;
    }
    for (int64_t i = out; i < width; i++) keys[i] = SENTINEL;
    *fresh = f;
    *low = out >= n ? mn : SENTINEL;
    return out;
}

/* Cut every row r of an int64 [rows, stride] key buffer (and its payload buffer) whose count[r] > n: its n best
 * keys among slots 0..width-1 go to slots 0.. (SENTINEL-padded to n), count[r] = n. For each row: fresh[r] =
 * how many of the kept came from slots >= before[r] (before NULL: 0), or -1 for a row not cut; low[r] = the
 * smallest of its n slots after the cut (SENTINEL if fewer than n are filled), untouched for a row not cut.
 * Rows are split over `threads` OpenMP threads. Returns the number of rows cut, or -1 when out of memory. */
int64_t miner_cut_rows(int64_t rows, int64_t stride, int64_t width, int64_t n, int64_t *keys, int64_t *payload,
                       int64_t *count, const int64_t *before, int64_t *fresh, int64_t *low, int threads) {
    int64_t cut = 0;
    int failed = 0;
    if (threads < 1) threads = 1;
    if (threads > rows) threads = (int)(rows > 0 ? rows : 1);
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : cut) reduction(| : failed)
    for (int part = 0; part < threads; part++) {
        const int64_t r0 = rows * part / threads, r1 = rows * (part + 1) / threads;
        int64_t *scratch = malloc(2 * (size_t)(width > 0 ? width : 1) * sizeof *scratch);
        if (!scratch) {
            failed = 1;
            continue;
        }
        for (int64_t r = r0; r < r1; r++) {
            if (count[r] <= n) {
                fresh[r] = -1;
                continue;
            }
            cut_row(keys + r * stride, payload + r * stride, width, n, before ? before[r] : width, scratch,
                    fresh + r, low + r);
            count[r] = n;
            cut++;
        }
        free(scratch);
    }
    return failed ? -1 : cut;
}

/* The float32 lower bound of the scores of keys above `key` (topn.threshold_scores): its score, -inf for SENTINEL
 * and NaN. */
static inline float threshold_score(int64_t key) {
    if (key == SENTINEL) return -__builtin_inff();
    const int32_t hi = (int32_t)(key >> 32);
    const int32_t bits = hi ^ ((hi >> 31) & 0x7FFFFFFF);
    float s;
    memcpy(&s, &bits, sizeof s);
    return s != s ? -__builtin_inff() : s;
}

/* One batch into a block's window (WindowedQueues; the compiled twin of candidate_superset + sparse_candidates +
 * the peaks + add + flush of BlockMiner._add_candidates): for queue row r < D * U (top rows 0..U-1, then with
 * D = 2 the bottom rows, whose keys are those of the negated scores) and batch row b in order, the key of
 * (score[b, r % U] (negated for bottom rows), ids[b]) enters row r when it beats thresh[r]: it is written at
 * slot count[r] of keys/payload [D * U, stride] with the cell's peak (top[b, u], bottom rows bottom[b, u]). A
 * row that is full (count = stride) is first cut to its n best (cut_row), and its threshold rises to its n-th
 * best key (thresh, and thresh_scores, the float32 bound of the scores that can beat it). Every row ends holding
 * the same entries a top-N of its candidates would, whenever it was cut. The scores are finite (the caller
 * checked). Units are walked in strips of 16 (one cache line of a score row), over `threads` OpenMP threads.
 * Returns the largest count over the rows, or -1 when out of memory. */
int64_t miner_window_add(const float *score, const int64_t *ids, int64_t B, int64_t U, int64_t D, const int64_t *top,
                         const int64_t *bottom, int64_t *keys, int64_t *payload, int64_t stride, int64_t n,
                         int64_t *count, int64_t *thresh, float *thresh_scores, int threads) {
    const int64_t strips = (U + 15) / 16;
    int64_t most = 0;
    int failed = 0;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads) reduction(max : most) reduction(| : failed)
    {
        int64_t *scratch = malloc(2 * (size_t)(stride > 0 ? stride : 1) * sizeof *scratch);
        if (!scratch) failed = 1;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < strips * D; t++) {
            if (!scratch) continue;
            const int64_t d = t / strips, u0 = (t % strips) * 16, u1 = u0 + 16 < U ? u0 + 16 : U;
            const int64_t *peak = d ? bottom : top;
            const int64_t w = u1 - u0;
            for (int64_t b = 0; b < B; b++) {
                const float *srow = score + b * U + u0;
                const int64_t *trow = thresh + d * U + u0, id = ids[b];
                int64_t cand[16];
                uint32_t beat = 0;
                /* the strip's keys and which beat their row's threshold, branch-free (the compiler vectorizes it);
                 * then only those cells, usually few once the queues are full */
                for (int64_t j = 0; j < w; j++) {
                    cand[j] = encode_key(d ? -srow[j] : srow[j], id);
                    beat |= (uint32_t)(cand[j] > trow[j]) << j;
                }
                while (beat) {
                    const int64_t j = __builtin_ctz(beat), u = u0 + j, r = d * U + u, key = cand[j];
                    beat &= beat - 1;
                    int64_t *krow = keys + r * stride, *prow = payload + r * stride;
                    if (count[r] >= stride) { /* full: cut to the n best, raise the threshold */
                        int64_t fresh, low;
                        count[r] = cut_row(krow, prow, count[r], n, count[r], scratch, &fresh, &low);
                        if (low > thresh[r]) {
                            thresh[r] = low;
                            thresh_scores[r] = threshold_score(low);
                        }
                        if (key <= thresh[r]) continue;
                    }
                    krow[count[r]] = key;
                    prow[count[r]] = peak[b * U + u];
                    count[r]++;
                }
            }
            for (int64_t u = u0; u < u1; u++)
                if (count[d * U + u] > most) most = count[d * U + u];
        }
        free(scratch);
    }
    return failed ? -1 : most;
}

/* Merge candidates into top-N queue rows in place (TopNQueues.merge): row r holds entries in slots
 * 0..count[r]-1 of keys/payload [rows, stride] (SENTINEL slots among them are empty) and at most n of them;
 * its candidates are ckeys/cpayload[cstart[r] .. cstart[r + 1]) (SENTINEL ones are empty slots, as in dense
 * candidate rows). The row keeps the n best of both (all of them when they are at most n; n <= stride),
 * compacted to slots 0.. (its entries first, in slot order, then its candidates, in order), SENTINEL up to the
 * old count; count[r] = how many it keeps; gained[r] = how many of those are candidates. Keys are distinct in a
 * row; should two be equal, the first (entries before candidates) stay. Rows are split over `threads` OpenMP
 * threads; returns 0, or -1 when out of memory.
 * Example (n = 2): entries [9, 4], candidates [7, SENTINEL, 1] -> [9, 7], count 2, gained 1. */
int64_t miner_merge_rows(int64_t rows, int64_t stride, int64_t n, int64_t *keys, int64_t *payload, int64_t *count,
                         const int64_t *ckeys, const int64_t *cpayload, const int64_t *cstart, int64_t *gained,
                         int threads) {
    int failed = 0;
    if (threads < 1) threads = 1;
    if (threads > rows) threads = (int)(rows > 0 ? rows : 1);
#pragma omp parallel for num_threads(threads) schedule(static) reduction(| : failed)
    for (int part = 0; part < threads; part++) {
        const int64_t r0 = rows * part / threads, r1 = rows * (part + 1) / threads;
        int64_t cap = 0;
        int64_t *scratch = NULL;
        for (int64_t r = r0; r < r1 && !failed; r++) {
            int64_t *krow = keys + r * stride, *prow = payload + r * stride;
            const int64_t had = count[r], c0 = cstart[r], c1 = cstart[r + 1];
            if (c1 == c0) {
                gained[r] = 0;
                continue;
            }
            if (had + (c1 - c0) > cap) {
                cap = had + (c1 - c0);
                free(scratch);
                scratch = malloc(2 * (size_t)cap * sizeof *scratch);
                if (!scratch) {
                    failed = 1;
                    break;
                }
            }
            int64_t m = 0;
            for (int64_t i = 0; i < had; i++)
                if (krow[i] != SENTINEL) scratch[m++] = krow[i];
            for (int64_t i = c0; i < c1; i++)
                if (ckeys[i] != SENTINEL) scratch[m++] = ckeys[i];
            int64_t kth = SENTINEL, ties = 0;
            const int cut = m > n;
            if (cut) {
                kth = kth_largest_long(scratch, m, n - 1, scratch + m);
                int64_t greater = 0;
                for (int64_t i = 0; i < had; i++) greater += krow[i] > kth;
                for (int64_t i = c0; i < c1; i++) greater += ckeys[i] > kth;
                ties = n - greater;
            }
            /* branch-free compaction (see kept); out <= n <= stride, and out <= i while the row's own slots are
             * walked */
            int64_t out = 0, fresh = 0;
            for (int64_t i = 0; i < had; i++) {
                const int64_t k = krow[i];
                const int64_t keep = kept(k, kth, &ties);
                krow[out] = k;
                prow[out] = prow[i];
                out += keep;
            }
            for (int64_t i = c0; i < c1; i++) {
                const int64_t k = ckeys[i];
                const int64_t keep = kept(k, kth, &ties);
                if (out < stride) { /* the slot after the last kept one is scratch only while it exists */
                    krow[out] = k;
                    prow[out] = cpayload[i];
                }
                out += keep;
                fresh += keep;
            }
            const int64_t written = out < stride ? out + 1 : stride; /* a dropped candidate may sit at slot out */
            for (int64_t i = out; i < (had > written ? had : written); i++) krow[i] = SENTINEL;
            count[r] = out;
            gained[r] = fresh;
        }
        free(scratch);
    }
    return failed ? -1 : 0;
}

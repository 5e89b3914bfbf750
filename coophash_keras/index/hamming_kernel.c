/* Exact Hamming top-k over compact codes: n rows of B = K/8 bytes each, no padding.
 *
 * Built on first use by kernel.py (gcc -O3 -march=native -fopenmp) and loaded with ctypes.
 *
 * Why it is close to a plain scan:
 *  - Queries are processed in blocks of QB: each database vector, once loaded (and split into its
 *    low and high nibbles), is compared with QB queries held in registers.
 *  - The hot loop only keeps, per query, the MINIMUM distance over a chunk of ~1 KB of codes
 *    (chunk_rows): one vector min per comparison, the same cost as the scan's add. A chunk whose
 *    minimum cannot enter a query's top-k (the usual case once warm) costs nothing more; one that
 *    can is re-read for that query with SIMD compares that give a bitmask of the rows within reach.
 *  - Distances are small integers 0..K, so selection is by counting, not by a heap: each query
 *    keeps a buffer of candidates and a histogram of their distances; the k-th smallest distance t
 *    is read off the histogram's prefix sums, and only rows with d <= t (or < t, see below) are
 *    looked at again. Ties at t are broken by id.
 *  - Rows are visited tile by tile (TILE_BYTES, sized for L2) and every query block of a thread
 *    passes over a tile before the next one, so the database streams from memory about once per
 *    thread instead of once per query block.
 *  - With fewer query blocks than threads (a handful of queries), the rows are split among threads
 *    too and their candidates merged.
 *
 * Three code paths compute the chunk minima, chosen at run time (path argument; 0 = best the CPU has):
 *   1 generic  plain C (gcc auto-vectorises it for the build machine; also the reference),
 *   2 avx2     nibble-lookup popcount (vpshufb) with the row's nibbles split once for QB queries,
 *   3 avx512   VPOPCNTDQ popcount.
 * All paths produce identical results: they only decide which chunks are looked at again, and the
 * distances of those are computed by the same scalar code.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define QB 8
#define CHMAX 256 /* rows per chunk at most; a chunk is ~1 KB of codes (chunk_rows) */
#define TILE_BYTES (192 * 1024)
#define QUERY_BATCH 1024 /* queries whose candidate state is alive at once */

enum { PATH_AUTO = 0, PATH_GENERIC = 1, PATH_AVX2 = 2, PATH_AVX512 = 3 };

/* ------------------------------------------------------------------ distances, portable */
static inline uint64_t load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static inline int32_t dist_bytes(const uint8_t *a, const uint8_t *b, int B) {
    int32_t d = 0;
    int j = 0;
    for (; j + 8 <= B; j += 8) d += __builtin_popcountll(load64(a + j) ^ load64(b + j));
    for (; j + 4 <= B; j += 4) d += __builtin_popcount(load32(a + j) ^ load32(b + j));
    for (; j < B; j++) d += __builtin_popcount((unsigned)(a[j] ^ b[j]));
    return d;
}

/* B is a compile-time constant at the call sites below, so these unroll into straight-line code. */
static inline int32_t dist_const(const uint8_t *a, const uint8_t *b, int B) {
    if (B == 4) return __builtin_popcount(load32(a) ^ load32(b));
    if (B == 8) return __builtin_popcountll(load64(a) ^ load64(b));
    if (B == 16) return __builtin_popcountll(load64(a) ^ load64(b)) + __builtin_popcountll(load64(a + 8) ^ load64(b + 8));
    return dist_bytes(a, b, B);
}

static inline int32_t dist_any(const uint8_t *a, const uint8_t *b, int B) {
    switch (B) {
    case 4: return dist_const(a, b, 4);
    case 8: return dist_const(a, b, 8);
    case 16: return dist_const(a, b, 16);
    default: return dist_bytes(a, b, B);
    }
}

static inline int64_t chunk_rows(int B) {
    int64_t r = 1024 / B;
    return r > CHMAX ? CHMAX : r < 64 ? 64 : r;
}

/* Bit i of bits[] set iff row i of the chunk (cn <= CHMAX rows) is within `limit` of q. */
static void generic_hits(const uint8_t *rows, int64_t cn, int B, const uint8_t *q, int32_t limit, uint64_t *bits) {
    memset(bits, 0, CHMAX / 8);
    for (int64_t i = 0; i < cn; i++)
        bits[i >> 6] |= (uint64_t)(dist_any(rows + i * B, q, B) <= limit) << (i & 63);
}

/* Minimum distance of each of QB queries (qs: QB*B bytes) over cn rows; plain loops. */
#define GENERIC_MIN(BB)                                                                 \
    for (int64_t i = 0; i < cn; i++) {                                                  \
        const uint8_t *r = rows + i * (BB);                                             \
        for (int s = 0; s < QB; s++) {                                                  \
            int32_t d = dist_const(r, qs + s * (BB), (BB));                             \
            mn[s] = d < mn[s] ? d : mn[s];                                              \
        }                                                                               \
    }
static void generic_min(const uint8_t *rows, int64_t cn, int B, const uint8_t *qs, int32_t *mn) {
    for (int s = 0; s < QB; s++) mn[s] = 1 << 30;
    switch (B) {
    case 4: GENERIC_MIN(4) break;
    case 8: GENERIC_MIN(8) break;
    case 16: GENERIC_MIN(16) break;
    default:
        for (int64_t i = 0; i < cn; i++)
            for (int s = 0; s < QB; s++) {
                int32_t d = dist_bytes(rows + i * B, qs + s * B, B);
                mn[s] = d < mn[s] ? d : mn[s];
            }
    }
}

#define GENERIC_SUM(BB)                                                                 \
    for (int64_t i = 0; i < cn; i++) {                                                  \
        const uint8_t *r = rows + i * (BB);                                             \
        for (int s = 0; s < QB; s++) acc[s] += dist_const(r, qs + s * (BB), (BB));      \
    }
/* The scan limit: the same loop with a sum in place of the minimum. */
static int64_t generic_sum(const uint8_t *rows, int64_t cn, int B, const uint8_t *qs) {
    int64_t acc[QB] = {0}, total = 0;
    switch (B) {
    case 4: GENERIC_SUM(4) break;
    case 8: GENERIC_SUM(8) break;
    case 16: GENERIC_SUM(16) break;
    default:
        for (int64_t i = 0; i < cn; i++)
            for (int s = 0; s < QB; s++) acc[s] += dist_bytes(rows + i * B, qs + s * B, B);
    }
    for (int s = 0; s < QB; s++) total += acc[s];
    return total;
}

/* ------------------------------------------------------------------ AVX2: nibble lookup */
/* popcount(r ^ q) per byte = lut[(r ^ q) & 15] + lut[(r ^ q) >> 4], and the nibble split commutes
 * with xor: (r ^ q) & 15 = (r & 15) ^ (q & 15). So each row vector is split once for QB queries
 * and each comparison is xor, xor, 2 x vpshufb, add, a horizontal byte sum, and the min (or add). */
#define AVX2 __attribute__((target("avx2")))

/* Byte counts -> distance per code, in the 32-bit lanes that hold one (see the reductions). */
AVX2 static inline __m256i avx2_codesum(__m256i c, int B) {
    if (B == 4) return _mm256_madd_epi16(_mm256_maddubs_epi16(c, _mm256_set1_epi8(1)), _mm256_set1_epi16(1));
    if (B == 16) c = _mm256_add_epi8(c, _mm256_shuffle_epi32(c, 0x4E)); /* add the two halves of a code */
    return _mm256_sad_epu8(c, _mm256_setzero_si256()); /* 64-bit lanes; their high halves are 0 */
}

#define AVX2_LOOP(BB, UPDATE)                                                                       \
    {                                                                                               \
        const int per = 32 / (BB); /* codes per vector */                                           \
        const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, \
                                             1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);                   \
        const __m256i m4 = _mm256_set1_epi8(0x0f);                                                  \
        __m256i qlo[QB], qhi[QB];                                                                   \
        for (int s = 0; s < QB; s++) {                                                              \
            __m256i qv;                                                                             \
            if ((BB) == 4) qv = _mm256_set1_epi32((int)load32(qs + s * 4));                         \
            else if ((BB) == 8) qv = _mm256_set1_epi64x((long long)load64(qs + s * 8));             \
            else qv = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(qs + s * 16))); \
            qlo[s] = _mm256_and_si256(qv, m4);                                                      \
            qhi[s] = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);                                \
        }                                                                                           \
        for (; i + per <= cn; i += per) {                                                           \
            __m256i r = _mm256_loadu_si256((const __m256i *)(rows + i * (BB)));                     \
            __m256i rlo = _mm256_and_si256(r, m4), rhi = _mm256_and_si256(_mm256_srli_epi16(r, 4), m4); \
            _Pragma("GCC unroll 8") for (int s = 0; s < QB; s++) {                                  \
                __m256i c = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_xor_si256(rlo, qlo[s])), \
                                            _mm256_shuffle_epi8(lut, _mm256_xor_si256(rhi, qhi[s]))); \
                __m256i d = avx2_codesum(c, (BB));                                                  \
                UPDATE;                                                                             \
            }                                                                                       \
        }                                                                                           \
    }

/* Lanes that hold a distance: every 32-bit lane for B=4, the low half of each 64-bit lane else. */
AVX2 static inline int32_t avx2_hmin(__m256i v, int B) {
    uint32_t t[8];
    _mm256_storeu_si256((__m256i *)t, v);
    uint32_t m = t[0];
    for (int j = (B == 4 ? 1 : 2); j < 8; j += (B == 4 ? 1 : 2)) m = t[j] < m ? t[j] : m;
    return (int32_t)m;
}

AVX2 static void avx2_min(const uint8_t *rows, int64_t cn, int B, const uint8_t *qs, int32_t *mn) {
    __m256i acc[QB];
    for (int s = 0; s < QB; s++) acc[s] = _mm256_set1_epi32(1 << 30);
    int64_t i = 0;
    switch (B) {
    case 4: AVX2_LOOP(4, acc[s] = _mm256_min_epu32(acc[s], d)) break;
    case 8: AVX2_LOOP(8, acc[s] = _mm256_min_epu32(acc[s], d)) break;
    default: AVX2_LOOP(16, acc[s] = _mm256_min_epu32(acc[s], d))
    }
    for (int s = 0; s < QB; s++) mn[s] = avx2_hmin(acc[s], B);
    if (i < cn) { /* the last few rows */
        int32_t tail[QB];
        generic_min(rows + i * B, cn - i, B, qs, tail);
        for (int s = 0; s < QB; s++) mn[s] = tail[s] < mn[s] ? tail[s] : mn[s];
    }
}

/* One query against a chunk: the rows within `limit`, as bits (see generic_hits). */
AVX2 static void avx2_hits(const uint8_t *rows, int64_t cn, int B, const uint8_t *q, int32_t limit, uint64_t *bits) {
    memset(bits, 0, CHMAX / 8);
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                         2, 3, 2, 3, 3, 4);
    const __m256i m4 = _mm256_set1_epi8(0x0f), lim = _mm256_set1_epi64x(limit), lim32 = _mm256_set1_epi32(limit);
    __m256i qv = B == 4 ? _mm256_set1_epi32((int)load32(q))
               : B == 8 ? _mm256_set1_epi64x((long long)load64(q))
                        : _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q));
    const int per = 32 / B;
    int64_t i = 0;
    for (; i + per <= cn; i += per) {
        __m256i x = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(rows + i * B)), qv);
        __m256i c = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, m4)),
                                    _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), m4)));
        __m256i d = avx2_codesum(c, B);
        uint64_t far; /* bit per code: d > limit */
        if (B == 4) far = (uint64_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(d, lim32)));
        else {
            int m = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(d, lim)));
            far = B == 8 ? (uint64_t)m : (uint64_t)((m & 1) | ((m >> 1) & 2)); /* B=16: a code per 2 lanes */
        }
        bits[i >> 6] |= (~far & ((1u << per) - 1)) << (i & 63);
    }
    for (; i < cn; i++) bits[i >> 6] |= (uint64_t)(dist_any(rows + i * B, q, B) <= limit) << (i & 63);
}

AVX2 static int64_t avx2_sum(const uint8_t *rows, int64_t cn, int B, const uint8_t *qs) {
    __m256i acc[QB];
    for (int s = 0; s < QB; s++) acc[s] = _mm256_setzero_si256();
    int64_t i = 0;
    switch (B) {
    case 4: AVX2_LOOP(4, acc[s] = _mm256_add_epi32(acc[s], d)) break;
    case 8: AVX2_LOOP(8, acc[s] = _mm256_add_epi64(acc[s], d)) break;
    default: AVX2_LOOP(16, acc[s] = _mm256_add_epi64(acc[s], d))
    }
    int64_t total = 0;
    for (int s = 0; s < QB; s++) {
        uint32_t t[8];
        _mm256_storeu_si256((__m256i *)t, acc[s]);
        for (int j = 0; j < 8; j++) total += t[j]; /* B=16 counts each code twice: same work, fine */
    }
    if (i < cn) total += generic_sum(rows + i * B, cn - i, B, qs);
    return total;
}

/* ------------------------------------------------------------------ AVX-512 VPOPCNTDQ */
#define AVX512 __attribute__((target("avx512f,avx512vpopcntdq")))

#define AVX512_LOOP(BB, UPDATE)                                                                     \
    {                                                                                               \
        const int per = 64 / (BB);                                                                  \
        __m512i qv[QB];                                                                             \
        for (int s = 0; s < QB; s++) {                                                              \
            if ((BB) == 4) qv[s] = _mm512_set1_epi32((int)load32(qs + s * 4));                      \
            else if ((BB) == 8) qv[s] = _mm512_set1_epi64((long long)load64(qs + s * 8));           \
            else qv[s] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(qs + s * 16)));   \
        }                                                                                           \
        for (; i + per <= cn; i += per) {                                                           \
            __m512i r = _mm512_loadu_si512((const void *)(rows + i * (BB)));                        \
            _Pragma("GCC unroll 8") for (int s = 0; s < QB; s++) {                                  \
                __m512i x = _mm512_xor_si512(r, qv[s]), d;                                          \
                if ((BB) == 4) d = _mm512_popcnt_epi32(x);                                          \
                else {                                                                              \
                    d = _mm512_popcnt_epi64(x);                                                     \
                    if ((BB) == 16) d = _mm512_add_epi64(d, _mm512_shuffle_epi32(d, _MM_PERM_BADC)); \
                }                                                                                   \
                UPDATE;                                                                             \
            }                                                                                       \
        }                                                                                           \
    }

AVX512 static void avx512_min(const uint8_t *rows, int64_t cn, int B, const uint8_t *qs, int32_t *mn) {
    __m512i acc[QB];
    for (int s = 0; s < QB; s++) acc[s] = _mm512_set1_epi32(1 << 30);
    int64_t i = 0;
    switch (B) { /* 64-bit lanes hold values < 2^31 with zero high halves: a 32-bit min is exact */
    case 4: AVX512_LOOP(4, acc[s] = _mm512_min_epu32(acc[s], d)) break;
    case 8: AVX512_LOOP(8, acc[s] = _mm512_min_epu64(acc[s], d)) break;
    default: AVX512_LOOP(16, acc[s] = _mm512_min_epu64(acc[s], d))
    }
    for (int s = 0; s < QB; s++)
        mn[s] = B == 4 ? (int32_t)_mm512_reduce_min_epu32(acc[s]) : (int32_t)_mm512_reduce_min_epu64(acc[s]);
    if (i < cn) {
        int32_t tail[QB];
        generic_min(rows + i * B, cn - i, B, qs, tail);
        for (int s = 0; s < QB; s++) mn[s] = tail[s] < mn[s] ? tail[s] : mn[s];
    }
}

AVX512 static void avx512_hits(const uint8_t *rows, int64_t cn, int B, const uint8_t *q, int32_t limit, uint64_t *bits) {
    memset(bits, 0, CHMAX / 8);
    __m512i qv = B == 4 ? _mm512_set1_epi32((int)load32(q))
               : B == 8 ? _mm512_set1_epi64((long long)load64(q))
                        : _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)q));
    const __m512i lim = _mm512_set1_epi64(limit), lim32 = _mm512_set1_epi32(limit);
    const int per = 64 / B;
    int64_t i = 0;
    for (; i + per <= cn; i += per) {
        __m512i x = _mm512_xor_si512(_mm512_loadu_si512((const void *)(rows + i * B)), qv);
        uint64_t near;
        if (B == 4) near = _mm512_cmple_epu32_mask(_mm512_popcnt_epi32(x), lim32);
        else {
            __m512i d = _mm512_popcnt_epi64(x);
            if (B == 16) d = _mm512_add_epi64(d, _mm512_shuffle_epi32(d, _MM_PERM_BADC));
            unsigned m = _mm512_cmple_epu64_mask(d, lim);
            near = B == 8 ? m : (m & 1) | ((m >> 1) & 2) | ((m >> 2) & 4) | ((m >> 3) & 8);
        }
        bits[i >> 6] |= near << (i & 63);
    }
    for (; i < cn; i++) bits[i >> 6] |= (uint64_t)(dist_any(rows + i * B, q, B) <= limit) << (i & 63);
}

AVX512 static int64_t avx512_sum(const uint8_t *rows, int64_t cn, int B, const uint8_t *qs) {
    __m512i acc[QB];
    for (int s = 0; s < QB; s++) acc[s] = _mm512_setzero_si512();
    int64_t i = 0;
    switch (B) {
    case 4: AVX512_LOOP(4, acc[s] = _mm512_add_epi32(acc[s], d)) break;
    case 8: AVX512_LOOP(8, acc[s] = _mm512_add_epi64(acc[s], d)) break;
    default: AVX512_LOOP(16, acc[s] = _mm512_add_epi64(acc[s], d))
    }
    int64_t total = 0;
    for (int s = 0; s < QB; s++)
        total += B == 4 ? (int64_t)_mm512_reduce_add_epi32(acc[s]) : (int64_t)_mm512_reduce_add_epi64(acc[s]);
    if (i < cn) total += generic_sum(rows + i * B, cn - i, B, qs);
    return total;
}

/* ------------------------------------------------------------------ dispatch */
typedef void (*min_fn)(const uint8_t *, int64_t, int, const uint8_t *, int32_t *);
typedef int64_t (*sum_fn)(const uint8_t *, int64_t, int, const uint8_t *);
typedef void (*hits_fn)(const uint8_t *, int64_t, int, const uint8_t *, int32_t, uint64_t *);

/* Bit p set: path p runs on this CPU. */
int kernel_paths(void) {
    __builtin_cpu_init();
    int m = 1 << PATH_GENERIC;
    if (__builtin_cpu_supports("avx2")) m |= 1 << PATH_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq")) m |= 1 << PATH_AVX512;
    return m;
}

/* The path that will run for B-byte codes: the SIMD paths cover B = 4, 8, 16 (32/64/128 bits). */
int kernel_resolve(int path, int B) {
    int have = kernel_paths();
    if (path == PATH_AUTO) path = (have & (1 << PATH_AVX512)) ? PATH_AVX512 : (have & (1 << PATH_AVX2)) ? PATH_AVX2 : PATH_GENERIC;
    if (!(have & (1 << path))) return -1;
    if (B != 4 && B != 8 && B != 16) path = PATH_GENERIC;
    return path;
}

static min_fn pick_min(int path) { return path == PATH_AVX512 ? avx512_min : path == PATH_AVX2 ? avx2_min : generic_min; }
static sum_fn pick_sum(int path) { return path == PATH_AVX512 ? avx512_sum : path == PATH_AVX2 ? avx2_sum : generic_sum; }
static hits_fn pick_hits(int path) { return path == PATH_AVX512 ? avx512_hits : path == PATH_AVX2 ? avx2_hits : generic_hits; }

/* ------------------------------------------------------------------ ids */
typedef struct {
    const void *ids;   /* int32 or int64 per row, or NULL */
    int width;         /* 0 (id = start + row), 4 or 8 */
    int64_t start;
    int increasing;    /* ids grow with the row */
} ids_t;

static inline int64_t id_of(const ids_t *I, int64_t row) {
    if (I->width == 4) return ((const int32_t *)I->ids)[row];
    if (I->width == 8) return ((const int64_t *)I->ids)[row];
    return I->start + row;
}

/* ------------------------------------------------------------------ counting selection */
typedef struct {
    int32_t limit;     /* the largest distance that may still enter the top-k */
    int32_t len, cap;
    int32_t *d;
    int64_t *row;
    int32_t *hist;     /* K+1 counts of the distances in the buffer */
} cand_t;

/* Smallest t with at least k buffered distances <= t, and how many are < t; -1 if fewer than k. */
static int32_t kth(const cand_t *c, int K, int k, int32_t *below) {
    int32_t acc = 0;
    for (int t = 0; t <= K; t++) {
        if (acc + c->hist[t] >= k) { *below = acc; return t; }
        acc += c->hist[t];
    }
    return -1;
}

typedef struct { int32_t d; int64_t id, row; } item_t;
static int cmp_item(const void *a, const void *b) {
    const item_t *x = a, *y = b;
    if (x->d != y->d) return x->d < y->d ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

/* Keep only what can still be in the top-k: d < t, and the `need` ties at t with the smallest ids.
 * With increasing ids the buffer is in row order, so those are the first ties. */
static void compact(cand_t *c, int K, int k, const ids_t *I, item_t *scratch) {
    int32_t below, t = kth(c, K, k, &below);
    if (t < 0) return; /* fewer than k candidates: keep them all */
    int32_t need = k - below, kept = 0, ties = 0;
    if (I->increasing) {
        for (int32_t j = 0; j < c->len; j++) {
            int32_t d = c->d[j];
            if (d < t || (d == t && ties < need)) {
                ties += d == t;
                c->d[kept] = d; c->row[kept] = c->row[j]; kept++;
            }
        }
    } else {
        for (int32_t j = 0; j < c->len; j++)
            if (c->d[j] == t) { scratch[ties].d = t; scratch[ties].row = c->row[j]; scratch[ties].id = id_of(I, c->row[j]); ties++; }
        if (ties > need) qsort(scratch, (size_t)ties, sizeof(item_t), cmp_item);
        for (int32_t j = 0; j < c->len; j++)
            if (c->d[j] < t) { c->d[kept] = c->d[j]; c->row[kept] = c->row[j]; kept++; }
        for (int32_t j = 0; j < need; j++) { c->d[kept] = t; c->row[kept] = scratch[j].row; kept++; }
    }
    c->len = kept;
    for (int j = t + 1; j <= K; j++) c->hist[j] = 0;
    c->hist[t] = need;
}

/* After a change of the buffer: the k-th distance so far bounds what may still enter. A later row
 * tied with it enters only if it can have a smaller id, which increasing ids rule out. */
static void tighten(cand_t *c, int K, int k, const ids_t *I) {
    int32_t below, t = kth(c, K, k, &below);
    if (t >= 0) c->limit = I->increasing ? t - 1 : t;
}

/* Some of rows [c0, c0+cn) are within this query's limit: find them (SIMD) and collect them with
 * their exact distances (the same scalar code on every path). */
static void collect(cand_t *c, const uint8_t *db, int B, int K, int k, const ids_t *I, const uint8_t *q,
                    int64_t c0, int64_t cn, hits_fn hits, item_t *scratch) {
    uint64_t bits[CHMAX / 64];
    if (c->len + cn > c->cap) compact(c, K, k, I, scratch);
    hits(db + c0 * B, cn, B, q, c->limit, bits);
    for (int w = 0; w < CHMAX / 64; w++)
        for (uint64_t m = bits[w]; m; m &= m - 1) {
            int64_t i = w * 64 + __builtin_ctzll(m);
            int32_t d = dist_any(db + (c0 + i) * B, q, B);
            c->d[c->len] = d; c->row[c->len] = c0 + i; c->len++;
            c->hist[d]++;
        }
    tighten(c, K, k, I);
}

/* ------------------------------------------------------------------ top-k */
typedef struct { int64_t block, r0, r1; } work_t;

/* top-k by (distance, id): out_d [nq*k] int32, out_id [nq*k] int64. Requires 1 <= k <= n.
 * Returns the path that ran (1 generic, 2 avx2, 3 avx512), or -1 if `path` is not on this CPU. */
int hamming_topk(const uint8_t *db, int64_t n, int B, const void *ids, int id_width, int64_t id_start,
                 int ids_increasing, const uint8_t *q, int64_t nq, int k, int32_t *out_d, int64_t *out_id,
                 int path) {
    path = kernel_resolve(path, B);
    if (path < 0) return -1;
    min_fn chunk_min = pick_min(path);
    hits_fn hits = pick_hits(path);
    const int K = 8 * B;
    const int64_t CH = chunk_rows(B);
    ids_t I = {ids, id_width, id_start, id_width == 0 || ids_increasing};
    int nth = 1;
#ifdef _OPENMP
    nth = omp_get_max_threads();
#endif
    const int64_t tile = ((TILE_BYTES / B) / CH > 0 ? (TILE_BYTES / B) / CH : 1) * CH;
    for (int64_t b0 = 0; b0 < nq; b0 += QUERY_BATCH) {
        int64_t bq = nq - b0 < QUERY_BATCH ? nq - b0 : QUERY_BATCH;
        int64_t nb = (bq + QB - 1) / QB;
        /* Few blocks: split the rows too, so that every thread has work. */
        int64_t parts = nb >= nth ? 1 : (nth + nb - 1) / nb;
        if (parts > 1 && n / parts < 4 * CH) parts = n / (4 * CH) > 1 ? n / (4 * CH) : 1;
        int64_t nw = nb * parts;
        int32_t cap = 2 * k + CHMAX;
        cand_t *cands = calloc((size_t)(bq * parts), sizeof(cand_t));
        int32_t *dpool = malloc(sizeof(int32_t) * (size_t)cap * bq * parts);
        int64_t *rpool = malloc(sizeof(int64_t) * (size_t)cap * bq * parts);
        int32_t *hpool = calloc((size_t)(K + 1) * bq * parts, sizeof(int32_t));
        for (int64_t j = 0; j < bq * parts; j++) {
            cands[j].limit = K; cands[j].cap = cap;
            cands[j].d = dpool + j * cap; cands[j].row = rpool + j * cap; cands[j].hist = hpool + j * (K + 1);
        }
        #pragma omp parallel num_threads(nth)
        {
            int tid = 0, T = 1;
#ifdef _OPENMP
            tid = omp_get_thread_num(); T = omp_get_num_threads();
#endif
            int64_t w0 = nw * tid / T, w1 = nw * (tid + 1) / T;
            int32_t mn[QB];
            item_t *scratch = malloc(sizeof(item_t) * (size_t)cap);
            uint8_t *qpad = malloc((size_t)QB * B * (w1 > w0 ? w1 - w0 : 1));
            for (int64_t w = w0; w < w1; w++) { /* each block's queries, padded to QB with its last */
                int64_t blk = w / parts, qa = b0 + blk * QB, qn = b0 + bq - qa < QB ? b0 + bq - qa : QB;
                for (int s = 0; s < QB; s++) memcpy(qpad + ((w - w0) * QB + s) * B, q + (qa + (s < qn ? s : qn - 1)) * B, B);
            }
            for (int64_t t0 = 0; t0 < n; t0 += tile) {
                for (int64_t w = w0; w < w1; w++) {
                    int64_t blk = w / parts, part = w % parts;
                    int64_t r0 = n * part / parts, r1 = n * (part + 1) / parts;
                    int64_t a = r0 > t0 ? r0 : t0, e = r1 < t0 + tile ? r1 : t0 + tile;
                    if (a >= e) continue;
                    int64_t qa = blk * QB, qn = bq - qa < QB ? bq - qa : QB;
                    const uint8_t *qs = qpad + (w - w0) * QB * B;
                    cand_t *cs = cands + part * bq + qa;
                    for (int64_t c0 = a; c0 < e; c0 += CH) {
                        int64_t cn = e - c0 < CH ? e - c0 : CH;
                        chunk_min(db + c0 * B, cn, B, qs, mn);
                        for (int64_t s = 0; s < qn; s++)
                            if (mn[s] <= cs[s].limit)
                                collect(cs + s, db, B, K, k, &I, qs + s * B, c0, cn, hits, scratch);
                    }
                }
            }
            free(qpad);
            free(scratch);
        }
        /* Merge each query's parts and select its k best by (distance, id). */
        #pragma omp parallel for schedule(dynamic, 16) num_threads(nth)
        for (int64_t s = 0; s < bq; s++) {
            int64_t total = 0;
            for (int64_t p = 0; p < parts; p++) total += cands[p * bq + s].len;
            item_t *all = malloc(sizeof(item_t) * (size_t)(total > 0 ? total : 1));
            int64_t m = 0;
            for (int64_t p = 0; p < parts; p++) {
                cand_t *c = cands + p * bq + s;
                for (int32_t j = 0; j < c->len; j++) { all[m].d = c->d[j]; all[m].row = c->row[j]; all[m].id = id_of(&I, c->row[j]); m++; }
            }
            qsort(all, (size_t)m, sizeof(item_t), cmp_item);
            for (int i = 0; i < k; i++) { /* m >= k: every row was collected while fewer than k were */
                out_d[(b0 + s) * k + i] = all[i].d;
                out_id[(b0 + s) * k + i] = all[i].id;
            }
            free(all);
        }
        free(cands); free(dpool); free(rpool); free(hpool);
    }
    return path;
}

/* Distances of nq queries to all n rows: out [nq*n] uint16 (for radius search). */
void hamming_distances(const uint8_t *db, int64_t n, int B, const uint8_t *q, int64_t nq, uint16_t *out) {
    #pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < nq; s++)
        for (int64_t i = 0; i < n; i++) out[s * n + i] = (uint16_t)dist_any(db + i * B, q + s * B, B);
}

/* The machine's limit for this memory: xor + popcount of every (query, row) pair summed in
 * registers, with the same path, query blocking and tiling as hamming_topk and no top-k work. */
int64_t popcount_scan(const uint8_t *db, int64_t n, int B, const uint8_t *q, int64_t nq, int path) {
    path = kernel_resolve(path, B);
    if (path < 0) return -1;
    sum_fn chunk_sum = pick_sum(path);
    const int64_t CH = chunk_rows(B);
    int64_t nb = (nq + QB - 1) / QB, total = 0;
    const int64_t tile = ((TILE_BYTES / B) / CH > 0 ? (TILE_BYTES / B) / CH : 1) * CH;
    #pragma omp parallel reduction(+:total)
    {
        int tid = 0, T = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(); T = omp_get_num_threads();
#endif
        int64_t w0 = nb * tid / T, w1 = nb * (tid + 1) / T;
        uint8_t *qpad = malloc((size_t)QB * B * (w1 > w0 ? w1 - w0 : 1));
        for (int64_t w = w0; w < w1; w++) {
            int64_t qa = w * QB, qn = nq - qa < QB ? nq - qa : QB;
            for (int s = 0; s < QB; s++) memcpy(qpad + ((w - w0) * QB + s) * B, q + (qa + (s < qn ? s : qn - 1)) * B, B);
        }
        for (int64_t t0 = 0; t0 < n; t0 += tile) {
            int64_t e = n < t0 + tile ? n : t0 + tile;
            for (int64_t w = w0; w < w1; w++)
                for (int64_t c0 = t0; c0 < e; c0 += CH)
                    total += chunk_sum(db + c0 * B, e - c0 < CH ? e - c0 : CH, B, qpad + (w - w0) * QB * B);
        }
        free(qpad);
    }
    return total;
}

/* Exact Hamming top-k and radius scans over codes stored as 64-bit words.
 *
 * Built on first use by kernel.py (gcc -O3 -march=native -fopenmp) and loaded with ctypes.
 * Queries are processed in blocks of QB so that each database row, once loaded, is compared with
 * QB queries (the row stays in registers; the database streams from memory once per block).
 * Each query keeps a max-heap of its k best (distance, id) pairs; ties are broken by the smaller id.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define QB 8

typedef struct { int32_t d; int64_t id; } pair_t;

static inline int worse(pair_t a, pair_t b) { /* a ranks after b */
    return a.d > b.d || (a.d == b.d && a.id > b.id);
}

static void sift_down(pair_t *h, int k, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < k && worse(h[l], h[m])) m = l;
        if (r < k && worse(h[r], h[m])) m = r;
        if (m == i) return;
        pair_t t = h[i]; h[i] = h[m]; h[m] = t; i = m;
    }
}

static int cmp_pair(const void *a, const void *b) {
    const pair_t *x = a, *y = b;
    if (x->d != y->d) return x->d < y->d ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

static inline int32_t dist_words(const uint64_t *a, const uint64_t *b, int w) {
    int32_t d = 0;
    for (int j = 0; j < w; j++) d += __builtin_popcountll(a[j] ^ b[j]);
    return d;
}

#define CH 128

/* Distances of one query to `cn` rows into out[]; returns their minimum. Plain loops over rows
 * with no branches, so gcc vectorises the popcounts (AVX2 has no popcount instruction; it uses
 * the nibble-lookup method, faster than scalar popcnt). */
static inline int32_t chunk_distances(const uint64_t *rows, int64_t cn, int w, const uint64_t *qv,
                                      uint16_t *out) {
    if (w == 1) {
        uint64_t q0 = qv[0];
        for (int64_t i = 0; i < cn; i++) out[i] = (uint16_t)__builtin_popcountll(rows[i] ^ q0);
    } else if (w == 2) {
        uint64_t q0 = qv[0], q1 = qv[1];
        for (int64_t i = 0; i < cn; i++)
            out[i] = (uint16_t)(__builtin_popcountll(rows[2 * i] ^ q0) + __builtin_popcountll(rows[2 * i + 1] ^ q1));
    } else {
        for (int64_t i = 0; i < cn; i++) out[i] = (uint16_t)dist_words(rows + i * w, qv, w);
    }
    uint16_t mn = 0xFFFF;
    for (int64_t i = 0; i < cn; i++) mn = out[i] < mn ? out[i] : mn;
    return mn;
}

/* Minimum distance of one query to `cn` rows, nothing stored: as cheap as the plain scan. */
static inline int32_t chunk_min(const uint64_t *rows, int64_t cn, int w, const uint64_t *qv) {
    int32_t mn = 1 << 30;
    if (w == 1) {
        uint64_t q0 = qv[0];
        for (int64_t i = 0; i < cn; i++) {
            int32_t d = __builtin_popcountll(rows[i] ^ q0);
            mn = d < mn ? d : mn;
        }
    } else if (w == 2) {
        uint64_t q0 = qv[0], q1 = qv[1];
        for (int64_t i = 0; i < cn; i++) {
            int32_t d = __builtin_popcountll(rows[2 * i] ^ q0) + __builtin_popcountll(rows[2 * i + 1] ^ q1);
            mn = d < mn ? d : mn;
        }
    } else {
        for (int64_t i = 0; i < cn; i++) {
            int32_t d = dist_words(rows + i * w, qv, w);
            mn = d < mn ? d : mn;
        }
    }
    return mn;
}

/* top-k by (distance, id). out_d: [nq*k] int32, out_id: [nq*k] int64. Requires 1 <= k <= n.
 * Rows are scanned in chunks of CH that stay in L1 while the QB queries of a block pass over them;
 * a chunk whose minimum distance cannot enter a query's heap is skipped without a per-row test. */
void hamming_topk(const uint64_t *db, const int64_t *ids, int64_t n, int w,
                  const uint64_t *q, int64_t nq, int k, int32_t *out_d, int64_t *out_id, int ids_increasing) {
    /* When ids increase with the row, a later row tied with the heap's worst has a larger id and
     * can never enter: the filter may then be strict (d < worst), which halves the false alarms. */
    const int64_t slack = ids_increasing ? 0 : 1;
    int64_t nblocks = (nq + QB - 1) / QB;
    #pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t q0 = b * QB, qn = nq - q0 < QB ? nq - q0 : QB;
        pair_t *heaps = malloc(sizeof(pair_t) * (size_t)k * QB);
        uint16_t buf[CH];
        for (int64_t s = 0; s < qn; s++) { /* seed each heap with the first k rows */
            pair_t *h = heaps + s * k;
            for (int64_t i = 0; i < k; i++) {
                h[i].d = dist_words(db + i * w, q + (q0 + s) * w, w);
                h[i].id = ids[i];
            }
            for (int i = k / 2 - 1; i >= 0; i--) sift_down(h, k, i);
        }
        uint64_t qs[QB], qt[QB];  /* first (and second) word of each query of the block */
        for (int64_t s = 0; s < QB; s++) {
            qs[s] = (w <= 2 && s < qn) ? q[(q0 + s) * w] : 0;
            qt[s] = (w == 2 && s < qn) ? q[(q0 + s) * w + 1] : 0;
        }
        for (int64_t c0 = k; c0 < n; c0 += CH) {
            int64_t cn = n - c0 < CH ? n - c0 : CH;
            const uint64_t *rows = db + c0 * w;
            /* Count, per query, the rows that could enter its heap (distance <= current worst).
             * All 64-bit lanes (popcount, compare, add) so gcc vectorises it with AVX2, which has no
             * 64-bit min; each row is loaded once for the QB queries, as in the plain scan. */
            /* flag[s] goes negative iff some d <= worst[s]: d - (worst + 1) < 0. Three scalar ops
             * per pair (popcnt, sub, or), against two (popcnt, add) for the plain scan. */
            int64_t thr1[QB], flag[QB];
            for (int64_t s = 0; s < QB; s++) {
                thr1[s] = s < qn ? (int64_t)heaps[s * k].d + slack : 0;
                flag[s] = 0;
            }
            if (w == 1) {
                for (int64_t i = 0; i < cn; i++) {
                    uint64_t row = rows[i];
                    for (int64_t s = 0; s < QB; s++) flag[s] |= (int64_t)__builtin_popcountll(row ^ qs[s]) - thr1[s];
                }
            } else if (w == 2) {
                for (int64_t i = 0; i < cn; i++) {
                    uint64_t r0 = rows[2 * i], r1 = rows[2 * i + 1];
                    for (int64_t s = 0; s < QB; s++)
                        flag[s] |= (int64_t)(__builtin_popcountll(r0 ^ qs[s]) + __builtin_popcountll(r1 ^ qt[s])) - thr1[s];
                }
            } else {
                for (int64_t s = 0; s < qn; s++) flag[s] = (int64_t)chunk_min(rows, cn, w, q + (q0 + s) * w) - thr1[s];
            }
            for (int64_t s = 0; s < qn; s++) {
                pair_t *h = heaps + s * k;
                if (flag[s] >= 0) continue;  /* the usual case once the heap is warm */
                chunk_distances(rows, cn, w, q + (q0 + s) * w, buf);
                for (int64_t i = 0; i < cn; i++) {
                    if (buf[i] <= h[0].d) {
                        pair_t c = {buf[i], ids[c0 + i]};
                        if (worse(h[0], c)) { h[0] = c; sift_down(h, k, 0); }
                    }
                }
            }
        }
        for (int64_t s = 0; s < qn; s++) {
            pair_t *h = heaps + s * k;
            qsort(h, (size_t)k, sizeof(pair_t), cmp_pair);
            for (int i = 0; i < k; i++) {
                out_d[(q0 + s) * k + i] = h[i].d;
                out_id[(q0 + s) * k + i] = h[i].id;
            }
        }
        free(heaps);
    }
}

/* Distances of nq queries to all n rows: out [nq*n] uint16 (for radius search). */
void hamming_distances(const uint64_t *db, int64_t n, int w, const uint64_t *q, int64_t nq, uint16_t *out) {
    #pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < nq; s++) {
        const uint64_t *qs = q + s * w;
        uint16_t *o = out + s * n;
        for (int64_t i = 0; i < n; i++) o[i] = (uint16_t)dist_words(db + i * w, qs, w);
    }
}

/* The machine's limit for this memory: xor + popcount of every (query, row) pair accumulated in
 * registers, with the same query blocking as hamming_topk and no top-k work at all. */
int64_t popcount_scan(const uint64_t *db, int64_t n, int w, const uint64_t *q, int64_t nq) {
    int64_t total = 0;
    int64_t nblocks = (nq + QB - 1) / QB;
    #pragma omp parallel for schedule(dynamic, 1) reduction(+:total)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t q0 = b * QB, qn = nq - q0 < QB ? nq - q0 : QB;
        int64_t acc[QB] = {0};
        if (w == 1) {
            uint64_t qs[QB];
            for (int64_t s = 0; s < QB; s++) qs[s] = s < qn ? q[q0 + s] : 0;
            for (int64_t i = 0; i < n; i++) {
                uint64_t row = db[i];
                for (int64_t s = 0; s < QB; s++) acc[s] += __builtin_popcountll(row ^ qs[s]);
            }
        } else if (w == 2) {
            uint64_t qa[QB], qb[QB];
            for (int64_t s = 0; s < QB; s++) { qa[s] = s < qn ? q[(q0 + s) * 2] : 0; qb[s] = s < qn ? q[(q0 + s) * 2 + 1] : 0; }
            for (int64_t i = 0; i < n; i++) {
                uint64_t r0 = db[2 * i], r1 = db[2 * i + 1];
                for (int64_t s = 0; s < QB; s++) acc[s] += __builtin_popcountll(r0 ^ qa[s]) + __builtin_popcountll(r1 ^ qb[s]);
            }
        } else {
            for (int64_t i = 0; i < n; i++) {
                const uint64_t *row = db + i * w;
                for (int64_t s = 0; s < qn; s++) acc[s] += dist_words(row, q + (q0 + s) * w, w);
            }
        }
        for (int64_t s = 0; s < qn; s++) total += acc[s];
    }
    return total;
}

/* The console's multi-LoRA linear for vLLM on a CPU (console_vllm/punica.py builds and loads it with ctypes).
 *
 * For every row t of a batch with an adapter (slot[t] >= 0) and every slice of the layer:
 *     y[t, offset : offset + width] += B[slot] @ (scale * A[slot] @ x[t])
 * in float32, in one call a layer: no per-row copy of the adapter weights (vLLM's CPU ops copy them for every
 * row and every slice) and no per-product dispatch. Rows without an adapter (-1) are left as they are. Four rows
 * of A (and of B) are taken at a time, four independent sums the compiler vectorises side by side (one sum at a
 * time waited on its own additions: 1.5x slower in float32).
 * dtype 0: float32 tensors, 1: bfloat16 tensors (x, A, B and y share it). A is slots x 1 x rank x in and B is
 * slots x 1 x rows x rank, both contiguous; x and y rows have their own strides (elements). Rows are split
 * between the process's OpenMP threads (see kernel.py). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static inline float bf16_to_float(uint16_t v) {
    uint32_t u = ((uint32_t)v) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t float_to_bf16(float f) { /* round to nearest even, as torch does */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float load(const void *p, int64_t i, int bf16) {
    return bf16 ? bf16_to_float(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline void add(void *y, int64_t i, float v, int bf16) {
    if (bf16) {
        uint16_t *yp = (uint16_t *)y + i;
        *yp = float_to_bf16(bf16_to_float(*yp) + v);
    } else {
        ((float *)y)[i] += v;
    }
}

/* One row t of the batch, every slice: xf (in_dim floats) and down (the largest rank) are the caller's. */
static void apply_row(int bf16, int64_t t, int64_t k, const void *x, int64_t x_stride, int64_t in_dim, void *y,
                      int64_t y_stride, int64_t slices, const void *const *a, const void *const *b,
                      const int64_t *rank, const int64_t *b_rows, const int64_t *width, const int64_t *offset,
                      float scale, float *xf, float *down) {
    for (int64_t i = 0; i < in_dim; i++) xf[i] = load(x, t * x_stride + i, bf16);
    for (int64_t s = 0; s < slices; s++) {
        int64_t r = rank[s];
        int64_t a_base = k * r * in_dim;
        /* down = scale * A[k] @ x: four rows of A at a time, four independent sums */
        int64_t j = 0;
        for (; j + 4 <= r; j += 4) {
            float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
            int64_t row = a_base + j * in_dim;
            if (bf16) {
                const uint16_t *a0 = (const uint16_t *)a[s] + row, *a1 = a0 + in_dim, *a2 = a1 + in_dim,
                               *a3 = a2 + in_dim;
                for (int64_t i = 0; i < in_dim; i++) {
                    float xv = xf[i];
                    s0 += bf16_to_float(a0[i]) * xv;
                    s1 += bf16_to_float(a1[i]) * xv;
                    s2 += bf16_to_float(a2[i]) * xv;
                    s3 += bf16_to_float(a3[i]) * xv;
                }
            } else {
                const float *a0 = (const float *)a[s] + row, *a1 = a0 + in_dim, *a2 = a1 + in_dim,
                            *a3 = a2 + in_dim;
                for (int64_t i = 0; i < in_dim; i++) {
                    float xv = xf[i];
                    s0 += a0[i] * xv;
                    s1 += a1[i] * xv;
                    s2 += a2[i] * xv;
                    s3 += a3[i] * xv;
                }
            }
            down[j] = s0 * scale;
            down[j + 1] = s1 * scale;
            down[j + 2] = s2 * scale;
            down[j + 3] = s3 * scale;
        }
        for (; j < r; j++) {
            float acc = 0.f;
            int64_t row = a_base + j * in_dim;
            for (int64_t i = 0; i < in_dim; i++) acc += load(a[s], row + i, bf16) * xf[i];
            down[j] = acc * scale;
        }
        /* y[t, offset + o] += B[k][o] . down, o by o */
        int64_t b_base = k * b_rows[s] * r;
        int64_t yo = t * y_stride + offset[s];
        int64_t o = 0;
        for (; o + 4 <= width[s]; o += 4) {
            float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
            if (bf16) {
                const uint16_t *b0 = (const uint16_t *)b[s] + b_base + o * r, *b1 = b0 + r, *b2 = b1 + r,
                               *b3 = b2 + r;
                for (int64_t q = 0; q < r; q++) {
                    float dv = down[q];
                    s0 += bf16_to_float(b0[q]) * dv;
                    s1 += bf16_to_float(b1[q]) * dv;
                    s2 += bf16_to_float(b2[q]) * dv;
                    s3 += bf16_to_float(b3[q]) * dv;
                }
            } else {
                const float *b0 = (const float *)b[s] + b_base + o * r, *b1 = b0 + r, *b2 = b1 + r, *b3 = b2 + r;
                for (int64_t q = 0; q < r; q++) {
                    float dv = down[q];
                    s0 += b0[q] * dv;
                    s1 += b1[q] * dv;
                    s2 += b2[q] * dv;
                    s3 += b3[q] * dv;
                }
            }
            add(y, yo + o, s0, bf16);
            add(y, yo + o + 1, s1, bf16);
            add(y, yo + o + 2, s2, bf16);
            add(y, yo + o + 3, s3, bf16);
        }
        for (; o < width[s]; o++) {
            float acc = 0.f;
            for (int64_t q = 0; q < r; q++) acc += load(b[s], b_base + o * r + q, bf16) * down[q];
            add(y, yo + o, acc, bf16);
        }
    }
}

int console_lora_apply(int bf16, int64_t rows, const int64_t *slot, const void *x, int64_t x_stride, int64_t in_dim,
                       void *y, int64_t y_stride, int64_t slices, const void *const *a, const void *const *b,
                       const int64_t *rank, const int64_t *b_rows, const int64_t *width, const int64_t *offset,
                       float scale) {
    int64_t max_rank = 0;
    for (int64_t s = 0; s < slices; s++)
        if (rank[s] > max_rank) max_rank = rank[s];
    int64_t per_thread = in_dim + max_rank;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    /* the rows with an adapter, then each thread's x row in float32 and its down-projection */
    int64_t *todo = malloc(sizeof(int64_t) * (size_t)rows + sizeof(float) * (size_t)(per_thread * threads)), n = 0;
    if (!todo) return -1;
    float *buffers = (float *)(todo + rows);
    for (int64_t t = 0; t < rows; t++)
        if (slot[t] >= 0) todo[n++] = t;
    /* split between the process's OpenMP threads (PyTorch's own: the same runtime, already running), a row a
     * thread */
#pragma omp parallel for schedule(static) if (n > 1)
    for (int64_t i = 0; i < n; i++) {
        int me = 0;
#ifdef _OPENMP
        me = omp_get_thread_num();
#endif
        float *xf = buffers + (int64_t)me * per_thread;
        apply_row(bf16, todo[i], slot[todo[i]], x, x_stride, in_dim, y, y_stride, slices, a, b, rank, b_rows, width,
                  offset, scale, xf, xf + in_dim);
    }
    free(todo);
    return 0;
}

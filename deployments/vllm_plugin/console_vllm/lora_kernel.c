/* The console's multi-LoRA linear for vLLM on a CPU (console_vllm/punica.py builds and loads it with ctypes).
 *
 * For every row t of a batch with an adapter (slot[t] >= 0) and every slice of the layer:
 *     y[t, offset : offset + width] += B[slot] @ (scale * A[slot] @ x[t])
 * in float32, in one call a layer: no per-row copy of the adapter weights (vLLM's CPU ops copy them for every
 * row and every slice) and no per-product dispatch. Rows without an adapter (-1) are left as they are.
 * dtype 0: float32 tensors, 1: bfloat16 tensors (x, A, B and y share it). A is slots x 1 x rank x in and B is
 * slots x 1 x rows x rank, both contiguous; x and y rows have their own strides (elements). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int console_lora_apply(int bf16, int64_t rows, const int64_t *slot, const void *x, int64_t x_stride, int64_t in_dim,
                       void *y, int64_t y_stride, int64_t slices, const void *const *a, const void *const *b,
                       const int64_t *rank, const int64_t *b_rows, const int64_t *width, const int64_t *offset,
                       float scale) {
    int64_t max_rank = 0;
    for (int64_t s = 0; s < slices; s++)
        if (rank[s] > max_rank) max_rank = rank[s];
    float *xf = malloc(sizeof(float) * (size_t)(in_dim + max_rank));
    if (!xf) return -1;
    float *down = xf + in_dim;
    for (int64_t t = 0; t < rows; t++) {
        int64_t k = slot[t];
        if (k < 0) continue;
        for (int64_t i = 0; i < in_dim; i++) xf[i] = load(x, t * x_stride + i, bf16);
        for (int64_t s = 0; s < slices; s++) {
            int64_t r = rank[s];
            int64_t a_base = k * r * in_dim;
            for (int64_t j = 0; j < r; j++) {
                float acc = 0.f;
                int64_t row = a_base + j * in_dim;
                if (bf16) {
                    const uint16_t *ap = (const uint16_t *)a[s] + row;
                    for (int64_t i = 0; i < in_dim; i++) acc += bf16_to_float(ap[i]) * xf[i];
                } else {
                    const float *ap = (const float *)a[s] + row;
                    for (int64_t i = 0; i < in_dim; i++) acc += ap[i] * xf[i];
                }
                down[j] = acc * scale;
            }
            int64_t b_base = k * b_rows[s] * r;
            int64_t yo = t * y_stride + offset[s];
            for (int64_t o = 0; o < width[s]; o++) {
                float acc = 0.f;
                if (bf16) {
                    const uint16_t *bp = (const uint16_t *)b[s] + b_base + o * r;
                    for (int64_t j = 0; j < r; j++) acc += bf16_to_float(bp[j]) * down[j];
                    uint16_t *yp = (uint16_t *)y + yo + o;
                    *yp = float_to_bf16(bf16_to_float(*yp) + acc);
                } else {
                    const float *bp = (const float *)b[s] + b_base + o * r;
                    for (int64_t j = 0; j < r; j++) acc += bp[j] * down[j];
                    ((float *)y)[yo + o] += acc;
                }
            }
        }
    }
    free(xf);
    return 0;
}

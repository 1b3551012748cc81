/* The console's multi-LoRA linear for vLLM on a CPU (console_vllm/punica.py builds and loads it with ctypes).
 *
 * For every row t of a batch with an adapter (slot[t] >= 0) and every slice of the layer:
 *     y[t, offset : offset + width] += B[slot] @ (scale * A[slot] @ x[t])
 * in float32, in one call a layer: no per-row copy of the adapter weights (vLLM's CPU ops copy them for every
 * row and every slice) and no per-product dispatch. Rows without an adapter (-1) are left as they are. Four rows
 * of A (and of B) are taken at a time, four independent sums the compiler vectorises side by side (one sum at a
 * time waited on its own additions: 1.5x slower in float32).
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
            if (bf16) {
                for (; o + 4 <= width[s]; o += 4) {
                    const uint16_t *b0 = (const uint16_t *)b[s] + b_base + o * r, *b1 = b0 + r, *b2 = b1 + r,
                                   *b3 = b2 + r;
                    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
                    for (int64_t q = 0; q < r; q++) {
                        float dv = down[q];
                        s0 += bf16_to_float(b0[q]) * dv;
                        s1 += bf16_to_float(b1[q]) * dv;
                        s2 += bf16_to_float(b2[q]) * dv;
                        s3 += bf16_to_float(b3[q]) * dv;
                    }
                    uint16_t *yp = (uint16_t *)y + yo + o;
                    yp[0] = float_to_bf16(bf16_to_float(yp[0]) + s0);
                    yp[1] = float_to_bf16(bf16_to_float(yp[1]) + s1);
                    yp[2] = float_to_bf16(bf16_to_float(yp[2]) + s2);
                    yp[3] = float_to_bf16(bf16_to_float(yp[3]) + s3);
                }
            } else {
                for (; o + 4 <= width[s]; o += 4) {
                    const float *b0 = (const float *)b[s] + b_base + o * r, *b1 = b0 + r, *b2 = b1 + r, *b3 = b2 + r;
                    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
                    for (int64_t q = 0; q < r; q++) {
                        float dv = down[q];
                        s0 += b0[q] * dv;
                        s1 += b1[q] * dv;
                        s2 += b2[q] * dv;
                        s3 += b3[q] * dv;
                    }
                    float *yp = (float *)y + yo + o;
                    yp[0] += s0;
                    yp[1] += s1;
                    yp[2] += s2;
                    yp[3] += s3;
                }
            }
            for (; o < width[s]; o++) {
                float acc = 0.f;
                if (bf16) {
                    const uint16_t *bp = (const uint16_t *)b[s] + b_base + o * r;
                    for (int64_t q = 0; q < r; q++) acc += bf16_to_float(bp[q]) * down[q];
                    uint16_t *yp = (uint16_t *)y + yo + o;
                    *yp = float_to_bf16(bf16_to_float(*yp) + acc);
                } else {
                    const float *bp = (const float *)b[s] + b_base + o * r;
                    for (int64_t q = 0; q < r; q++) acc += bp[q] * down[q];
                    ((float *)y)[yo + o] += acc;
                }
            }
        }
    }
    free(xf);
    return 0;
}

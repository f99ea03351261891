/* Training-mode BatchNorm of channels-last rows fused with a clip: y = min(max(bn(x), lo), hi).
 *
 * MobileNetV2's BN -> ReLU6 (lo 0, hi 6) in one forward pass and one backward pass where
 * oneDNN's BN (it fuses ReLU only) then Paddle's ReLU6 take two each (backend/fused.py says
 * why and what it is worth). x is [rows, C] float32, C a multiple of 16 (the caller checks).
 *
 * Forward: per-channel mean and biased variance over the rows (sums in double, shifted by the
 * first row against cancellation), then y. Backward: the clip's mask is recomputed from x
 * (lo < x * a + b < hi, the same expression as the forward's), so nothing is stored but the
 * batch statistics; dz = dy * mask, dshift = sum dz, dscale = sum dz * xhat, and
 * dx = a * (dz - dshift / rows - xhat * dscale / rows), a = scale / sqrt(var + eps).
 *
 * Threads: OpenMP, linked against the wheel's libiomp5 (the runtime its oneDNN uses), so the
 * thread count is Paddle's (paddle.base.core.set_num_threads) and no second pool spins.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

typedef float vf __attribute__((vector_size(64)));
typedef int vi __attribute__((vector_size(64)));
#define W 16     /* floats per vector */
#define TILE 256 /* rows a tile: its columns are summed in registers, then added in double */

static inline vf ld(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf splat(float s) { return (vf){0} + s; }
static inline vf vsel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
static inline vi inside(vf x, vf a, vf b, vf lo, vf hi) { vf v = x * a + b; return (v > lo) & (v < hi); }

/* out[0..C) = sum of u, out[C..2C) = sum of u * w over the rows, where
 * kind 0: u = w = x - x[0] (the shifted moments); kind 1: u = dy * mask, w = x - mean. */
static int channel_sums(int kind, const float *x, const float *dy, const float *a, const float *b,
                         const float *mean, long rows, long C, float lo, float hi, double *out)
{
    int nt = omp_get_max_threads();
    double *part = calloc((size_t)nt * 2 * C, sizeof(double));
    if (!part) return -1;
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        long r0 = rows * t / n, r1 = rows * (t + 1) / n;
        double *s = part + (size_t)t * 2 * C;
        for (long tr = r0; tr < r1; tr += TILE) {
            long te = tr + TILE < r1 ? tr + TILE : r1;
            for (long c = 0; c < C; c += W) {
                vf s1 = {0}, s2 = {0};
                vf A = kind ? ld(a + c) : splat(0), B = kind ? ld(b + c) : splat(0);
                vf M = kind ? ld(mean + c) : ld(x + c), LO = splat(lo), HI = splat(hi);
                for (long r = tr; r < te; r++) {
                    vf xv = ld(x + r * C + c), w = xv - M;
                    vf u = kind ? vsel(inside(xv, A, B, LO, HI), ld(dy + r * C + c), splat(0)) : w;
                    s1 += u;
                    s2 += u * w;
                }
                for (int k = 0; k < W; k++) {
                    s[c + k] += s1[k];
                    s[C + c + k] += s2[k];
                }
            }
        }
    }
    memset(out, 0, 2 * C * sizeof(double));
    for (int t = 0; t < nt; t++)
        for (long c = 0; c < 2 * C; c++) out[c] += part[(size_t)t * 2 * C + c];
    free(part);
    return 0;
}

/* Returns 0, or -1 when out of memory (nothing written). */
int bn_clip_forward(const float *x, float *y, const float *scale, const float *shift, float *mean, float *var,
                    long rows, long C, float eps, float lo, float hi)
{
    double *sums = malloc(2 * C * sizeof(double));
    float *a = malloc(2 * C * sizeof(float)), *b = a ? a + C : 0;
    if (!sums || !a || channel_sums(0, x, 0, 0, 0, 0, rows, C, lo, hi, sums)) { free(sums); free(a); return -1; }
    for (long c = 0; c < C; c++) {
        double m = sums[c] / rows, v = sums[C + c] / rows - m * m;
        mean[c] = (float)(m + x[c]);
        var[c] = (float)(v > 0 ? v : 0);
        a[c] = scale[c] / sqrtf(var[c] + eps);
        b[c] = shift[c] - mean[c] * a[c];
    }
    free(sums);
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        vf LO = splat(lo), HI = splat(hi);
        for (long c = 0; c < C; c += W) {
            vf v = ld(x + r * C + c) * ld(a + c) + ld(b + c);
            v = vsel(v < LO, LO, v);
            st(y + r * C + c, vsel(v > HI, HI, v));
        }
    }
    free(a);
    return 0;
}

int bn_clip_backward(const float *x, const float *dy, float *dx, const float *scale, const float *shift,
                     const float *mean, const float *var, float *dscale, float *dshift,
                     long rows, long C, float eps, float lo, float hi)
{
    double *sums = malloc(2 * C * sizeof(double));
    float *a = malloc(4 * C * sizeof(float)), *b = a ? a + C : 0, *q = a ? a + 2 * C : 0, *k = a ? a + 3 * C : 0;
    if (!sums || !a) { free(sums); free(a); return -1; }
    for (long c = 0; c < C; c++) {
        a[c] = scale[c] / sqrtf(var[c] + eps);
        b[c] = shift[c] - mean[c] * a[c];
    }
    if (channel_sums(1, x, dy, a, b, mean, rows, C, lo, hi, sums)) { free(sums); free(a); return -1; }
    for (long c = 0; c < C; c++) {
        double rstd = 1.0 / sqrt((double)var[c] + eps);
        dshift[c] = (float)sums[c];
        dscale[c] = (float)(sums[C + c] * rstd);
        q[c] = (float)(-a[c] * rstd * rstd * sums[C + c] / rows); /* dx = a dz + q (x - mean) + k */
        k[c] = (float)(-a[c] * sums[c] / rows);
    }
    free(sums);
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        vf LO = splat(lo), HI = splat(hi);
        for (long c = 0; c < C; c += W) {
            vf A = ld(a + c), xv = ld(x + r * C + c);
            vf dz = vsel(inside(xv, A, ld(b + c), LO, HI), ld(dy + r * C + c), splat(0));
            st(dx + r * C + c, A * dz + ld(q + c) * (xv - ld(mean + c)) + ld(k + c));
        }
    }
    free(a);
    return 0;
}

/* SimAM on channels-last maps, one kernel each way (models/attention/simam.py has the maths).
 *
 * x is [N, HW, C] float32, C a multiple of 16 (the caller checks). Per image and channel:
 *   mean = sum(x) / HW,  d = (x - mean)^2,  a = 1 / (4 sum(d) / n + 4 lambda),  n = max(HW - 1, 1)
 *   z = d a + 1/2,  s = sigmoid(z),  y = x s
 * The module computes the same on NCHW rows after two transposes and eight Paddle ops; here the
 * channels are the vector lanes, so an image's sums run down its rows in registers. The
 * forward keeps mean and a ([N, C]) for the backward, which recomputes s from x:
 *   g = dy x s (1 - s)  (the gradient at z),  S1 = sum(g (x - mean)),  S2 = sum(g d)
 *   dx = dy s + 2a (g (x - mean) - S1 / HW) - (8 a^2 / n) S2 (x - mean)
 * (the first bracket through d's own x and mean, the last through a's sum of d; the sum of
 * x - mean is zero, so the mean's share of that path vanishes). Sums in float, as the module's
 * GEMVs; exp(-z) by a degree-6 polynomial on the reduced argument (Cephes' expf: ~1 ulp), z >= 1/2.
 *
 * Threads: OpenMP over the images, linked against the wheel's libiomp5 (backend/fused.py).
 */
#include <stdlib.h>
#include <string.h>
#include <omp.h>

typedef float vf __attribute__((vector_size(64)));
typedef int vi __attribute__((vector_size(64)));
#define W 16 /* floats per vector */

static inline vf ld(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf splat(float s) { return (vf){0} + s; }
static inline vf vmin(vf a, vf b) { vi m = a < b; return (vf)((m & (vi)a) | (~m & (vi)b)); }

/* exp(-z) for z >= 0 (clamped at 87: below it the result is 0 to float precision anyway) */
static inline vf exp_neg(vf z) {
    z = vmin(z, splat(87.0f));
    vf t = -z * 1.44269504088896341f;                            /* -z / ln 2 <= 0 */
    vi k = __builtin_convertvector(t - 0.5f, vi);                /* round(t) for t <= 0 */
    vf kf = __builtin_convertvector(k, vf);
    vf r = -z - kf * 0.693359375f - kf * -2.12194440e-4f;        /* -z - k ln 2, |r| <= ln2 / 2 */
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vi bits = (k + 127) << 23;                                    /* 2^k, k >= -126: a normal float */
    vf scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* Returns 0, or -1 when out of memory (nothing written). */
int simam_forward(const float *x, float *y, float *mean, float *a, long N, long HW, long C, float lambda)
{
    const float n = HW > 1 ? (float)(HW - 1) : 1.0f;
    int nt = omp_get_max_threads();
    float *buf = malloc((size_t)nt * C * sizeof(float));
    if (!buf) return -1;
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (long b = 0; b < N; b++) {
        const float *xb = x + b * HW * C;
        float *yb = y + b * HW * C, *m = mean + b * C, *ab = a + b * C, *s = buf + (size_t)omp_get_thread_num() * C;
        memset(s, 0, C * sizeof(float));
        for (long r = 0; r < HW; r++)
            for (long c = 0; c < C; c += W) st(s + c, ld(s + c) + ld(xb + r * C + c));
        for (long c = 0; c < C; c++) { m[c] = s[c] / HW; s[c] = 0; }
        for (long r = 0; r < HW; r++)
            for (long c = 0; c < C; c += W) { vf t = ld(xb + r * C + c) - ld(m + c); st(s + c, ld(s + c) + t * t); }
        for (long c = 0; c < C; c++) ab[c] = 1.0f / (s[c] * (4.0f / n) + 4.0f * lambda);
        for (long r = 0; r < HW; r++)
            for (long c = 0; c < C; c += W) {
                vf xv = ld(xb + r * C + c), t = xv - ld(m + c);
                st(yb + r * C + c, xv / (1.0f + exp_neg(t * t * ld(ab + c) + 0.5f)));
            }
    }
    free(buf);
    return 0;
}

int simam_backward(const float *x, const float *dy, float *dx, const float *mean, const float *a,
                   long N, long HW, long C)
{
    const float n = HW > 1 ? (float)(HW - 1) : 1.0f;
    int nt = omp_get_max_threads();
    float *buf = malloc((size_t)nt * 4 * C * sizeof(float));
    if (!buf) return -1;
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (long b = 0; b < N; b++) {
        const float *xb = x + b * HW * C, *db = dy + b * HW * C, *m = mean + b * C, *ab = a + b * C;
        float *out = dx + b * HW * C, *s1 = buf + (size_t)omp_get_thread_num() * 4 * C;
        float *s2 = s1 + C, *k1 = s1 + 2 * C, *k2 = s1 + 3 * C;
        memset(s1, 0, 2 * C * sizeof(float));
        for (long r = 0; r < HW; r++)
            for (long c = 0; c < C; c += W) {
                vf xv = ld(xb + r * C + c), t = xv - ld(m + c), d = t * t;
                vf sg = 1.0f / (1.0f + exp_neg(d * ld(ab + c) + 0.5f));
                vf g = ld(db + r * C + c) * xv * sg * (1.0f - sg);
                st(s1 + c, ld(s1 + c) + g * t);
                st(s2 + c, ld(s2 + c) + g * d);
            }
        for (long c = 0; c < C; c++) {  /* dx = dy s + 2a g t + (k1 + k2 t) */
            k1[c] = -2.0f * ab[c] * s1[c] / HW;
            k2[c] = -8.0f * ab[c] * ab[c] / n * s2[c];
        }
        for (long r = 0; r < HW; r++)
            for (long c = 0; c < C; c += W) {
                vf xv = ld(xb + r * C + c), t = xv - ld(m + c), A = ld(ab + c), dyv = ld(db + r * C + c);
                vf sg = 1.0f / (1.0f + exp_neg(t * t * A + 0.5f));
                vf g = dyv * xv * sg * (1.0f - sg);
                st(out + r * C + c, dyv * sg + 2.0f * A * g * t + ld(k1 + c) + ld(k2 + c) * t);
            }
    }
    free(buf);
    return 0;
}

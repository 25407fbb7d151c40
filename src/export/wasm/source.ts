/**
 * The C source of the WebAssembly integer kernels (freestanding C99 + wasm_simd128.h, no libc),
 * compiled by `npm run build:wasm` (scripts/build-wasm.mjs: clang --target=wasm32 with SIMD128)
 * into binary.ts. One model-independent module: the engine (engine.ts) writes each op's tables
 * and a descriptor (abi.ts) into the module's memory and calls one exported kernel per op.
 *
 * Why not the C export's runtime as it is: it is specialized per model at generation time (tables
 * as const arrays) and scalar (one multiply-accumulate per weight, for a Cortex-M4); a browser has
 * no compiler, and 300 ResNet-20 images/s on one thread needs about 12 G multiply-accumulates per
 * second, i.e. SIMD. What is reused verbatim is the runtime's scalar part (runtime.ts: rounding
 * multiply-shift, activation codes, the input lookup, pooling, add, the scalar quantize): the
 * input, pool and add ops run that code, and activations with many thresholds take its binary
 * search. The new parts compute the same integers:
 *
 * - Convolution: the input goes to a zero-padded HWC int16 buffer, so a window row is kernel_w *
 *   channels contiguous values; the weights are int16 rows in the same (i, j, c) patch order,
 *   padded to a multiple of 8 with zero weights (the pad's inputs never count). A GEMM of weight
 *   rows by patches with i32x4.dot_i16x8_s, two output channels by four pixels per block, reads
 *   the window rows in place when they are whole vectors (dense convs with kernel_w * channels a
 *   multiple of 8: all of ResNet-20 but its stem); other convs (the stem's 3 channels, groups,
 *   depthwise) first copy each window into a patch row (im2col). Integer sums in any order are the
 *   same sums (and int32 wrap-around is associative, though the validated bounds keep every
 *   partial sum in range anyway).
 * - Epilogues per output channel row, four pixels per vector: the 64-bit rounding multiply-shift
 *   (i64x2 extended multiplies, shifts made logical by an offset), the ReLU floor, uniform
 *   rounding or thresholds as a count of compares in eight int16 lanes where the thresholds narrow
 *   exactly (else the runtime's binary search), residual shortcuts and clamps. Rows are padded to
 *   a multiple of 8; the lanes past the plane are computed and never stored.
 *
 * Browser-safe (plain strings).
 */
import { runtimeSource } from '../c/runtime.js';
import { sha256, toHex } from '../sha256.js';
import { cStructs } from './abi.js';

/** clang's flags; part of the hash in binary.ts. */
export const CLANG_FLAGS: readonly string[] = [
  '--target=wasm32', '-std=c99', '-O3', '-msimd128', '-mbulk-memory', '-msign-ext', '-nostdlib', '-ffreestanding',
  '-Wall', '-Wextra', '-Werror', '-Wl,--no-entry', '-Wl,--export=__heap_base', '-Wl,--stack-first', '-Wl,-z,stack-size=65536', '-Wl,--strip-all',
]; // prettier-ignore

const PRELUDE = String.raw`
#include <stddef.h>
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
/* A descriptor's byte offset as a pointer into the module's memory. */
#define AT(type, offset) ((type *)(uintptr_t)(offset))
enum { TQW_ACTIVATION, TQW_RESIDUAL, TQW_LOGITS };
`;

const ROWS = String.raw`
/* ---- rows: n values, n a multiple of 8 ---- */

/* v = rms(a, m, shift) + bias (tq_rms: floor((a * m + 2^(shift-1)) / 2^shift), a * m for shift 0).
   |a * m| < 2^62, so p = a * m + 2^(shift-1) + 2^62 is positive and its logical shift is the
   arithmetic one (one instruction where i64x2.shr_s takes several); subtracting 2^(62-shift)
   afterwards, in 32 bits since the result fits int32, undoes the offset. */
static void requant_row(const int32_t *a, int32_t n, int32_t m, int32_t shift, int32_t bias, int32_t *v)
{
    const v128_t mv = wasm_i32x4_splat(m);
    int32_t i;
    if (shift == 0) {
        const v128_t bv = wasm_i32x4_splat(bias);
        for (i = 0; i < n; i += 4) wasm_v128_store(v + i, wasm_i32x4_add(wasm_i32x4_mul(wasm_v128_load(a + i), mv), bv));
        return;
    }
    const v128_t r = wasm_i64x2_splat(((int64_t)1 << (shift - 1)) + ((int64_t)1 << 62));
    const v128_t bv = wasm_i32x4_splat((int32_t)((uint32_t)bias - (uint32_t)((uint64_t)1 << (62 - shift))));
    for (i = 0; i < n; i += 4) {
        const v128_t x = wasm_v128_load(a + i);
        const v128_t lo = wasm_u64x2_shr(wasm_i64x2_add(wasm_i64x2_extmul_low_i32x4(x, mv), r), (uint32_t)shift);
        const v128_t hi = wasm_u64x2_shr(wasm_i64x2_add(wasm_i64x2_extmul_high_i32x4(x, mv), r), (uint32_t)shift);
        wasm_v128_store(v + i, wasm_i32x4_add(wasm_i32x4_shuffle(lo, hi, 0, 2, 4, 6), bv));
    }
}

/* The activation code value of each v: ReLU floor, then rounding, a SIMD threshold count (code values
   telescoped: values[0] + the steps values[k+1] - values[k] of the thresholds below v, in wrapping
   int16 adds, exact as values[count] fits int16), or the runtime's binary search (many thresholds, or
   thresholds that do not narrow to int16). */
static void activation_row(const tqw_activation *q, int32_t *v, int32_t n)
{
    const v128_t floor = wasm_i32x4_splat(q->floor);
    int32_t i, k;
    if (q->count < 0) {
        const int32_t f = q->frac_bits;
        const v128_t add = wasm_i32x4_splat(f == 0 ? 0 : (1 << (f - 1)) - 1);
        const v128_t lo = wasm_i32x4_splat(q->min_code), hi = wasm_i32x4_splat(q->max_code);
        for (i = 0; i < n; i += 4) {
            const v128_t x = wasm_i32x4_shr(wasm_i32x4_add(wasm_i32x4_max(wasm_v128_load(v + i), floor), add), (uint32_t)f);
            wasm_v128_store(v + i, wasm_i32x4_min(wasm_i32x4_max(x, lo), hi));
        }
    } else if (q->narrow_shift >= 0) {
        /* v > T[k] exactly when u = (v - 1) >> s > T[k] / 2^s - 1 (every T[k] a multiple of 2^s), and
           with those bounds inside int16 the saturated int16 u compares the same: eight lanes per compare. */
        const v128_t *t = AT(const v128_t, q->thresholds8), *s = AT(const v128_t, q->steps8);
        const v128_t base = wasm_i16x8_splat(AT(const int16_t, q->values)[0]), one = wasm_i32x4_splat(1);
        const uint32_t shift = (uint32_t)q->narrow_shift;
        const int32_t count = q->count;
        for (i = 0; i < n; i += 8) {
            const v128_t u0 = wasm_i32x4_shr(wasm_i32x4_sub(wasm_i32x4_max(wasm_v128_load(v + i), floor), one), shift);
            const v128_t u1 = wasm_i32x4_shr(wasm_i32x4_sub(wasm_i32x4_max(wasm_v128_load(v + i + 4), floor), one), shift);
            const v128_t u = wasm_i16x8_narrow_i32x4(u0, u1);
            v128_t y = base;
            for (k = 0; k < count; ++k) y = wasm_i16x8_add(y, wasm_v128_and(wasm_i16x8_gt(u, t[k]), s[k]));
            wasm_v128_store(v + i, wasm_i32x4_extend_low_i16x8(y));
            wasm_v128_store(v + i + 4, wasm_i32x4_extend_high_i16x8(y));
        }
    } else {
        const tq_activation a = { AT(const int32_t, q->thresholds), AT(const int16_t, q->values), q->floor, q->min_code, q->max_code, (int16_t)q->count, (uint8_t)q->frac_bits, 0 };
        for (i = 0; i < n; ++i) v[i] = tq_activation_value(&a, v[i]);
    }
}

static void add_rows(int32_t *v, const int32_t *s, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; i += 4) wasm_v128_store(v + i, wasm_i32x4_add(wasm_v128_load(v + i), wasm_v128_load(s + i)));
}

static void clamp_row(int32_t *v, int32_t n, int32_t lo, int32_t hi)
{
    const v128_t l = wasm_i32x4_splat(lo), h = wasm_i32x4_splat(hi);
    int32_t i;
    /* max first, as tq_clamp (lo > hi gives hi) */
    for (i = 0; i < n; i += 4) wasm_v128_store(v + i, wasm_i32x4_min(wasm_i32x4_max(wasm_v128_load(v + i), l), h));
}

/* dst[i] = p[start + i * stride], i < n, from a tensor of any dtype. */
static void load_row(const void *p, int32_t dtype, int32_t start, int32_t stride, int32_t n, int32_t *dst)
{
    int32_t i;
#define TQW_GATHER(T) { const T *src = (const T *)p + start; for (i = 0; i < n; ++i) dst[i] = src[i * stride]; } break;
    switch (dtype) {
    case TQ_INT8: TQW_GATHER(int8_t)
    case TQ_UINT8: TQW_GATHER(uint8_t)
    case TQ_INT16: TQW_GATHER(int16_t)
    default: TQW_GATHER(int32_t)
    }
#undef TQW_GATHER
}

/* p[start + i] = v[i], i < n (values in the dtype's range). */
static void store_row(void *p, int32_t dtype, int32_t start, int32_t n, const int32_t *v)
{
    int32_t i;
#define TQW_STORE(T) { T *dst = (T *)p + start; for (i = 0; i < n; ++i) dst[i] = (T)v[i]; } break;
    switch (dtype) {
    case TQ_INT8: TQW_STORE(int8_t)
    case TQ_UINT8: TQW_STORE(uint8_t)
    case TQ_INT16: TQW_STORE(int16_t)
    default: TQW_STORE(int32_t)
    }
#undef TQW_STORE
}
`;

const CONV = String.raw`
/* ---- convolution ---- */

/* The input as int16 [in_h + 2 pad_h][in_w + 2 pad_w][in_c], the border zero. */
static void to_hwc(const tqw_conv_op *L)
{
    const int32_t C = L->in_c, H = L->in_h, W = L->in_w, PW = W + 2 * L->pad_w;
    int16_t *hwc = AT(int16_t, L->hwc) + (L->pad_h * PW + L->pad_w) * C;
    int32_t c, y, x;
    __builtin_memset(AT(int16_t, L->hwc), 0, (size_t)(H + 2 * L->pad_h) * (size_t)PW * (size_t)C * sizeof(int16_t));
#define TQW_HWC(T) { const T *in = AT(const T, L->input); \
        for (c = 0; c < C; ++c) for (y = 0; y < H; ++y) { \
            const T *src = in + (c * H + y) * W; int16_t *dst = hwc + y * PW * C + c; \
            for (x = 0; x < W; ++x) dst[x * C] = (int16_t)src[x]; } } break;
    switch (L->in_dtype) {
    case TQ_INT8: TQW_HWC(int8_t)
    case TQ_UINT8: TQW_HWC(uint8_t)
    case TQ_INT16: TQW_HWC(int16_t)
    default: TQW_HWC(int32_t)
    }
#undef TQW_HWC
}

/* n int16 from src to dst, 8 at a time: up to 7 more are read and written (the next run, the patch
   pad or slack overwrites or ignores them). */
static void copy_run(int16_t *dst, const int16_t *src, int32_t n)
{
    int32_t k;
    for (k = 0; k < n; k += 8) wasm_v128_store(dst + k, wasm_v128_load(src + k));
}

/* Patch rows [group][pixel (rows8 per group)][kpad]: patch index (i * kernel_w + j) * group_in + c. */
static void im2col(const tqw_conv_op *L, int32_t rows8)
{
    const int32_t C = L->in_c, G = L->groups, Cg = C / G, KH = L->kernel_h, KW = L->kernel_w, K = L->kpad;
    const int32_t PW = L->in_w + 2 * L->pad_w, OH = L->out_h, OW = L->out_w;
    const int16_t *hwc = AT(const int16_t, L->hwc);
    int16_t *columns = AT(int16_t, L->columns);
    int32_t g, y, x, i, j;
    for (g = 0; g < G; ++g)
        for (y = 0; y < OH; ++y)
            for (x = 0; x < OW; ++x) {
                int16_t *dst = columns + (g * rows8 + y * OW + x) * K;
                const int16_t *src = hwc + ((y * L->stride_h) * PW + x * L->stride_w) * C + g * Cg;
                for (i = 0; i < KH; ++i, src += PW * C) {
                    if (G == 1) copy_run(dst + i * KW * C, src, KW * C); /* a window row is contiguous */
                    else
                        for (j = 0; j < KW; ++j) copy_run(dst + (i * KW + j) * Cg, src + j * C, Cg);
                }
            }
}

/* [sum(a), sum(b), sum(c), sum(d)] of the lanes of each. */
static inline v128_t hsum4(v128_t a, v128_t b, v128_t c, v128_t d)
{
    const v128_t ab = wasm_i32x4_add(wasm_i32x4_shuffle(a, b, 0, 4, 1, 5), wasm_i32x4_shuffle(a, b, 2, 6, 3, 7));
    const v128_t cd = wasm_i32x4_add(wasm_i32x4_shuffle(c, d, 0, 4, 1, 5), wasm_i32x4_shuffle(c, d, 2, 6, 3, 7));
    return wasm_i32x4_add(wasm_i32x4_shuffle(ab, cd, 0, 1, 4, 5), wasm_i32x4_shuffle(ab, cd, 2, 3, 6, 7));
}

#define TQW_DOT(acc, w, x) acc = wasm_i32x4_add(acc, wasm_i32x4_dot_i16x8(w, x))

/* acc[o * stride + j] = sum over k < K of w[o * K + k] * (pixel j's patch)[k] for o < rows and four
   pixels j, two output channels at a time. A patch is segments runs of run int16 (multiples
   of 8), seg_stride apart from x[j]: one run of K from an im2col row, or the kernel_h window rows
   read in place from the padded HWC input. */
static void gemm_block(const int16_t *w, int32_t rows, int32_t K, const int16_t *const x[4], int32_t segments, int32_t run, int32_t seg_stride, int32_t *acc, int32_t stride)
{
    int32_t o, s, k;
    for (o = 0; o + 1 < rows; o += 2) {
        v128_t a0 = wasm_i32x4_splat(0), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (s = 0; s < segments; ++s) {
            const int16_t *w0 = w + o * K + s * run, *w1 = w0 + K;
            const int16_t *x0 = x[0] + s * seg_stride, *x1 = x[1] + s * seg_stride, *x2 = x[2] + s * seg_stride, *x3 = x[3] + s * seg_stride;
            for (k = 0; k < run; k += 8) {
                const v128_t u = wasm_v128_load(w0 + k), v = wasm_v128_load(w1 + k);
                const v128_t c0 = wasm_v128_load(x0 + k), c1 = wasm_v128_load(x1 + k), c2 = wasm_v128_load(x2 + k), c3 = wasm_v128_load(x3 + k);
                TQW_DOT(a0, u, c0); TQW_DOT(a1, u, c1); TQW_DOT(a2, u, c2); TQW_DOT(a3, u, c3);
                TQW_DOT(b0, v, c0); TQW_DOT(b1, v, c1); TQW_DOT(b2, v, c2); TQW_DOT(b3, v, c3);
            }
        }
        wasm_v128_store(acc + o * stride, hsum4(a0, a1, a2, a3));
        wasm_v128_store(acc + (o + 1) * stride, hsum4(b0, b1, b2, b3));
    }
    if (o < rows) {
        v128_t a0 = wasm_i32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
        for (s = 0; s < segments; ++s) {
            const int16_t *w0 = w + o * K + s * run;
            const int16_t *x0 = x[0] + s * seg_stride, *x1 = x[1] + s * seg_stride, *x2 = x[2] + s * seg_stride, *x3 = x[3] + s * seg_stride;
            for (k = 0; k < run; k += 8) {
                const v128_t u = wasm_v128_load(w0 + k);
                TQW_DOT(a0, u, wasm_v128_load(x0 + k)); TQW_DOT(a1, u, wasm_v128_load(x1 + k));
                TQW_DOT(a2, u, wasm_v128_load(x2 + k)); TQW_DOT(a3, u, wasm_v128_load(x3 + k));
            }
        }
        wasm_v128_store(acc + o * stride, hsum4(a0, a1, a2, a3));
    }
}

/* The accumulators [out_c][rows8]. Dense convs whose window rows are whole vectors (kernel_w *
   in_c a multiple of 8: every ResNet conv but the stem) read the windows in place; the others go
   through im2col, group by group. Pixels past the plane (up to rows8) repeat the last one. */
static void accumulate(const tqw_conv_op *L, int32_t rows8, int32_t *acc)
{
    const int32_t C = L->in_c, G = L->groups, Og = L->out_c / G, K = L->kpad, plane = L->out_h * L->out_w, OW = L->out_w;
    const int32_t run = L->kernel_w * C, PW = L->in_w + 2 * L->pad_w;
    const int16_t *weights = AT(const int16_t, L->weights), *x[4];
    int32_t g, p, j;
    if (G == 1 && run % 8 == 0) {
        const int16_t *hwc = AT(const int16_t, L->hwc);
        for (p = 0; p < rows8; p += 4) {
            for (j = 0; j < 4; ++j) {
                const int32_t q = p + j < plane ? p + j : plane - 1;
                x[j] = hwc + ((q / OW) * L->stride_h * PW + (q % OW) * L->stride_w) * C;
            }
            gemm_block(weights, L->out_c, K, x, L->kernel_h, run, PW * C, acc + p, rows8);
        }
        return;
    }
    im2col(L, rows8);
    for (g = 0; g < G; ++g)
        for (p = 0; p < rows8; p += 4) {
            for (j = 0; j < 4; ++j) x[j] = AT(const int16_t, L->columns) + (g * rows8 + p + j) * K;
            gemm_block(weights + g * Og * K, Og, K, x, 1, K, 0, acc + g * Og * rows8 + p, rows8);
        }
}

/* Output channel o's shortcut term rms(sc[o - offset, y * stride, x * stride]) into s, or 0 when the channel has none. */
static int32_t shortcut_row(const tqw_conv_op *L, int32_t o, int32_t n, int32_t *s)
{
    const int32_t c = o - L->sc_offset, S = L->sc_stride, OW = L->out_w;
    int32_t y;
    if (!L->sc || c < 0 || c >= L->sc_c) return 0;
    for (y = 0; y < L->out_h; ++y) load_row(AT(const void, L->sc), L->sc_dtype, (c * L->sc_h + y * S) * L->sc_w, S, OW, s + y * OW);
    requant_row(s, n, L->sc_mult, L->sc_shift, 0, s);
    return 1;
}

EXPORT(tqw_conv) void tqw_conv(const tqw_conv_op *L)
{
    const int32_t plane = L->out_h * L->out_w, rows8 = (plane + 7) & ~7;
    const int32_t *mult = AT(const int32_t, L->mult), *bias = AT(const int32_t, L->bias);
    const uint8_t *shift = AT(const uint8_t, L->shift);
    int32_t *acc = AT(int32_t, L->acc), *row = AT(int32_t, L->row), *sc = AT(int32_t, L->sc_row);
    int32_t o;
    to_hwc(L);
    accumulate(L, rows8, acc);
    for (o = 0; o < L->out_c; ++o) {
        requant_row(acc + o * rows8, rows8, mult[o], shift[o], bias[o], row);
        if (L->epilogue == TQW_ACTIVATION) activation_row(AT(const tqw_activation, L->activation), row, rows8);
        else if (L->epilogue == TQW_RESIDUAL) {
            if (shortcut_row(L, o, rows8, sc)) add_rows(row, sc, rows8);
            clamp_row(row, rows8, L->lo, L->hi);
        }
        store_row(AT(void, L->output), L->out_dtype, o * plane, plane, row);
    }
}
`;

const OPS = String.raw`
/* ---- the other ops ---- */

EXPORT(tqw_quantize) void tqw_quantize(const tqw_quantize_op *q)
{
    const tqw_activation *a = AT(const tqw_activation, q->activation);
    const int32_t plane = q->plane, rows8 = (plane + 7) & ~7;
    const int32_t *mult = AT(const int32_t, q->mult), *bias = AT(const int32_t, q->bias);
    const uint8_t *shift = AT(const uint8_t, q->shift);
    int32_t *row = AT(int32_t, q->row);
    int32_t c;
    if (a->count >= 0 && a->narrow_shift < 0) {
        const tq_quantize_op op = { mult, shift, bias,
            { AT(const int32_t, a->thresholds), AT(const int16_t, a->values), a->floor, a->min_code, a->max_code, (int16_t)a->count, (uint8_t)a->frac_bits, 0 },
            plane, q->channels, (uint8_t)q->per_channel, (uint8_t)q->in_dtype, (uint8_t)q->out_dtype };
        tq_quantize(&op, AT(const void, q->input), AT(void, q->output));
        return;
    }
    for (c = 0; c < q->channels; ++c) {
        const int32_t r = q->per_channel ? c : 0;
        load_row(AT(const void, q->input), q->in_dtype, c * plane, 1, plane, row);
        requant_row(row, rows8, mult[r], shift[r], bias[r], row);
        activation_row(a, row, rows8);
        store_row(AT(void, q->output), q->out_dtype, c * plane, plane, row);
    }
}

EXPORT(tqw_pool) void tqw_pool(const tqw_pool_op *d)
{
    const tq_pool_op p = { d->max, d->channels, d->in_h, d->in_w, d->out_h, d->out_w, d->kernel_h, d->kernel_w,
                           d->stride_h, d->stride_w, d->pad_h, d->pad_w, d->in_dtype, d->out_dtype };
    tq_pool(&p, AT(const void, d->input), AT(void, d->output));
}

EXPORT(tqw_add) void tqw_add(const tqw_add_op *d)
{
    const tq_add_op q = { d->size, d->a_mult, d->b_mult, d->lo, d->hi, d->a_shift, d->b_shift, d->a_dtype, d->b_dtype, d->out_dtype };
    tq_add(&q, AT(const void, d->a), AT(const void, d->b), AT(void, d->output));
}

EXPORT(tqw_input) void tqw_input(const tqw_input_op *d)
{
    tq_input(AT(const uint8_t, d->image), AT(const int16_t, d->lut), AT(void, d->output), d->out_dtype, d->channels, d->plane, d->plane, 1);
}
`;

/** The complete C source of the kernels module. */
export function wasmSource(): string {
  const runtime = runtimeSource({ convInputs: [], depthwiseInputs: [], unrolled: { k3: false, k1: false }, quantize: true, pool: true, add: true });
  return `/* tinyquant WebAssembly integer kernels (src/export/wasm/source.ts). */${PRELUDE}\n${cStructs()}${runtime}${ROWS}${CONV}${OPS}`;
}

/** SHA-256 of the flags and the source: binary.ts records the one it was built from. */
export function wasmSourceHash(): string {
  return toHex(sha256(new TextEncoder().encode(`${CLANG_FLAGS.join(' ')}\n${wasmSource()}`)));
}

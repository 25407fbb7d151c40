/**
 * The dense convolution kernel of the generated C (groups = 1, 8- or 16-bit inputs, any kernel,
 * stride and padding): dual 16-bit multiply-accumulates (ARMv7E-M `SMLAD` through ACLE's
 * `__smlad` where `__ARM_FEATURE_DSP` says the target has it: Cortex-M4, M7, M33 with DSP; a C
 * function of identical arithmetic elsewhere, e.g. the host build the tests compile) on int16
 * pairs, the CMSIS-NN way: the windows of two output pixels are copied into two int16 columns
 * (im2col, zeros for padding, padded with zeros to a multiple of four), the weights of a block of
 * output channels are decoded from their packed codes into int16 rows once per block, and each
 * step of the inner loop loads one pair of each column and of two weight rows and does four dual
 * MACs (2 output channels x 2 pixels: every loaded word is used twice). The epilogue is the
 * generic kernel's (tq_conv_output), per sum as it leaves the registers.
 *
 * The sums are the engine's exactly: integer sums whose worst case fits int32 (validate.ts checks
 * the accumulator bound), so every partial sum fits whatever the order. The block (output
 * channels decoded at a time) is chosen per layer by kernels.ts so the arena does not grow.
 */
import type { DType } from '../ir.js';

/** The dual MAC and the int16 pair load, emitted once when a model has a DSP conv. */
export const DSP_COMMON = String.raw`
/* acc + lo(a) * lo(b) + hi(a) * hi(b) on signed 16-bit halves (SMLAD). The C form wraps modulo
   2^32 as SMLAD does; the sums here never leave int32 anyway (see the validation's bound). */
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define tq_smlad(a, b, acc) __smlad((a), (b), (acc))
#else
static int32_t tq_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    const int32_t lo = (int32_t)(int16_t)(a & 0xffffu) * (int16_t)(b & 0xffffu);
    const int32_t hi = (int32_t)(int16_t)(a >> 16) * (int16_t)(b >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)lo + (uint32_t)hi);
}
#endif

/* Two neighbouring int16 values as one word, first in the low half (little-endian: one LDR). */
static uint32_t tq_pair(const int16_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Sums of weight rows w0, w1 (even int16 each, a multiple of 4) with columns a0, a1: s[2 * row + column]. */
static void tq_dot_2x2(const int16_t *w0, const int16_t *w1, const int16_t *a0, const int16_t *a1, int32_t even, int32_t *s)
{
    int32_t s00 = 0, s01 = 0, s10 = 0, s11 = 0, k;
    for (k = 0; k < even; k += 4) {
        uint32_t x0 = tq_pair(a0 + k), x1 = tq_pair(a1 + k), v0 = tq_pair(w0 + k), v1 = tq_pair(w1 + k);
        s00 = tq_smlad(v0, x0, s00);
        s01 = tq_smlad(v0, x1, s01);
        s10 = tq_smlad(v1, x0, s10);
        s11 = tq_smlad(v1, x1, s11);
        x0 = tq_pair(a0 + k + 2), x1 = tq_pair(a1 + k + 2), v0 = tq_pair(w0 + k + 2), v1 = tq_pair(w1 + k + 2);
        s00 = tq_smlad(v0, x0, s00);
        s01 = tq_smlad(v0, x1, s01);
        s10 = tq_smlad(v1, x0, s10);
        s11 = tq_smlad(v1, x1, s11);
    }
    s[0] = s00, s[1] = s01, s[2] = s10, s[3] = s11;
}
`;

/** im2col and the kernel for inputs of one element type. */
export function dspConv(dtype: DType, cType: string): string {
  return String.raw`
/* The window of output pixel (y, x) over all input channels as an int16 column of even entries
   (patch order: channel, kernel row, kernel column; zeros outside the input and after the patch). */
static void tq_im2col_${dtype}(const tq_conv *L, const ${cType} *in, int32_t y, int32_t x, int32_t even, int16_t *col)
{
    const int32_t KH = L->kernel_h, KW = L->kernel_w, H = L->in_h, W = L->in_w, C = L->group_in, HW = H * W;
    const int32_t top = y * L->stride_h - L->pad_h, left = x * L->stride_w - L->pad_w;
    int16_t *const end = col + even;
    int32_t c, i, j;
    if (top >= 0 && left >= 0 && top + KH <= H && left + KW <= W) {
        /* Inside the input: the common 3x3 and 1x1 windows without tests. */
        const ${cType} *src = in + top * W + left;
        if (KH == 3 && KW == 3) {
            for (c = 0; c < C; ++c, src += HW, col += 9) {
                col[0] = src[0], col[1] = src[1], col[2] = src[2];
                col[3] = src[W], col[4] = src[W + 1], col[5] = src[W + 2];
                col[6] = src[2 * W], col[7] = src[2 * W + 1], col[8] = src[2 * W + 2];
            }
        } else if (KH == 1 && KW == 1) {
            for (c = 0; c < C; ++c, src += HW) *col++ = *src;
        } else {
            for (c = 0; c < C; ++c, src += HW)
                for (i = 0; i < KH; ++i)
                    for (j = 0; j < KW; ++j) *col++ = src[i * W + j];
        }
    } else {
        for (c = 0; c < C; ++c)
            for (i = 0; i < KH; ++i)
                for (j = 0; j < KW; ++j) {
                    const int32_t r = top + i, s = left + j;
                    *col++ = r >= 0 && r < H && s >= 0 && s < W ? in[(c * H + r) * W + s] : 0;
                }
    }
    while (col < end) *col++ = 0;
}

/* A dense conv of ${dtype} inputs, block output channels decoded at a time. scratch: block weight
   rows and two columns, even int16 each. */
static void tq_conv_dsp_${dtype}(const tq_conv *L, int32_t block, const void *input, void *out, const void *sc, void *scratch)
{
    const ${cType} *in = (const ${cType} *)input;
    const int32_t out_c = L->out_c, out_w = L->out_w, plane = L->out_h * out_w;
    const int32_t patch = L->group_in * L->kernel_h * L->kernel_w, even = (patch + 3) & ~3;
    int16_t *const rows = (int16_t *)scratch, *const a0 = rows + block * even, *const a1 = a0 + even;
    int32_t o0, o, p, k, s[4];
    for (o0 = 0; o0 < out_c; o0 += block) {
        const int32_t n = out_c - o0 < block ? out_c - o0 : block;
        for (o = 0; o < n; ++o) {
            tq_weight_row(L, o0 + o, patch, rows + o * even);
            for (k = patch; k < even; ++k) rows[o * even + k] = 0;
        }
        for (p = 0; p < plane; p += 2) {
            /* An odd plane's last pixel fills both columns; the second copy's sums are dropped. */
            const int32_t q = p + 1 < plane ? p + 1 : p;
            const int32_t y0 = p / out_w, x0 = p - y0 * out_w, y1 = q / out_w, x1 = q - y1 * out_w;
            tq_im2col_${dtype}(L, in, y0, x0, even, a0);
            tq_im2col_${dtype}(L, in, y1, x1, even, a1);
            for (o = 0; o < n; o += 2) {
                /* Likewise an odd block's last channel. */
                const int32_t o1 = o + 1 < n ? o + 1 : o;
                tq_dot_2x2(rows + o * even, rows + o1 * even, a0, a1, even, s);
                tq_conv_output(L, o0 + o, y0, x0, s[0], out, sc);
                if (q != p) tq_conv_output(L, o0 + o, y1, x1, s[1], out, sc);
                if (o1 != o) {
                    tq_conv_output(L, o0 + o1, y0, x0, s[2], out, sc);
                    if (q != p) tq_conv_output(L, o0 + o1, y1, x1, s[3], out, sc);
                }
            }
        }
    }
}
`;
}

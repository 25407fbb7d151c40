/**
 * The dual-MAC kernels of the generated C: the dense convolution kernel (groups = 1, 8- or 16-bit
 * inputs, any kernel, stride and padding) and the 3x3 depthwise kernel (see dspDepthwise). Dense: dual 16-bit multiply-accumulates (ARMv7E-M `SMLAD` through ACLE's
 * `__smlad` where `__ARM_FEATURE_DSP` says the target has it: Cortex-M4, M7, M33 with DSP; a C
 * function of identical arithmetic elsewhere, e.g. the host build the tests compile) on int16
 * pairs, the CMSIS-NN way: the windows of two output pixels are copied into int16 columns
 * (im2col, zeros for padding, padded with zeros to a multiple of eight), the weights of a block of
 * output channels are decoded from their packed codes into int16 rows once per block, and each
 * step of the inner loop loads one pair of each column and of two weight rows and does four dual
 * MACs (2 output channels x 2 pixels: every loaded word is used twice). Pairs are stored as 32-bit
 * words (never read through another type) and interleaved, the two columns word by word and the
 * two rows of a channel pair word by word, so each step is two double-word loads through two
 * pointers. The epilogue is the generic kernel's (tq_conv_output), per sum as it leaves the
 * registers.
 *
 * The sums are the engine's exactly: integer sums whose worst case fits int32 (validate.ts checks
 * the accumulator bound), so every partial sum fits whatever the order. The block (output
 * channels decoded at a time) is chosen per layer by kernels.ts so the arena does not grow.
 */
import type { DType } from '../ir.js';

/** The dual MAC and the pair packing, emitted once when a model has a conv on a dual-MAC kernel. */
export const DSP_COMMON = String.raw`
/* acc + lo(a) * lo(b) + hi(a) * hi(b) on signed 16-bit halves (SMLAD). The C form wraps modulo
   2^32 as SMLAD does; the sums here never leave int32 anyway (see the validation's bound). */
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

/* Two int16 values as one word, the first in the low half. */
static uint32_t tq_pack(int32_t first, int32_t second)
{
    return (uint32_t)(uint16_t)first | (uint32_t)(uint16_t)second << 16;
}

`;

/** The double-word load of the dense kernels' inner loops (this file's and runtime-triple.ts's), emitted once when a model has one. */
export const LOAD2 = String.raw`
/* Two consecutive words *p, p[1] into first, second, p advanced by two words. On ARMv7E-M one LDRD
   with post-increment: GCC splits such loads into two LDRs, which would cost the inner loop a
   quarter of its instructions. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define tq_load2(p, first, second) __asm__("ldrd %0, %1, [%2], #8" : "=r"(first), "=r"(second), "+r"(p) : "m"(*(const uint32_t(*)[2])(p)))
#else
#define tq_load2(p, first, second) ((first) = (p)[0], (second) = (p)[1], (p) += 2)
#endif
`;

/** What the dense dual-MAC kernels share (im2col packing, weight rows, the 2 x 2 dot), emitted once when a model has one. */
export const DSP_DENSE = String.raw`
/* Element n of a column of pairs in every other word (col[0], col[2], ...): the low half waits in *low. */
static void tq_put(uint32_t *col, int32_t n, uint32_t *low, int32_t v)
{
    if (n & 1) col[n - 1] = *low | (uint32_t)(uint16_t)v << 16;
    else *low = (uint16_t)v;
}

/* The weights of output channel o as even int16 (zeros after the patch), pairs in every other word of dst. */
static void tq_weight_pairs(const tq_conv *L, int32_t o, int32_t patch, int32_t even, uint32_t *dst)
{
    const uint32_t bits = L->bits;
    uint32_t bit = (uint32_t)o * (uint32_t)patch * bits;
    int32_t k;
    for (k = 0; k + 1 < patch; k += 2, bit += 2u * bits) dst[k] = tq_pack(tq_weight(L, bit), tq_weight(L, bit + bits));
    if (k < patch) dst[k] = tq_pack(tq_weight(L, bit), 0), k += 2;
    for (; k < even; k += 2) dst[k] = 0;
}

/* Sums of a channel pair's interleaved rows w with a pixel pair's interleaved columns a, even words
   each (a multiple of 8: four steps of 4 MACs per channel and pixel a loop): s[2 * channel + pixel]. */
/* One step: a word of each row and column, four dual MACs. Written out four times a loop (the loop's
   overhead is then a quarter of an instruction per MAC pair). */
#define TQ_DOT_2X2_STEP() \
    do { \
        tq_load2(w, v0, v1); \
        tq_load2(a, x0, x1); \
        s00 = tq_smlad(v0, x0, s00); \
        s01 = tq_smlad(v0, x1, s01); \
        s10 = tq_smlad(v1, x0, s10); \
        s11 = tq_smlad(v1, x1, s11); \
    } while (0)
static void tq_dot_2x2(const uint32_t *w, const uint32_t *a, int32_t even, int32_t *s)
{
    const uint32_t *const end = a + even;
    int32_t s00 = 0, s01 = 0, s10 = 0, s11 = 0;
    uint32_t v0, v1, x0, x1;
    while (a < end) {
        TQ_DOT_2X2_STEP();
        TQ_DOT_2X2_STEP();
        TQ_DOT_2X2_STEP();
        TQ_DOT_2X2_STEP();
    }
    s[0] = s00, s[1] = s01, s[2] = s10, s[3] = s11;
}
#undef TQ_DOT_2X2_STEP
`;

/**
 * The end of an im2col: any window the fast paths above it leave, value by value (`read` gives the
 * input element at a C index expression), then the zeros after the patch.
 */
function anyWindow(read: (at: string) => string): string {
  return String.raw`    /* Any other window, value by value. */
    for (c = 0; c < C; ++c)
        for (i = 0; i < KH; ++i)
            for (j = 0; j < KW; ++j, ++n) {
                const int32_t r = top + i, q = left + j;
                tq_put(col, n, &low, r >= 0 && r < H && q >= 0 && q < W ? ${read('(c * H + r) * W + q')} : 0);
            }
    for (; n < even; ++n) tq_put(col, n, &low, 0);
}
`;
}

/** im2col and the kernel for inputs of one element type. */
export function dspConv(dtype: DType, cType: string): string {
  return im2col(dtype, cType) + blockKernel(dtype, cType);
}

/** The im2col of inputs of one element type. */
function im2col(dtype: DType, cType: string): string {
  return String.raw`
/* The window of output pixel (y, x) over all input channels as even int16 (patch order: channel,
   kernel row, kernel column; zeros outside the input and after the patch), pairs in every other
   word of col. */
static void tq_im2col_${dtype}(const tq_conv *L, const ${cType} *in, int32_t y, int32_t x, int32_t even, uint32_t *col)
{
    const int32_t KH = L->kernel_h, KW = L->kernel_w, H = L->in_h, W = L->in_w, C = L->group_in, HW = H * W;
    const int32_t top = y * L->stride_h - L->pad_h, left = x * L->stride_w - L->pad_w;
    uint32_t low = 0;
    int32_t c, i, j, n = 0;
    if ((C & 1) == 0 && KH == 3 && KW == 3) {
        /* The common case, two channels (18 values, 9 words) at a time. */
        if (top >= 0 && left >= 0 && top + 3 <= H && left + 3 <= W) {
            const ${cType} *r0 = in + top * W + left, *r1 = r0 + W, *r2 = r1 + W;
            for (c = 0; c < C; c += 2, r0 += 2 * HW, r1 += 2 * HW, r2 += 2 * HW, col += 18) {
                col[0] = tq_pack(r0[0], r0[1]), col[2] = tq_pack(r0[2], r1[0]), col[4] = tq_pack(r1[1], r1[2]);
                col[6] = tq_pack(r2[0], r2[1]), col[8] = tq_pack(r2[2], r0[HW]), col[10] = tq_pack(r0[HW + 1], r0[HW + 2]);
                col[12] = tq_pack(r1[HW], r1[HW + 1]), col[14] = tq_pack(r1[HW + 2], r2[HW]), col[16] = tq_pack(r2[HW + 1], r2[HW + 2]);
            }
        } else {
            /* At the border: the offsets of the window's positions inside a channel plane, -1 for padding (zero). */
            int32_t at[9];
            const ${cType} *a = in;
            for (i = 0; i < 3; ++i)
                for (j = 0; j < 3; ++j) {
                    const int32_t r = top + i, q = left + j;
                    at[i * 3 + j] = r >= 0 && r < H && q >= 0 && q < W ? r * W + q : -1;
                }
            for (c = 0; c < C; c += 2, a += 2 * HW, col += 18) {
                const ${cType} *b = a + HW;
#define TQ_AT(p, t) (at[t] >= 0 ? (p)[at[t]] : 0)
                col[0] = tq_pack(TQ_AT(a, 0), TQ_AT(a, 1)), col[2] = tq_pack(TQ_AT(a, 2), TQ_AT(a, 3)), col[4] = tq_pack(TQ_AT(a, 4), TQ_AT(a, 5));
                col[6] = tq_pack(TQ_AT(a, 6), TQ_AT(a, 7)), col[8] = tq_pack(TQ_AT(a, 8), TQ_AT(b, 0)), col[10] = tq_pack(TQ_AT(b, 1), TQ_AT(b, 2));
                col[12] = tq_pack(TQ_AT(b, 3), TQ_AT(b, 4)), col[14] = tq_pack(TQ_AT(b, 5), TQ_AT(b, 6)), col[16] = tq_pack(TQ_AT(b, 7), TQ_AT(b, 8));
#undef TQ_AT
            }
        }
        for (n = 9 * C; n < even; n += 2, col += 2) col[0] = 0;
        return;
    }
    if ((C & 1) == 0 && KH == 1 && KW == 1 && top >= 0 && left >= 0 && top < H && left < W) {
        const ${cType} *a = in + top * W + left;
        for (c = 0; c < C; c += 2, a += 2 * HW, col += 2) col[0] = tq_pack(a[0], a[HW]);
        for (n = C; n < even; n += 2, col += 2) col[0] = 0;
        return;
    }
${anyWindow((at) => `in[${at}]`)}
`;
}

/**
 * How a kernel family of the block scheme below forms its words: the dual-MAC kernel's int16 pairs
 * (here) or the triple-MAC kernel's 10-bit triples (runtime-triple.ts). `even` in the C is the
 * words of a channel pair's interleaved rows (and of a pixel pair's interleaved columns).
 */
export interface BlockFamily {
  /** The kernel's name part: tq_conv_KIND_NAME, tq_im2colSUFFIX_NAME. */
  readonly kind: string;
  readonly im2colSuffix: string;
  /** Parameters after `block` in the kernel's signature (with a leading comma), and what it passes on to the dot. */
  readonly parameters: string;
  readonly dotArguments: string;
  /** C expression of even from patch. */
  readonly even: string;
  /** The weight row function (tq_weight_pairs' signature) and the 2 x 2 dot (tq_dot_2x2's, then dotArguments). */
  readonly rows: string;
  readonly dot: string;
  /** What a row holds, for the kernel's comment. */
  readonly words: string;
}

const DUAL_MAC: BlockFamily = {
  kind: 'dsp',
  im2colSuffix: '',
  parameters: '',
  dotArguments: '',
  even: '(patch + 7) & ~7',
  rows: 'tq_weight_pairs',
  dot: 'tq_dot_2x2',
  words: 'a channel pair\'s two interleaved in even words, then the two pixels\' interleaved columns\n   (even words)',
};

/**
 * The kernel (tq_conv_KIND_NAME) over the im2col of the same name, inputs read as `cType`: per block
 * of output channels their rows decoded once, then per pixel pair its two columns and per channel
 * pair one 2 x 2 dot, each sum requantized as it leaves the dot.
 */
export function blockKernel(name: string, cType: string, f: BlockFamily = DUAL_MAC): string {
  return String.raw`
/* A dense conv of ${name} inputs, block output channels decoded at a time. scratch: the block's
   rows, ${f.words}. */
static void tq_conv_${f.kind}_${name}(const tq_conv *L, int32_t block${f.parameters}, const void *input, void *out, const void *sc, void *scratch)
{
    const ${cType} *in = (const ${cType} *)input;
    const int32_t out_c = L->out_c, out_w = L->out_w, plane = L->out_h * out_w;
    const int32_t patch = L->group_in * L->kernel_h * L->kernel_w, even = ${f.even};
    uint32_t *const rows = (uint32_t *)scratch, *const cols = rows + (block + 1) / 2 * even;
    int32_t o0, o, p, j, s[4];
    for (o0 = 0; o0 < out_c; o0 += block) {
        const int32_t n = out_c - o0 < block ? out_c - o0 : block;
        /* An odd block's last channel is its pair's both rows; the copy's sums are dropped. */
        for (o = 0; o < n; o += 2) {
            ${f.rows}(L, o0 + o, patch, even, rows + o / 2 * even);
            ${f.rows}(L, o0 + (o + 1 < n ? o + 1 : o), patch, even, rows + o / 2 * even + 1);
        }
        for (p = 0; p < plane; p += 2) {
            /* Likewise an odd plane's last pixel fills both columns. */
            const int32_t q = p + 1 < plane ? p + 1 : p;
            const int32_t y0 = p / out_w, x0 = p - y0 * out_w, y1 = q / out_w, x1 = q - y1 * out_w;
            tq_im2col${f.im2colSuffix}_${name}(L, in, y0, x0, even, cols);
            tq_im2col${f.im2colSuffix}_${name}(L, in, y1, x1, even, cols + 1);
            for (o = 0; o < n; o += 2) {
                ${f.dot}(rows + o / 2 * even, cols, even${f.dotArguments}, s);
                /* A loop over the pair's channels: the inlined epilogue twice in the code, not four times. */
                for (j = 0; j < 2 && o + j < n; ++j) {
                    tq_conv_output(L, o0 + o + j, y0, x0, s[2 * j], out, sc);
                    if (q != p) tq_conv_output(L, o0 + o + j, y1, x1, s[2 * j + 1], out, sc);
                }
            }
        }
    }
}
`;
}

/**
 * im2col and the kernel for packed 4-bit codes (plan.ts: element i in byte i / 2, the low nibble
 * for even i). Interior 3x3 windows of planes with an even width: every window row and channel
 * plane starts at an even code, so each row's three codes come from two byte loads and a shift
 * set once per window (borders included), and pairs are formed from nibbles (the codes are
 * non-negative, below 16); other windows go code by code.
 */
export function dspConvPacked(): string {
  return (
    String.raw`
/* Code i of the packed codes p. */
#define TQ_NIB(p, i) ((uint32_t)(p)[(i) >> 1] >> (((i) & 1) << 2) & 15u)

/* Bytes b[0], b[1] as bits 8..23, shifted right by s: a window row's three codes in nibbles 0..2. */
static uint32_t tq_row3(const uint8_t *b, uint32_t s)
{
    return ((uint32_t)b[0] << 8 | (uint32_t)b[1] << 16) >> s;
}

/* tq_im2col_int8 for packed codes: the same columns. */
static void tq_im2col_u4(const tq_conv *L, const void *input, int32_t y, int32_t x, int32_t even, uint32_t *col)
{
    const uint8_t *in = (const uint8_t *)input;
    const int32_t KH = L->kernel_h, KW = L->kernel_w, H = L->in_h, W = L->in_w, C = L->group_in, HW = H * W;
    const int32_t top = y * L->stride_h - L->pad_h, left = x * L->stride_w - L->pad_w;
    uint32_t low = 0;
    int32_t c, i, j, n = 0;
    if ((C & 1) == 0 && KH == 3 && KW == 3 && (W & 1) == 0 && W >= 4 && left >= -1 && left <= W - 2) {
        /* Every row and plane starts at an even code (W even), so one byte offset and shift serve the
           whole window: s = 4 when its first column is padding (a zero nibble shifted in), 16 when its
           last is (the byte before is read, then dropped), else 8 or 12 by the parity of left. Rows
           outside the input read row 0 and are masked to zero. */
        const int32_t first = left < 0 ? 0 : left == W - 2 ? (W - 4) / 2 : left >> 1, half = HW / 2;
        const uint32_t s = left < 0 ? 4u : left == W - 2 ? 16u : 8u + ((uint32_t)left & 1u) * 4u;
        const uint32_t m0 = top >= 0 && top < H ? ~0u : 0u, m1 = top + 1 >= 0 && top + 1 < H ? ~0u : 0u, m2 = top + 2 >= 0 && top + 2 < H ? ~0u : 0u;
        const uint8_t *r0 = in + (m0 ? top : 0) * (W / 2) + first, *r1 = in + (m1 ? top + 1 : 0) * (W / 2) + first;
        const uint8_t *r2 = in + (m2 ? top + 2 : 0) * (W / 2) + first;
        for (c = 0; c < C; c += 2, r0 += HW, r1 += HW, r2 += HW, col += 18) {
            const uint32_t a0 = tq_row3(r0, s) & m0, a1 = tq_row3(r1, s) & m1, a2 = tq_row3(r2, s) & m2;
            const uint32_t b0 = tq_row3(r0 + half, s) & m0, b1 = tq_row3(r1 + half, s) & m1, b2 = tq_row3(r2 + half, s) & m2;
#define TQ_P(a, s, b, t) (((a) >> (4 * (s)) & 15u) | ((b) >> (4 * (t)) & 15u) << 16)
            col[0] = TQ_P(a0, 0, a0, 1), col[2] = TQ_P(a0, 2, a1, 0), col[4] = TQ_P(a1, 1, a1, 2);
            col[6] = TQ_P(a2, 0, a2, 1), col[8] = TQ_P(a2, 2, b0, 0), col[10] = TQ_P(b0, 1, b0, 2);
            col[12] = TQ_P(b1, 0, b1, 1), col[14] = TQ_P(b1, 2, b2, 0), col[16] = TQ_P(b2, 1, b2, 2);
#undef TQ_P
        }
        for (n = 9 * C; n < even; n += 2, col += 2) col[0] = 0;
        return;
    }
    if ((C & 1) == 0 && KH == 1 && KW == 1 && top >= 0 && left >= 0 && top < H && left < W) {
        int32_t e = top * W + left;
        for (c = 0; c < C; c += 2, e += 2 * HW, col += 2) col[0] = TQ_NIB(in, e) | TQ_NIB(in, e + HW) << 16;
        for (n = C; n < even; n += 2, col += 2) col[0] = 0;
        return;
    }
${anyWindow((at) => `(int32_t)TQ_NIB(in, ${at})`)}` + blockKernel('u4', 'uint8_t')
  );
}

/** The window-row pair load of the depthwise kernels, emitted once when a model has one. */
export const DSP_DEPTHWISE = String.raw`
/* Two neighbouring int16 values as one word, the first in the low half. */
static uint32_t tq_pair(const int16_t *p)
{
    return (uint32_t)(uint16_t)p[0] | (uint32_t)(uint16_t)p[1] << 16;
}

/* The windows of one output plane over the padded plane pad (rows WP apart), each sum s (a window
   row: one dual MAC and one MAC) handed to the statement epilogue at (y, x). */
#define TQ_DW_PLANE(epilogue) \
    for (y = 0; y < OH; ++y) { \
        const int16_t *a = pad + y * SH * WP; \
        for (x = 0; x < OW; ++x, a += SW) { \
            int32_t s = tq_smlad(tq_pair(a), w01, w2 * a[2]); \
            s = tq_smlad(tq_pair(a + WP), w34, s + w5 * a[WP + 2]); \
            s = tq_smlad(tq_pair(a + 2 * WP), w67, s + w8 * a[2 * WP + 2]); \
            epilogue; \
        } \
    }
`;

/**
 * The 3x3 depthwise kernel (tq_conv_dw_NAME: one input channel per group, any stride and padding,
 * channel multipliers included) for inputs of one element type. Per output channel its input plane
 * is copied into int16 with its zero padding (scratch: the rows and columns the windows cover), so
 * every window is whole and no pixel tests its borders; the nine weights stay in registers, as
 * three pairs and three singles, and each window row is one dual MAC and one MAC.
 */
export function dspDepthwise(dtype: DType, cType: string): string {
  return String.raw`
static void tq_conv_dw_${dtype}(const tq_conv *L, const void *input, void *out, const void *sc, void *scratch)
{
    const int32_t H = L->in_h, W = L->in_w, OH = L->out_h, OW = L->out_w, SH = L->stride_h, SW = L->stride_w;
    const int32_t PH = L->pad_h, PW = L->pad_w, HP = (OH - 1) * SH + 3, WP = (OW - 1) * SW + 3, per = L->out_c / L->groups;
    const int32_t left = PW < WP ? PW : WP, right = PW + W < WP ? PW + W : WP;
    int16_t *const pad = (int16_t *)scratch;
    int32_t o, y, x;
    for (o = 0; o < L->out_c; ++o) {
        const ${cType} *plane = (const ${cType} *)input + o / per * H * W;
        const uint32_t bits = L->bits, bit = (uint32_t)o * 9u * bits;
        const uint32_t w01 = tq_pack(tq_weight(L, bit), tq_weight(L, bit + bits)), w34 = tq_pack(tq_weight(L, bit + 3u * bits), tq_weight(L, bit + 4u * bits));
        const uint32_t w67 = tq_pack(tq_weight(L, bit + 6u * bits), tq_weight(L, bit + 7u * bits));
        const int32_t w2 = tq_weight(L, bit + 2u * bits), w5 = tq_weight(L, bit + 5u * bits), w8 = tq_weight(L, bit + 8u * bits);
        for (y = 0; y < HP; ++y) {
            int16_t *d = pad + y * WP;
            const int32_t r = y - PH;
            if (r < 0 || r >= H) {
                for (x = 0; x < WP; ++x) d[x] = 0;
                continue;
            }
            for (x = 0; x < left; ++x) d[x] = 0;
            for (; x < right; ++x) d[x] = (int16_t)plane[r * W + x - PW];
            for (; x < WP; ++x) d[x] = 0;
        }
        if (L->epilogue == TQ_CODES) {
            /* The channel's requantization and code bounds, read once for its plane (locals: the
               stores cannot change them, so they stay in registers). */
            const tq_activation q = *L->activation;
            const int32_t m = L->mult[o], n = L->shift[o], c = L->bias[o], dtype = L->out_dtype;
            TQ_DW_PLANE(tq_store(out, dtype, (o * OH + y) * OW + x, tq_code(&q, s, m, n, c)));
        } else {
            TQ_DW_PLANE(tq_conv_output(L, o, y, x, s, out, sc));
        }
    }
}
`;
}

/**
 * The triple-MAC kernel of the generated C: dense convs (groups = 1) of 8- or 16-bit inputs whose
 * values and weights are small (kernels.ts decides per layer from the tensor range and the level
 * table), three multiply-accumulates per plain 32-bit multiply-add (`MLA`, every Cortex-M; the
 * same arithmetic in C on the host).
 *
 * Three values go into one word as 10-bit fields: a column word x = a0 + a1 2^10 + a2 2^20 (three
 * consecutive patch elements), a weight word y = w2 + w1 2^10 + w0 2^20 (the same three weights,
 * the order reversed). Then, modulo 2^32,
 *
 *   x y = L + (a0 w0 + a1 w1 + a2 w2) 2^20 + (terms at 2^30 and above),
 *   L = a0 w2 + (a0 w1 + a1 w2) 2^10,
 *
 * so bits 20..29 of x y hold the triple's dot product. Summing n products T = 2^19 + sum x y
 * (signed values too: the identity holds over the integers modulo 2^32), bits 20..29 of T are the
 * n dot products' sum exactly when -2^19 <= sum L < 2^19 and the sum fits a signed 10-bit field.
 * With P = max |value| x max |weight| a step adds at most 3P to the sum and 2049 P to |L|, so for
 * n <= `chunk` (kernels.ts: the largest multiple of 4 with 3 n P <= 511 and 2049 n P < 2^19 that
 * divides the row's words, so each chunk is whole) the
 * field is exact; the kernel sign-extends it into an int32 sum every `chunk` steps and starts T
 * afresh. The sums are then the engine's exactly, like the dual-MAC kernel's (runtime-dsp.ts),
 * whose block scheme this kernel shares (blockKernel): per step of the 2 x 2 dot one double word
 * of a channel pair's interleaved rows, one of a pixel pair's interleaved columns and four MLAs,
 * 12 MACs where the dual-MAC kernel's step does 8.
 *
 * Rows and columns hold `even` / 2 words (patch / 3 rounded up to a multiple of 4, the dot's unroll),
 * zeros after the patch; a 3x3 window's row of one channel is exactly one word.
 */
import type { DType } from '../ir.js';
import { type BlockFamily, blockKernel } from './runtime-dsp.js';

/** The triple packing, weight rows and the 2 x 2 dot, emitted once when a model has a conv on the triple-MAC kernel. */
export const TRIPLE_DENSE = String.raw`
/* first + second * 2^10 + third * 2^20 modulo 2^32: three values as 10-bit fields (signed values
   borrow from the field above; the products' sums come out right all the same). */
static uint32_t tq_triple(int32_t first, int32_t second, int32_t third)
{
    return (uint32_t)first + ((uint32_t)second << 10) + ((uint32_t)third << 20);
}

/* Bits 20..29 of t, sign-extended: the dot products' sum (t started at 2^19, see the kernel). */
static int32_t tq_triple_sum(uint32_t t)
{
    return (int32_t)(t << 2) >> 22;
}

/* The weights of output channel o as triple words, the order reversed in each (zeros after the
   patch), in every other word of dst (even / 2 words). */
static void tq_weight_triples(const tq_conv *L, int32_t o, int32_t patch, int32_t even, uint32_t *dst)
{
    const uint32_t bits = L->bits;
    uint32_t bit = (uint32_t)o * (uint32_t)patch * bits;
    int32_t k;
    for (k = 0; k + 3 <= patch; k += 3, bit += 3u * bits, dst += 2) dst[0] = tq_triple(tq_weight(L, bit + 2u * bits), tq_weight(L, bit + bits), tq_weight(L, bit));
    if (k < patch) dst[0] = tq_triple(0, k + 1 < patch ? tq_weight(L, bit + bits) : 0, tq_weight(L, bit)), dst += 2, k += 3;
    for (; k < 3 * (even / 2); k += 3, dst += 2) dst[0] = 0;
}

/* Sums of a channel pair's interleaved rows w with a pixel pair's interleaved columns a (even
   words, a multiple of 8): s[2 * channel + pixel]. Each step loads a word of each row and column
   and does four multiply-adds (12 MACs), four steps a loop; every chunk steps (a multiple of 4
   dividing even / 2, kernels.ts) the four fields go into the int32 sums. On Thumb-2 (Cortex-M3 and up) a step is written out as
   two LDRD with post-increment and four MLA: as C, GCC reassociates the unrolled steps' sums into
   separate multiplies and adds, and hoists loads until registers spill. */
#if defined(__ARM_ARCH_ISA_THUMB) && __ARM_ARCH_ISA_THUMB >= 2
#define TQ_DOT3_STEP() \
    __asm__("ldrd %[v0], %[v1], [%[w]], #8\n\t" \
            "ldrd %[x0], %[x1], [%[a]], #8\n\t" \
            "mla %[t00], %[v0], %[x0], %[t00]\n\t" \
            "mla %[t01], %[v0], %[x1], %[t01]\n\t" \
            "mla %[t10], %[v1], %[x0], %[t10]\n\t" \
            "mla %[t11], %[v1], %[x1], %[t11]" \
            : [t00] "+r"(t00), [t01] "+r"(t01), [t10] "+r"(t10), [t11] "+r"(t11), [w] "+r"(w), [a] "+r"(a), \
              [v0] "=&r"(v0), [v1] "=&r"(v1), [x0] "=&r"(x0), [x1] "=&r"(x1) \
            : "m"(*(const uint32_t(*)[2])w), "m"(*(const uint32_t(*)[2])a))
#else
#define TQ_DOT3_STEP() \
    do { \
        tq_load2(w, v0, v1); \
        tq_load2(a, x0, x1); \
        t00 += v0 * x0; \
        t01 += v0 * x1; \
        t10 += v1 * x0; \
        t11 += v1 * x1; \
    } while (0)
#endif
static void tq_dot3_2x2(const uint32_t *w, const uint32_t *a, int32_t even, int32_t chunk, int32_t *s)
{
    const uint32_t *const end = a + even;
    int32_t s00 = 0, s01 = 0, s10 = 0, s11 = 0;
    uint32_t v0, v1, x0, x1;
    do {
        const uint32_t *const stop = a + 2 * chunk;
        /* 2^19: the low part L is rounded away when the field is read. */
        uint32_t t00 = 1u << 19, t01 = 1u << 19, t10 = 1u << 19, t11 = 1u << 19;
        do {
            TQ_DOT3_STEP();
            TQ_DOT3_STEP();
            TQ_DOT3_STEP();
            TQ_DOT3_STEP();
        } while (a < stop);
        s00 += tq_triple_sum(t00), s01 += tq_triple_sum(t01), s10 += tq_triple_sum(t10), s11 += tq_triple_sum(t11);
    } while (a < end);
    s[0] = s00, s[1] = s01, s[2] = s10, s[3] = s11;
}
#undef TQ_DOT3_STEP
`;

const TRIPLE_MAC: BlockFamily = {
  kind: 'triple',
  im2colSuffix: '3',
  parameters: ', int32_t chunk',
  dotArguments: ', chunk',
  even: '(((patch + 2) / 3 + 3) & ~3) * 2',
  rows: 'tq_weight_triples',
  dot: 'tq_dot3_2x2',
  words: "a channel pair's two interleaved in even words, then the two pixels' interleaved columns\n   (even words), triple words each; chunk: dot steps between reading the fields (kernels.ts)",
};

/** The triple im2col and the kernel (tq_conv_triple_NAME) for inputs of one element type. */
export function tripleConv(dtype: DType, cType: string): string {
  return (
    String.raw`
/* The window of output pixel (y, x) over all input channels as triple words (patch order: channel,
   kernel row, kernel column; zeros outside the input and after the patch) in every other word of
   col, even / 2 words. */
static void tq_im2col3_${dtype}(const tq_conv *L, const ${cType} *in, int32_t y, int32_t x, int32_t even, uint32_t *col)
{
    const int32_t KH = L->kernel_h, KW = L->kernel_w, H = L->in_h, W = L->in_w, C = L->group_in, HW = H * W;
    const int32_t top = y * L->stride_h - L->pad_h, left = x * L->stride_w - L->pad_w;
    uint32_t *const last = col + even;
    int32_t c, i, j;
    if (KH == 3 && KW == 3) {
        /* A window row of one channel is one word. */
        if (top >= 0 && left >= 0 && top + 3 <= H && left + 3 <= W) {
            const ${cType} *r0 = in + top * W + left, *r1 = r0 + W, *r2 = r1 + W;
            for (c = 0; c < C; ++c, r0 += HW, r1 += HW, r2 += HW, col += 6) {
                col[0] = tq_triple(r0[0], r0[1], r0[2]), col[2] = tq_triple(r1[0], r1[1], r1[2]), col[4] = tq_triple(r2[0], r2[1], r2[2]);
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
            for (c = 0; c < C; ++c, a += HW, col += 6) {
#define TQ_AT(t) (at[t] >= 0 ? a[at[t]] : 0)
                col[0] = tq_triple(TQ_AT(0), TQ_AT(1), TQ_AT(2)), col[2] = tq_triple(TQ_AT(3), TQ_AT(4), TQ_AT(5)), col[4] = tq_triple(TQ_AT(6), TQ_AT(7), TQ_AT(8));
#undef TQ_AT
            }
        }
    } else {
        /* Any other window, value by value: field f of the word being filled. */
        uint32_t word = 0;
        int32_t f = 0;
        for (c = 0; c < C; ++c)
            for (i = 0; i < KH; ++i)
                for (j = 0; j < KW; ++j) {
                    const int32_t r = top + i, q = left + j;
                    word += (uint32_t)(r >= 0 && r < H && q >= 0 && q < W ? in[(c * H + r) * W + q] : 0) << (10 * f);
                    if (++f == 3) col[0] = word, col += 2, word = 0, f = 0;
                }
        if (f > 0) col[0] = word, col += 2;
    }
    for (; col < last; col += 2) col[0] = 0;
}
` + blockKernel(dtype, cType, TRIPLE_MAC)
  );
}

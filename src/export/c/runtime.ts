/**
 * The fixed part of the generated C (C99, integers only, no allocation, no library calls): the
 * operations of an integer model (ir.ts), each computing exactly what src/export/engine.ts
 * computes. Only the parts a model uses are emitted, so the file compiles without warnings under
 * -Wall -Wextra. Rounding and `>>` of negative values follow int-ops.ts: arithmetic right shifts
 * (what GCC, Clang and Arm compilers do; C99 leaves it implementation-defined).
 *
 * Convolution: dense convs of 8- and 16-bit inputs usually run the dual-MAC kernel of
 * runtime-dsp.ts (with small values and weights the triple-MAC kernel of runtime-triple.ts), and
 * 3x3 depthwise convs its depthwise kernel (kernels.ts chooses); the others run
 * the generic kernel here, which shares the struct, the weight decoding and the epilogue
 * (tq_conv_output) with them. Generic kernel: per output
 * channel, the weight row is decoded from its packed codes into int16 values (once per channel), each output pixel's window sum over the channels of its group goes
 * into an int32 accumulator plane, and the epilogue requantizes the plane. Dense multiplies (one
 * MLA per MAC on a Cortex-M4): the sums are the engine's exactly (integer sums that never
 * overflow, checked when the model was validated), whatever the order or the engine's arithmetic
 * path (multiply or shift-add). Convs with one input channel per group (depthwise) have their own
 * accumulate function, the same loops with the channel count a constant 1, so the compiler drops
 * the channel loops. Clipped ReLUs cost nothing here: the generator folds ceilings into the tables
 * (clip.ts).
 */
import type { DType } from '../ir.js';
import { DSP_COMMON, DSP_DENSE, DSP_DEPTHWISE, LOAD2, dspConv, dspConvPacked, dspDepthwise } from './runtime-dsp.js';
import { TRIPLE_DENSE, tripleConv } from './runtime-triple.js';

/** The C element type of each storage type. */
const C_TYPE: Readonly<Record<DType, string>> = { int8: 'int8_t', uint8: 'uint8_t', int16: 'int16_t', int32: 'int32_t' };
/** The runtime's dtype tags. */
export const C_DTYPE_TAG: Readonly<Record<DType, string>> = { int8: 'TQ_INT8', uint8: 'TQ_UINT8', int16: 'TQ_INT16', int32: 'TQ_INT32' };

/** Which parts of the runtime a model needs. */
export interface RuntimeUse {
  /** Element types that convolutions with several input channels per group read (one accumulate function each). */
  readonly convInputs: readonly DType[];
  /** Element types that convolutions with one input channel per group (depthwise) read. */
  readonly depthwiseInputs: readonly DType[];
  /** Element types that dense convolutions on the dual-MAC kernel read (runtime-dsp.ts; default none). */
  readonly dspInputs?: readonly DType[];
  /** Element types that 3x3 depthwise convs on the dual-MAC depthwise kernel read (runtime-dsp.ts; default none). */
  readonly dspDepthwiseInputs?: readonly DType[];
  /** Element types that dense convolutions on the triple-MAC kernel read (runtime-triple.ts; default none). */
  readonly tripleInputs?: readonly DType[];
  /** Whether a dense conv on the dual-MAC kernel reads packed 4-bit codes (runtime-dsp.ts). */
  readonly dspPacked?: boolean;
  /** Whether any tensor is stored packed (TQ_U4 in the tagged load and store). */
  readonly packed?: boolean;
  readonly unrolled: UnrolledKernels;
  readonly quantize: boolean;
  /** Whether a quantize op from int8 to bytes keeps two roundings (its typed loop; one-rounding.ts). */
  readonly quantizeTwoRoundings?: boolean;
  /** sumpool or maxpool ops. */
  readonly pool: boolean;
  readonly add: boolean;
}

/* The packed cases of tq_load and tq_store, emitted only for models with packed tensors (they cost the switch instructions). */
const U4_LOAD = '    case TQ_U4: return ((const uint8_t *)p)[i >> 1] >> ((i & 1) << 2) & 15;\n';
const U4_STORE = String.raw`    case TQ_U4: {
        /* Read-modify-write: the neighbouring code in the byte is kept. */
        uint8_t *const b = (uint8_t *)p + (i >> 1);
        *b = (uint8_t)(i & 1 ? (*b & 0x0fu) | (uint32_t)v << 4 : (*b & 0xf0u) | (uint32_t)v);
        break;
    }
`;

const common = (packed: boolean): string => String.raw`
/* TQ_U4: codes 0..15 two a byte, element i in byte i / 2, the low nibble for even i. */
enum { TQ_INT8, TQ_UINT8, TQ_INT16, TQ_INT32, TQ_U4 };

static int32_t tq_load(const void *p, int dtype, int32_t i)
{
    switch (dtype) {
${packed ? U4_LOAD : ''}    case TQ_INT8: return ((const int8_t *)p)[i];
    case TQ_UINT8: return ((const uint8_t *)p)[i];
    case TQ_INT16: return ((const int16_t *)p)[i];
    default: return ((const int32_t *)p)[i];
    }
}

static void tq_store(void *p, int dtype, int32_t i, int32_t v)
{
    switch (dtype) {
${packed ? U4_STORE : ''}    case TQ_INT8: ((int8_t *)p)[i] = (int8_t)v; break;
    case TQ_UINT8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case TQ_INT16: ((int16_t *)p)[i] = (int16_t)v; break;
    default: ((int32_t *)p)[i] = v; break;
    }
}

/* Rounding multiply-shift: floor((a * m + 2^(n-1)) / 2^n), a * m for n = 0 (int-ops.ts). For n > 32
   the same value from the product's high word: floor((p + 2^(n-1)) / 2^n) = ceil(q / 2) with
   q = floor(p / 2^(n-1)) = floor(high / 2^(n-33)), two 32-bit shifts instead of a 64-bit one. */
static int32_t tq_rms(int32_t a, int32_t m, int32_t n)
{
    const int64_t p = (int64_t)a * m;
    if (n > 32) {
        const int32_t q = (int32_t)(p >> 32) >> (n - 33);
        return (q >> 1) + (q & 1);
    }
    if (n == 0) return (int32_t)p;
    return (int32_t)((p + ((int64_t)1 << (n - 1))) >> n);
}

/* The image through the per-channel lookup table (normalization folded in) into channel planes;
   pixel p of channel c is image[c * channel_stride + p * pixel_stride]. */
static void tq_input(const uint8_t *image, const int16_t *lut, void *out, int dtype, int32_t channels, int32_t plane,
                     int32_t channel_stride, int32_t pixel_stride)
{
    int32_t c, p;
    for (c = 0; c < channels; ++c)
        for (p = 0; p < plane; ++p) tq_store(out, dtype, c * plane + p, lut[c * 256 + image[c * channel_stride + p * pixel_stride]]);
}
`;

const CLAMP = String.raw`
/* min(max(v, lo), hi): lo > hi gives hi (see clip.ts). */
static int32_t tq_clamp(int32_t v, int32_t lo, int32_t hi)
{
    if (v < lo) v = lo;
    return v > hi ? hi : v;
}
`;

const ACTIVATION = String.raw`
/* Activation quantization of a requantized value v: the ReLU (v = max(v, floor): the zero point, or
   INT32_MIN without ReLU), then thresholds (non-uniform levels; ties to the lower level) or uniform
   rounding (ties to the lower code). Tags and counts are narrow: these tables are flash. */
typedef struct {
    const int32_t *thresholds; /* ascending, count entries; NULL: uniform rounding */
    const int16_t *values;     /* count + 1 entries */
    int32_t floor, min_code, max_code;
    int16_t count;
    uint8_t frac_bits;
    uint8_t one_rounding; /* tq_code, not tq_activation_value: the requantization's bias table holds c */
} tq_activation;

/* Inlined into the output loops: GCC's heuristics would keep these epilogues calls. */
#if defined(__GNUC__)
#define TQ_INLINE __attribute__((always_inline)) inline
#else
#define TQ_INLINE inline
#endif

/* a * m + c * 2^(n-1) in 64 bits (1 <= n <= 31): the requantization's product with the bias and
   rounding terms folded into c (one-rounding.ts). Two multiplies, SMULL and SMLAL on a Cortex-M. */
static TQ_INLINE int64_t tq_rounding_sum(int32_t a, int32_t m, int32_t n, int32_t c)
{
    return (int64_t)c * (1 << (n - 1)) + (int64_t)a * m;
}

/* The code of a value a requantized by multiplier m and shift n, with requantization and rounding
   as one rounding (c is the bias table's entry): floor(tq_rounding_sum / 2^(n+f)), clamped, from
   the sum's high word (32 <= n + f <= 63). */
static TQ_INLINE int32_t tq_code(const tq_activation *q, int32_t a, int32_t m, int32_t n, int32_t c)
{
    return tq_clamp((int32_t)(tq_rounding_sum(a, m, n, c) >> 32) >> (n + q->frac_bits - 32), q->min_code, q->max_code);
}

static int32_t tq_activation_value(const tq_activation *q, int32_t v)
{
    int32_t k;
    if (v < q->floor) v = q->floor;
    if (q->thresholds) {
        int32_t lo = 0, hi = q->count;
        while (lo < hi) {
            int32_t mid = (lo + hi) >> 1;
            if (v > q->thresholds[mid]) lo = mid + 1;
            else hi = mid;
        }
        return q->values[lo];
    }
    k = q->frac_bits == 0 ? v : (v + (1 << (q->frac_bits - 1)) - 1) >> q->frac_bits;
    return k < q->min_code ? q->min_code : k > q->max_code ? q->max_code : k;
}
`;

const CONV = String.raw`
enum { TQ_ACTIVATION, TQ_CODES, TQ_RESIDUAL, TQ_LOGITS };

typedef struct {
    int32_t mult, shift, stride, channel_offset;
    int32_t channels, height, width, dtype;
} tq_shortcut;

typedef struct {
    const uint8_t *codes;  /* level index per weight, OIHW, bits each, LSB first, one pad byte */
    const int16_t *levels; /* level index -> integer weight */
    const int32_t *mult;   /* requantization per output channel */
    const uint8_t *shift;
    const int32_t *bias;
    const tq_activation *activation;  /* TQ_ACTIVATION, TQ_CODES */
    const tq_shortcut *shortcut;      /* TQ_RESIDUAL, may be NULL */
    int32_t residual_lo, residual_hi; /* TQ_RESIDUAL: ReLU, ceiling and saturation as one clamp */
    int32_t in_h, in_w, out_c, out_h, out_w;
    int32_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
    int32_t group_in, groups;         /* input channels per group, groups */
    uint8_t bits, epilogue, out_dtype;
    uint8_t folded;                   /* not TQ_CODES: the bias table holds 2 * bias + 1 (tq_rms_folded) */
} tq_conv;

/* The integer weight whose code starts at the given bit of the packed codes. */
static int32_t tq_weight(const tq_conv *L, uint32_t bit)
{
    const uint32_t pair = L->codes[bit >> 3] | ((uint32_t)L->codes[(bit >> 3) + 1] << 8);
    return L->levels[(pair >> (bit & 7u)) & ((1u << L->bits) - 1u)];
}

static TQ_INLINE int32_t tq_residual(const tq_conv *L, int32_t o, int32_t y, int32_t x, int32_t v, const void *sc)
{
    const tq_shortcut *s = L->shortcut;
    if (s) {
        int32_t c = o - s->channel_offset;
        if (c >= 0 && c < s->channels) {
            int32_t i = (c * s->height + y * s->stride) * s->width + x * s->stride;
            const int32_t a = tq_load(sc, s->dtype, i);
            v += s->shift == 0 ? a * s->mult : tq_rms(a, s->mult, s->shift);
        }
    }
    return tq_clamp(v, L->residual_lo, L->residual_hi);
}

/* tq_rms(a, m, n) + b with the bias inside the rounding (c = 2 * b + 1, 1 <= n <= 31):
   floor(tq_rounding_sum / 2^n), its two words shifted. */
static TQ_INLINE int32_t tq_rms_folded(int32_t a, int32_t m, int32_t n, int32_t c)
{
    const int64_t x = tq_rounding_sum(a, m, n, c);
    return (int32_t)((uint32_t)(x >> 32) << (32 - n) | (uint32_t)x >> n);
}

/* Requantizes the window sum of output channel o at pixel (y, x) and stores it (the epilogue of every conv kernel). */
static TQ_INLINE void tq_conv_output(const tq_conv *L, int32_t o, int32_t y, int32_t x, int32_t sum, void *out, const void *sc)
{
    int32_t v;
    if (L->epilogue == TQ_CODES) {
        v = tq_code(L->activation, sum, L->mult[o], L->shift[o], L->bias[o]);
    } else {
        v = L->folded ? tq_rms_folded(sum, L->mult[o], L->shift[o], L->bias[o]) : tq_rms(sum, L->mult[o], L->shift[o]) + L->bias[o];
        if (L->epilogue == TQ_ACTIVATION) v = tq_activation_value(L->activation, v);
        else if (L->epilogue == TQ_RESIDUAL) v = tq_residual(L, o, y, x, v, sc);
    }
    tq_store(out, L->out_dtype, (o * L->out_h + y) * L->out_w + x, v);
}
`;

const CONV_GENERIC = String.raw`
/* Convs the DSP kernel does not take (runtime-dsp.ts): per output channel, the decoded weight row,
   the window sums into the accumulator plane, then the epilogue. */
typedef void (*tq_accumulate)(const tq_conv *L, const void *input, int32_t first, const int16_t *row, int32_t *acc);

/* The n integer weights of output channel o. */
static void tq_weight_row(const tq_conv *L, int32_t o, int32_t n, int16_t *row)
{
    uint32_t bit = (uint32_t)o * (uint32_t)n * (uint32_t)L->bits;
    int32_t k;
    for (k = 0; k < n; ++k, bit += (uint32_t)L->bits) row[k] = (int16_t)tq_weight(L, bit);
}

static void tq_conv_run(const tq_conv *L, tq_accumulate accumulate, const void *in, void *out, const void *sc, void *scratch)
{
    const int32_t out_h = L->out_h, out_w = L->out_w, plane = out_h * out_w;
    const int32_t patch = L->group_in * L->kernel_h * L->kernel_w, group_out = L->out_c / L->groups;
    int32_t *acc = (int32_t *)scratch;
    int16_t *row = (int16_t *)(acc + plane);
    int32_t o, y, x;
    for (o = 0; o < L->out_c; ++o) {
        tq_weight_row(L, o, patch, row);
        accumulate(L, in, o / group_out * L->group_in, row, acc);
        for (y = 0; y < out_h; ++y)
            for (x = 0; x < out_w; ++x) tq_conv_output(L, o, y, x, acc[y * out_w + x], out, sc);
    }
}
`;

/** A run of neighbouring output pixels whose windows have the same part inside the input. */
interface WindowBlock {
  /** Pixels (sums) at once. */
  readonly pixels: number;
  /** Input columns between neighbouring windows: the stride, known to be 1 or read from S. */
  readonly step: '1' | 'S';
  /** The kernel's width (the unrolled kernels are square: 3x3 and 1x1). */
  readonly kernel: number;
  /** Window rows and columns inside the input (the kernel inside, one less at a 3x3 border). */
  readonly rows: number;
  readonly cols: number;
}

/**
 * C statements summing the windows of a block (each ends with `continue`): per input channel each
 * weight of the window's inside part is loaded once and multiplies one input of each pixel.
 * Expects in, row, top, left, i0, j0, W, H, C, out, x and sum in scope.
 */
function windowBlock(type: string, b: WindowBlock): string {
  const sums = ['sum', ...Array.from({ length: b.pixels - 1 }, (_, p) => `s${p + 1}`)];
  const column = (p: number, j: number): string => (p === 0 ? `${j}` : b.step === '1' ? `${p + j}` : `${p === 1 ? 'S' : `${p} * S`} + ${j}`);
  const taps: string[] = [];
  for (let r = 0; r < b.rows; r++) {
    for (let j = 0; j < b.cols; j++) taps.push(`k = w[${r * b.kernel + j}];${sums.map((sum, p) => ` ${sum} += k * r${r}[${column(p, j)}];`).join('')}`);
  }
  const pad = '                    ';
  const lines = [
    `const ${type} *r0 = in + (top + i0) * W + left + j0;`,
    `const int16_t *w = row + i0 * ${b.kernel} + j0;`,
    ...(b.pixels > 1 ? [`int32_t ${sums.slice(1).map((sum) => `${sum} = 0`).join(', ')};`] : []),
    `for (c = 0; c < C; ++c, w += ${b.kernel * b.kernel}, r0 += H * W) {`,
    ...(b.rows > 1 ? [`    const ${type} *${Array.from({ length: b.rows - 1 }, (_, r) => `r${r + 1} = r${r} + W`).join(', *')};`] : []),
    '    int32_t k;',
    ...taps.map((t) => `    ${t}`),
    '}',
    sums.map((sum, p) => `out[x${p ? ` + ${p}` : ''}] = ${sum};`).join(' '),
    ...(b.pixels > 1 ? [`x += ${b.pixels - 1};`] : []),
    'continue;',
  ];
  return `${pad}{\n${lines.map((l) => `${pad}    ${l}`).join('\n')}\n${pad}}`;
}

/** Kernel shapes with unrolled window blocks; a model gets only those of its convs (flash). */
export interface UnrolledKernels {
  /** 3x3 kernels. */
  readonly k3: boolean;
  /** 1x1 kernels over more than one output pixel (pointwise convs; not a linear layer's single pixel). */
  readonly k1: boolean;
}

/**
 * acc[pixel] = sum over the window of weight * input, for inputs of `dtype`, over the input
 * channels of one group (`depthwise`: exactly one, a constant, so the channel loops vanish). Per
 * output pixel the sum stays in a register; only the part of the window inside the input is
 * summed (padding adds zero). 3x3 windows are unrolled for each shape of that part (inside, at an
 * edge, at a corner), four (stride 1) or two neighbouring windows of the same shape sharing each
 * weight load; 1x1 windows go four at a time at any stride. Other windows take the general loop.
 */
function accumulate(dtype: DType, depthwise: boolean, unrolled: UnrolledKernels): string {
  const type = C_TYPE[dtype];
  const block = (pixels: number, step: '1' | 'S', kernel: number, rows: number, cols: number): string => windowBlock(type, { pixels, step, kernel, rows, cols });
  const shapes = [...(unrolled.k3 ? ['K3 = KH == 3 && KW == 3'] : []), ...(unrolled.k1 ? ['K1 = KH == 1 && KW == 1'] : [])];
  const k3 = String.raw`
            if (K3 && j1 - j0 == 3 && (i1 - i0 == 3 || i1 - i0 == 2)) {
                /* Full window rows: runs of neighbours (their windows start inside, and the last one ends inside). */
                if (S == 1 && x + 3 < L->out_w && W - left >= 6) {
                    if (i1 - i0 == 3)
${block(4, '1', 3, 3, 3)}
${block(4, '1', 3, 2, 3)}
                }
                if (i1 - i0 == 3 && x + 1 < L->out_w && W - left - S >= 3)
${block(2, 'S', 3, 3, 3)}
                if (i1 - i0 == 3)
${block(1, '1', 3, 3, 3)}
${block(1, '1', 3, 2, 3)}
            }
            if (K3 && j1 - j0 == 2 && i1 - i0 == 3)
${block(1, '1', 3, 3, 2)}
            if (K3 && j1 - j0 == 2 && i1 - i0 == 2)
${block(1, '1', 3, 2, 2)}`;
  const k1 = String.raw`
            if (K1 && i1 - i0 == 1 && j1 - j0 == 1) {
                if (x + 3 < L->out_w && W - left - 3 * S >= 1)
${block(4, 'S', 1, 1, 1)}
${block(1, '1', 1, 1, 1)}
            }`;
  return String.raw`
static void tq_${depthwise ? 'depthwise' : 'accumulate'}_${dtype}(const tq_conv *L, const void *input, int32_t first, const int16_t *row, int32_t *acc)
{
    const int32_t KH = L->kernel_h, KW = L->kernel_w, SH = L->stride_h, S = L->stride_w, H = L->in_h, W = L->in_w;
    const int32_t C = ${depthwise ? '1' : 'L->group_in'}${shapes.map((d) => `, ${d}`).join('')};${shapes.length > 0 ? ' /* kernel shapes tested once: keeps the hot loop\'s registers free */' : ''}
    const ${type} *in = (const ${type} *)input + first * H * W;
    int32_t y, x, c, i, j, i0, i1, j0, j1;
    for (y = 0; y < L->out_h; ++y) {
        const int32_t top = y * SH - L->pad_h;
        int32_t *out = acc + y * L->out_w;
        i0 = top < 0 ? -top : 0;
        i1 = H - top < KH ? H - top : KH;
        for (x = 0; x < L->out_w; ++x) {
            const int32_t left = x * S - L->pad_w;
            int32_t sum = 0;
            j0 = left < 0 ? -left : 0;
            j1 = W - left < KW ? W - left : KW;${unrolled.k3 ? k3 : ''}${unrolled.k1 ? k1 : ''}
            /* Any other window: rows i0..i1-1, columns j0..j1-1 of it. */
            for (c = 0; c < C; ++c)
                for (i = i0; i < i1; ++i) {
                    const ${type} *src = in + (c * H + top + i) * W + left + j0;
                    const int16_t *w = row + (c * KH + i) * KW + j0;
                    for (j = 0; j < j1 - j0; ++j) sum += w[j] * src[j];
                }
            out[x] = sum;
        }
    }
}
`;
}

/* Packed outputs (codes in 0..15, planes of even size): two codes a byte, no read-modify-write. */
const U4_QUANTIZE = String.raw`
#define TQ_CODES_TO_U4(in_type) \
    for (i = c * plane; i < (c + 1) * plane; i += 2) \
        ((uint8_t *)out)[i >> 1] = (uint8_t)(tq_code(&act, ((const in_type *)in)[i], mult, shift, bias) | \
                                             tq_code(&act, ((const in_type *)in)[i + 1], mult, shift, bias) << 4)
        else if (q->activation.one_rounding && out_dtype == TQ_U4 && (plane & 1) == 0 && in_dtype == TQ_INT16) TQ_CODES_TO_U4(int16_t);
        else if (q->activation.one_rounding && out_dtype == TQ_U4 && (plane & 1) == 0 && in_dtype == TQ_INT8) TQ_CODES_TO_U4(int8_t);
#undef TQ_CODES_TO_U4
`;

/* An int8 stream to bytes with two roundings (emitted only where a quantize op is one), without the tagged load and store. */
const INT8_VALUES_TO_UINT8 = String.raw`
        else if (!q->activation.one_rounding && out_dtype == TQ_UINT8 && in_dtype == TQ_INT8)
            for (i = c * plane; i < (c + 1) * plane; ++i) ((uint8_t *)out)[i] = (uint8_t)tq_activation_value(&act, tq_rms(((const int8_t *)in)[i], mult, shift) + bias);
`;

const quantize = (packed: boolean, twoRoundings: boolean): string => String.raw`
typedef struct {
    const int32_t *mult; /* one entry per channel, or one for all */
    const uint8_t *shift;
    const int32_t *bias;
    tq_activation activation;
    int32_t plane, channels;
    uint8_t per_channel, in_dtype, out_dtype;
} tq_quantize_op;

static void tq_quantize(const tq_quantize_op *q, const void *in, void *out)
{
    const int32_t plane = q->plane, in_dtype = q->in_dtype, out_dtype = q->out_dtype;
    /* A local copy: the byte stores could alias q's tables, so its fields would be reloaded per element. */
    const tq_activation act = q->activation;
    int32_t c, i;
    for (c = 0; c < q->channels; ++c) {
        const int32_t r = q->per_channel ? c : 0;
        const int32_t mult = q->mult[r], shift = q->shift[r], bias = q->bias[r];
        /* The common cases, a residual stream to unsigned codes, without the tagged load and store per element. */
#define TQ_CODES_TO_UINT8(in_type) \
    for (i = c * plane; i < (c + 1) * plane; ++i) ((uint8_t *)out)[i] = (uint8_t)tq_code(&act, ((const in_type *)in)[i], mult, shift, bias)
        if (q->activation.one_rounding && out_dtype == TQ_UINT8 && in_dtype == TQ_INT16) TQ_CODES_TO_UINT8(int16_t);
        else if (q->activation.one_rounding && out_dtype == TQ_UINT8 && in_dtype == TQ_INT8) TQ_CODES_TO_UINT8(int8_t);
#undef TQ_CODES_TO_UINT8
${packed ? U4_QUANTIZE : ''}${twoRoundings ? INT8_VALUES_TO_UINT8 : ''}        else if (q->activation.one_rounding)
            for (i = c * plane; i < (c + 1) * plane; ++i) tq_store(out, out_dtype, i, tq_code(&q->activation, tq_load(in, in_dtype, i), mult, shift, bias));
        else
            for (i = c * plane; i < (c + 1) * plane; ++i) {
                int32_t v = tq_rms(tq_load(in, in_dtype, i), mult, shift) + bias;
                tq_store(out, out_dtype, i, tq_activation_value(&q->activation, v));
            }
    }
}
`;

const POOL = String.raw`
/* Sum (int32 out) or max (the input's type out) over each window's positions inside the input. */
typedef struct {
    int32_t max, channels, in_h, in_w, out_h, out_w;
    int32_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
    int32_t in_dtype, out_dtype;
} tq_pool_op;

static void tq_pool(const tq_pool_op *p, const void *in, void *out)
{
    const int32_t H = p->in_h, W = p->in_w, in_dtype = p->in_dtype, out_dtype = p->out_dtype, max = p->max;
    int32_t c, y, x, i, j;
    for (c = 0; c < p->channels; ++c)
        for (y = 0; y < p->out_h; ++y) {
            const int32_t top = y * p->stride_h - p->pad_h;
            const int32_t i0 = top < 0 ? 0 : top, i1 = top + p->kernel_h < H ? top + p->kernel_h : H;
            for (x = 0; x < p->out_w; ++x) {
                const int32_t left = x * p->stride_w - p->pad_w;
                const int32_t j0 = left < 0 ? 0 : left, j1 = left + p->kernel_w < W ? left + p->kernel_w : W;
                int32_t v = max ? -2147483647 - 1 : 0;
                for (i = i0; i < i1; ++i)
                    for (j = j0; j < j1; ++j) {
                        const int32_t a = tq_load(in, in_dtype, (c * H + i) * W + j);
                        if (!max) v += a;
                        else if (a > v) v = a;
                    }
                tq_store(out, out_dtype, (c * p->out_h + y) * p->out_w + x, v);
            }
        }
}
`;

const ADD = String.raw`
/* out = clamp(rms(a, a_mult, a_shift) + rms(b, b_mult, b_shift), lo, hi), element by element (in place allowed). */
typedef struct {
    int32_t size, a_mult, b_mult, lo, hi;
    int32_t a_shift, b_shift, a_dtype, b_dtype, out_dtype;
} tq_add_op;

static void tq_add(const tq_add_op *q, const void *a, const void *b, void *out)
{
    int32_t i;
    for (i = 0; i < q->size; ++i) {
        const int32_t v = tq_rms(tq_load(a, q->a_dtype, i), q->a_mult, q->a_shift) + tq_rms(tq_load(b, q->b_dtype, i), q->b_mult, q->b_shift);
        tq_store(out, q->out_dtype, i, tq_clamp(v, q->lo, q->hi));
    }
}
`;

/** The runtime functions a model needs, as C source. */
export function runtimeSource(use: RuntimeUse): string {
  const generic = use.convInputs.length + use.depthwiseInputs.length > 0;
  const dsp = use.dspInputs ?? [];
  const depthwise = use.dspDepthwiseInputs ?? [];
  const triple = use.tripleInputs ?? [];
  const dense = dsp.length > 0 || use.dspPacked === true;
  const convs = generic || dense || triple.length > 0 || depthwise.length > 0;
  const parts = [common(use.packed === true)];
  // Residual epilogues, add ops and codes share the clamp; conv epilogues and quantize ops the activation quantization.
  if (convs || use.add || use.quantize) parts.push(CLAMP);
  if (convs || use.quantize) parts.push(ACTIVATION);
  if (convs) parts.push(CONV);
  if (generic) parts.push(CONV_GENERIC, ...use.convInputs.map((t) => accumulate(t, false, use.unrolled)), ...use.depthwiseInputs.map((t) => accumulate(t, true, use.unrolled)));
  if (dense || depthwise.length > 0) parts.push(DSP_COMMON);
  if (dense || triple.length > 0) parts.push(LOAD2);
  if (dense) parts.push(DSP_DENSE, ...dsp.map((t) => dspConv(t, C_TYPE[t])), ...(use.dspPacked ? [dspConvPacked()] : []));
  if (triple.length > 0) parts.push(TRIPLE_DENSE, ...triple.map((t) => tripleConv(t, C_TYPE[t])));
  if (depthwise.length > 0) parts.push(DSP_DEPTHWISE, ...depthwise.map((t) => dspDepthwise(t, C_TYPE[t])));
  if (use.quantize) parts.push(quantize(use.packed === true, use.quantizeTwoRoundings === true));
  if (use.pool) parts.push(POOL);
  if (use.add) parts.push(ADD);
  return parts.join('');
}

// The integer epilogues of the host int8 path (int8_model.cc): requantization, activation codes,
// residual adds, add ops, pooling and the input table, with exactly the arithmetic of the TypeScript
// integer engine (src/export/int-ops.ts, src/export/engine.ts). Every tensor is NHWC: the
// channels of one pixel are contiguous, so per-channel tables index the innermost loop and the
// loops vectorize.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

// The hot loops get an AVX-512 and an AVX2 clone next to the baseline (the addon is compiled for
// plain x86-64); the loader picks one for the CPU it runs on. Other compilers and targets get the
// portable code only.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TQ_CLONES __attribute__((target_clones("default", "avx2", "arch=x86-64-v4")))
#else
#define TQ_CLONES
#endif

namespace tq::int8 {

/** Storage types of the integer model's tensors (ir.ts DType). */
enum class IntType : int { i8 = 0, u8 = 1, i16 = 2, i32 = 3 };

size_t bytesOf(IntType t);

/** Per-channel fixed-point requantization: v = floor((x * mult + 2^(shift-1)) / 2^shift) + bias. */
struct Requant {
  std::vector<int32_t> mult;
  std::vector<int32_t> shift;
  std::vector<int64_t> rounding;  // 2^(shift-1), 0 for shift 0
  std::vector<int32_t> bias;

  Requant() = default;
  Requant(std::vector<int32_t> mult, std::vector<int32_t> shift, std::vector<int32_t> bias);
  size_t channels() const { return mult.size(); }
};

/** The quantization of a requantized value to the integer an activation tensor holds (ir.ts ActivationQuant). */
struct ActivationRule {
  bool relu = false;
  int32_t zeroPoint = 0;
  bool useThresholds = false;
  std::vector<int32_t> thresholds;  // ascending; code = number of thresholds below v
  std::vector<int32_t> values;      // code -> value
  int32_t fracBits = 0;             // round rule: clamp((v + 2^(f-1) - 1) >> f, minCode, maxCode)
  int32_t minCode = 0;
  int32_t maxCode = 0;
};

/** The shortcut term of a residual epilogue: rms(sc[n, y*stride, x*stride, o - offset], mult, shift). */
struct ShortcutAdd {
  const void* data = nullptr;  // NHWC [batch, height, width, channels]
  IntType type = IntType::i16;
  int64_t height = 0, width = 0, channels = 0;
  int64_t stride = 1, offset = 0;
  int32_t mult = 0, shift = 0;
};

/** A kernel's or pooling window's size, stride and zero padding, [height, width] each. */
struct Window {
  int64_t kernelH = 1, kernelW = 1, strideH = 1, strideW = 1, padH = 0, padW = 0;
  int64_t outSize(int64_t size, int64_t kernel, int64_t stride, int64_t pad) const { return (size + 2 * pad - kernel) / stride + 1; }
  int64_t outHeight(int64_t height) const { return outSize(height, kernelH, strideH, padH); }
  int64_t outWidth(int64_t width) const { return outSize(width, kernelW, strideW, padW); }
};

/** Pixels [begin, end) of an NHWC tensor with `channels` channels and `height` x `width` pixels per image. */
struct PixelRange {
  int64_t begin, end;
  int64_t channels;
  int64_t height, width;
};

/** In place: acc[p, c] = rms(acc[p, c], mult[c], shift[c]) + bias[c] for the pixels of `r`. */
void requantize(int32_t* acc, const PixelRange& r, const Requant& q);

/** Elements [0, n) of a row of any storage type, widened to int32. */
void widen(const void* src, IntType type, int64_t first, int64_t n, int32_t* dst);

/**
 * Requantize `rows` pixels of `channels` int32 values, quantize them with `rule` and store them as
 * `type` at element `first` of out (the conv activation epilogue and the quantize op, fused).
 */
void requantizeActivate(const int32_t* in, int64_t rows, int64_t channels, const Requant& q, const ActivationRule& rule, void* out, IntType type, int64_t first);

/**
 * The residual epilogue on accumulators (from pixel r.begin): requantize, + shortcut (when given),
 * then min(max(v, lo), hi) (ReLU, ceiling and saturation folded into one clamp: src/export/clip.ts),
 * store in out (int8 or int16).
 */
void residual(const int32_t* acc, const PixelRange& r, const Requant& q, const ShortcutAdd* sc, int32_t lo, int32_t hi, void* out, IntType type);

/** One input of add(): n elements rescaled by rms(x, mult, shift). */
struct AddTerm {
  const void* data;
  IntType type;
  int32_t mult, shift;
};

/** out[i] = min(max(rms(a[i]) + rms(b[i]), lo), hi) for i in [first, first + n), stored as `type` (int8 or int16; in place allowed). */
void add(const AddTerm& a, const AddTerm& b, int64_t first, int64_t n, int32_t lo, int32_t hi, void* out, IntType type);

/** Narrow n int32 values (already in the type's range) to `type` at element `first` of dst. */
void narrow(const int32_t* src, int64_t n, void* dst, IntType type, int64_t first);

/** Image n (uint8 CHW planes) through the per-channel table into NHWC `out` (int8 or int16). */
void inputTable(const uint8_t* image, int64_t channels, int64_t pixels, const int16_t* lut, void* out, IntType type);

/**
 * One image (NHWC) pooled: per output pixel and channel, the sum (`max` false; int32 out) or the
 * maximum (`max` true; out of the input's type) over the window's positions inside the input.
 */
void pool(const void* in, IntType inType, int64_t height, int64_t width, int64_t channels, const Window& w, bool max, void* out, IntType outType);

/** int16 x = hi * 256 + lo with hi int8, lo uint8 (for int8 convolutions of an int16 tensor). */
void splitInt16(const int16_t* x, int64_t n, int8_t* hi, uint8_t* lo);

/** acc += (term << shift), wrapping in uint32 (the exact total fits int32). */
void accumulateShifted(int32_t* acc, const int32_t* term, int64_t n, int shift);

}  // namespace tq::int8

#include "int8_kernels.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <utility>

// The hot loops get an AVX-512 and an AVX2 clone next to the baseline (the addon is compiled for
// plain x86-64); the loader picks one for the CPU it runs on. Other compilers and targets get the
// portable code only.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TQ_CLONES __attribute__((target_clones("default", "avx2", "arch=x86-64-v4")))
#else
#define TQ_CLONES
#endif

namespace tq::int8 {

size_t bytesOf(IntType t) {
  switch (t) {
    case IntType::i8:
    case IntType::u8:
      return 1;
    case IntType::i16:
      return 2;
    case IntType::i32:
      return 4;
  }
  throw std::invalid_argument("unknown integer type");
}

Requant::Requant(std::vector<int32_t> m, std::vector<int32_t> s, std::vector<int32_t> b)
    : mult(std::move(m)), shift(std::move(s)), rounding(shift.size()), bias(std::move(b)) {
  for (size_t c = 0; c < shift.size(); c++) rounding[c] = shift[c] > 0 ? int64_t{1} << (shift[c] - 1) : 0;
}

namespace {

/** int-ops.ts roundingMulShift: an arithmetic shift of the 64-bit product (the result fits int32). */
inline int32_t roundingMulShift(int32_t a, int32_t mult, int32_t shift, int64_t rounding) {
  return static_cast<int32_t>((static_cast<int64_t>(a) * mult + rounding) >> shift);
}

template <class T>
TQ_CLONES void widenT(const T* src, int64_t n, int32_t* dst) {
  for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

template <class T>
TQ_CLONES void narrowT(const int32_t* src, int64_t n, T* dst) {
  for (int64_t i = 0; i < n; i++) dst[i] = static_cast<T>(src[i]);
}

/** Dispatch on the storage type: body(pointer of that type). */
template <class Ptr, class Body>
void withType(Ptr data, IntType type, Body body) {
  using Byte = std::conditional_t<std::is_const_v<std::remove_pointer_t<Ptr>>, const char, char>;
  auto* bytes = static_cast<Byte*>(data);
  switch (type) {
    case IntType::i8:
      return body(reinterpret_cast<std::conditional_t<std::is_const_v<Byte>, const int8_t*, int8_t*>>(bytes));
    case IntType::u8:
      return body(reinterpret_cast<std::conditional_t<std::is_const_v<Byte>, const uint8_t*, uint8_t*>>(bytes));
    case IntType::i16:
      return body(reinterpret_cast<std::conditional_t<std::is_const_v<Byte>, const int16_t*, int16_t*>>(bytes));
    case IntType::i32:
      return body(reinterpret_cast<std::conditional_t<std::is_const_v<Byte>, const int32_t*, int32_t*>>(bytes));
  }
}

TQ_CLONES void requantizeRows(int32_t* v, int64_t rows, int64_t channels, const int32_t* mult, const int32_t* shift,
    const int64_t* rounding, const int32_t* bias) {
  for (int64_t p = 0; p < rows; p++, v += channels) {
    for (int64_t c = 0; c < channels; c++) v[c] = roundingMulShift(v[c], mult[c], shift[c], rounding[c]) + bias[c];
  }
}

/** The activation rule as the fused kernel uses it: thresholds with value steps (values[k+1] - values[k]). */
struct RuleTables {
  int32_t floor;  // ReLU floor (zero point), INT32_MIN without ReLU
  const int32_t* thresholds;
  int32_t steps[256];
  int64_t count;
  int32_t base;  // values[0]
  int32_t roundBias, fracBits, minCode, maxCode;
};

/** GCC/Clang vector extensions: `Lanes` integers of type T operated on as one value. */
template <class T, int64_t Lanes>
using Vec __attribute__((vector_size(sizeof(T) * Lanes))) = T;

template <class V, class T>
inline V loadVec(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/** Where `mask` (all ones / zeros per lane) is set, b, else a. */
template <class V>
inline V select(V mask, V a, V b) {
  return (a & ~mask) | (b & mask);
}

/**
 * `Lanes` channels at a time (16: one AVX-512 register; 1: any channel count): requantize, ReLU at
 * the zero point, then the code rule. Thresholds become values directly: thresholds ascend, so
 * values[countBelow(v)] = values[0] + the sum of the steps of the thresholds below v (no table
 * lookup, only compares and masked adds).
 */
template <class T, bool Thresholds, int64_t Lanes>
TQ_CLONES void requantizeActivateT(const int32_t* in, int64_t rows, int64_t channels, const Requant& q, const RuleTables& t, T* out) {
  using V32 = Vec<int32_t, Lanes>;
  using V64 = Vec<int64_t, Lanes>;
  using VOut = Vec<T, Lanes>;
  const V32 zero{};
  for (int64_t p = 0; p < rows; p++) {
    const int32_t* x = in + p * channels;
    T* o = out + p * channels;
    for (int64_t c = 0; c < channels; c += Lanes) {
      const V64 product = __builtin_convertvector(loadVec<V32>(x + c), V64) * __builtin_convertvector(loadVec<V32>(q.mult.data() + c), V64) +
          loadVec<V64>(q.rounding.data() + c);
      V32 v = __builtin_convertvector(product >> __builtin_convertvector(loadVec<V32>(q.shift.data() + c), V64), V32) + loadVec<V32>(q.bias.data() + c);
      v = select(v < t.floor, v, zero + t.floor);
      V32 r;
      if constexpr (Thresholds) {
        r = zero + t.base;
        for (int64_t k = 0; k < t.count; k++) r += (v > t.thresholds[k]) & t.steps[k];
      } else {
        r = (v + t.roundBias) >> t.fracBits;
        r = select(r < t.minCode, r, zero + t.minCode);
        r = select(r > t.maxCode, r, zero + t.maxCode);
      }
      const VOut narrowed = __builtin_convertvector(r, VOut);
      std::memcpy(o + c, &narrowed, sizeof narrowed);
    }
  }
}

template <class T, bool Thresholds>
void requantizeActivateLanes(const int32_t* in, int64_t rows, int64_t channels, const Requant& q, const RuleTables& t, T* out) {
  if (channels % 16 == 0) requantizeActivateT<T, Thresholds, 16>(in, rows, channels, q, t, out);
  else requantizeActivateT<T, Thresholds, 1>(in, rows, channels, q, t, out);
}

TQ_CLONES void clampAll(int32_t* v, int64_t n, int32_t lo, int32_t hi) {
  for (int64_t i = 0; i < n; i++) v[i] = std::clamp(v[i], lo, hi);
}

/** v[p, first..last) += rms(shortcut value) for the pixels of r (see residual()). */
template <class T>
TQ_CLONES void addShortcut(int32_t* v, const PixelRange& r, const ShortcutAdd& sc, const T* data, int64_t first, int64_t last) {
  const int64_t pixelsPerImage = r.height * r.width;
  const int64_t rounding = sc.shift > 0 ? int64_t{1} << (sc.shift - 1) : 0;
  for (int64_t p = r.begin; p < r.end; p++) {
    const int64_t image = p / pixelsPerImage, y = (p % pixelsPerImage) / r.width, x = p % r.width;
    const T* in = data + ((image * sc.height + y * sc.stride) * sc.width + x * sc.stride) * sc.channels - sc.offset;
    int32_t* out = v + (p - r.begin) * r.channels;
    for (int64_t c = first; c < last; c++) out[c] += roundingMulShift(in[c], sc.mult, sc.shift, rounding);
  }
}

template <class T>
TQ_CLONES void tableT(const uint8_t* image, int64_t channels, int64_t pixels, const int16_t* lut, T* out) {
  for (int64_t c = 0; c < channels; c++) {
    const uint8_t* plane = image + c * pixels;
    const int16_t* table = lut + c * 256;
    for (int64_t p = 0; p < pixels; p++) out[p * channels + c] = static_cast<T>(table[plane[p]]);
  }
}

template <class T>
TQ_CLONES void sumPoolT(const T* in, int64_t pixels, int64_t channels, int32_t* out) {
  for (int64_t c = 0; c < channels; c++) out[c] = 0;
  for (int64_t p = 0; p < pixels; p++) {
    for (int64_t c = 0; c < channels; c++) out[c] += in[p * channels + c];
  }
}

}  // namespace

void requantize(int32_t* acc, const PixelRange& r, const Requant& q) {
  requantizeRows(acc, r.end - r.begin, r.channels, q.mult.data(), q.shift.data(), q.rounding.data(), q.bias.data());
}

void widen(const void* src, IntType type, int64_t first, int64_t n, int32_t* dst) {
  withType(src, type, [&](auto* s) { widenT(s + first, n, dst); });
}

void narrow(const int32_t* src, int64_t n, void* dst, IntType type, int64_t first) {
  withType(dst, type, [&](auto* d) { narrowT(src, n, d + first); });
}

void requantizeActivate(const int32_t* in, int64_t rows, int64_t channels, const Requant& q, const ActivationRule& rule, void* out, IntType type, int64_t first) {
  RuleTables t{};
  t.floor = rule.relu ? rule.zeroPoint : std::numeric_limits<int32_t>::min();
  t.thresholds = rule.thresholds.data();
  t.count = static_cast<int64_t>(rule.thresholds.size());
  if (t.count > 255) throw std::invalid_argument("an activation rule has more than 255 thresholds");
  for (int64_t k = 0; k < t.count; k++) t.steps[k] = rule.values[k + 1] - rule.values[k];
  t.base = rule.useThresholds ? rule.values[0] : 0;
  t.roundBias = rule.fracBits > 0 ? (int32_t{1} << (rule.fracBits - 1)) - 1 : 0;
  t.fracBits = rule.fracBits;
  t.minCode = rule.minCode;
  t.maxCode = rule.maxCode;
  withType(out, type, [&](auto* o) {
    using T = std::remove_pointer_t<decltype(o)>;
    if (rule.useThresholds) requantizeActivateLanes<T, true>(in, rows, channels, q, t, o + first);
    else requantizeActivateLanes<T, false>(in, rows, channels, q, t, o + first);
  });
}

void residual(int32_t* v, const PixelRange& r, const ShortcutAdd* sc, bool relu, int bits) {
  const int64_t n = (r.end - r.begin) * r.channels;
  if (sc) {
    // Output channels [first, last) have a shortcut channel (option A pads zero channels around it).
    const int64_t first = std::max<int64_t>(0, sc->offset);
    const int64_t last = std::min(r.channels, sc->offset + sc->channels);
    if (first < last) withType(sc->data, sc->type, [&](const auto* data) { addShortcut(v, r, *sc, data, first, last); });
  }
  const int32_t limit = int32_t{1} << (bits - 1);
  clampAll(v, n, relu ? 0 : -limit, limit - 1);
}

void inputTable(const uint8_t* image, int64_t channels, int64_t pixels, const int16_t* lut, void* out, IntType type) {
  withType(out, type, [&](auto* o) { tableT(image, channels, pixels, lut, o); });
}

void sumPool(const void* in, IntType type, int64_t pixels, int64_t channels, int32_t* out) {
  withType(in, type, [&](const auto* i) { sumPoolT(i, pixels, channels, out); });
}

TQ_CLONES void splitInt16(const int16_t* x, int64_t n, int8_t* hi, uint8_t* lo) {
  for (int64_t i = 0; i < n; i++) {
    hi[i] = static_cast<int8_t>(x[i] >> 8);
    lo[i] = static_cast<uint8_t>(x[i] & 0xff);
  }
}

TQ_CLONES void accumulateShifted(int32_t* acc, const int32_t* term, int64_t n, int shift) {
  for (int64_t i = 0; i < n; i++) {
    acc[i] = static_cast<int32_t>(static_cast<uint32_t>(acc[i]) + (static_cast<uint32_t>(term[i]) << shift));
  }
}

}  // namespace tq::int8

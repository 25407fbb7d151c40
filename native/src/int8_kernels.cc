#include "int8_kernels.hpp"

#include <algorithm>
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

TQ_CLONES void reluAt(int32_t* v, int64_t n, int32_t floor) {
  for (int64_t i = 0; i < n; i++) v[i] = std::max(v[i], floor);
}

/** code = number of thresholds below v (int-ops.ts countBelow), counted threshold by threshold. */
TQ_CLONES void countBelow(const int32_t* v, int64_t n, const int32_t* thresholds, int64_t count, int32_t* codes) {
  for (int64_t i = 0; i < n; i++) codes[i] = 0;
  for (int64_t k = 0; k < count; k++) {
    const int32_t t = thresholds[k];
    for (int64_t i = 0; i < n; i++) codes[i] += v[i] > t ? 1 : 0;
  }
}

TQ_CLONES void lookUp(const int32_t* codes, int64_t n, const int32_t* values, int32_t* out) {
  for (int64_t i = 0; i < n; i++) out[i] = values[codes[i]];
}

/** int-ops.ts roundToCode: ties to the lower code. */
TQ_CLONES void roundToCode(int32_t* v, int64_t n, int32_t fracBits, int32_t minCode, int32_t maxCode) {
  const int32_t bias = fracBits > 0 ? (int32_t{1} << (fracBits - 1)) - 1 : 0;
  for (int64_t i = 0; i < n; i++) v[i] = std::clamp((v[i] + bias) >> fracBits, minCode, maxCode);
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

void activate(int32_t* v, int64_t n, const ActivationRule& rule, int32_t* scratch) {
  if (rule.relu) reluAt(v, n, rule.zeroPoint);
  if (rule.useThresholds) {
    countBelow(v, n, rule.thresholds.data(), static_cast<int64_t>(rule.thresholds.size()), scratch);
    lookUp(scratch, n, rule.values.data(), v);
  } else {
    roundToCode(v, n, rule.fracBits, rule.minCode, rule.maxCode);
  }
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

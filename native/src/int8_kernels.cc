#include "int8_kernels.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <utility>

// Vectors are passed by value only between inline functions of this file (inlined into the clones
// that use them), so GCC's note that their calling convention differs between ISAs does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
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

namespace {

/** The rounding term roundingMulShift adds before shifting right by `shift`: 2^(shift-1), 0 for shift 0. */
inline int64_t roundingTerm(int32_t shift) { return shift > 0 ? int64_t{1} << (shift - 1) : 0; }

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

/** `Lanes` accumulators x of channels [c, c + Lanes) requantized: the vector form of requantizeRows. */
template <int64_t Lanes>
inline Vec<int32_t, Lanes> requantizeLanes(const int32_t* x, const Requant& q, int64_t c) {
  using V32 = Vec<int32_t, Lanes>;
  using V64 = Vec<int64_t, Lanes>;
  const V64 product = __builtin_convertvector(loadVec<V32>(x), V64) * __builtin_convertvector(loadVec<V32>(q.mult.data() + c), V64) +
      loadVec<V64>(q.rounding.data() + c);
  return __builtin_convertvector(product >> __builtin_convertvector(loadVec<V32>(q.shift.data() + c), V64), V32) + loadVec<V32>(q.bias.data() + c);
}

/** The activation rule as the fused kernel uses it: thresholds with value steps (values[k+1] - values[k]). */
struct RuleTables {
  int32_t floor;  // ReLU floor (zero point), INT32_MIN without ReLU
  const int32_t* thresholds;
  int32_t steps[256];
  int64_t count;
  int32_t base;  // values[0]
  int32_t roundBias, fracBits, minCode, maxCode;
  // Up to 31 thresholds also as a 32-slot search table (padded with INT32_MAX) and the values by code.
  static constexpr int64_t kSearchSlots = 32;
  bool searchable;
  alignas(64) int32_t searchThresholds[kSearchSlots];
  alignas(64) int32_t searchValues[kSearchSlots];
};

#if defined(__GNUC__) && !defined(__clang__)
#define TQ_VECTOR_SEARCH 1
/**
 * values[countBelow(v)] for 16 lanes by a branchless binary search over the 32-slot table: five
 * steps of (permute, compare, select), then one permute for the value (GCC's __builtin_shuffle:
 * vpermi2d with AVX-512).
 */
inline Vec<int32_t, 16> searchValues(Vec<int32_t, 16> v, const RuleTables& t) {
  using V = Vec<int32_t, 16>;
  const V lowT = loadVec<V>(t.searchThresholds), highT = loadVec<V>(t.searchThresholds + 16);
  V code{};
  for (int32_t step = 16; step >= 1; step /= 2) {
    const V probe = code + (step - 1);
    code = select(v > __builtin_shuffle(lowT, highT, probe), code, code + step);
  }
  return __builtin_shuffle(loadVec<V>(t.searchValues), loadVec<V>(t.searchValues + 16), code);
}
#endif

/**
 * `Lanes` channels at a time (16: one AVX-512 register; 1: any channel count): requantize, ReLU at
 * the zero point, then the code rule. Thresholds become values directly: thresholds ascend, so
 * values[countBelow(v)] = values[0] + the sum of the steps of the thresholds below v (no table
 * lookup, only compares and masked adds).
 */
template <class T, bool Thresholds, int64_t Lanes>
TQ_CLONES void requantizeActivateT(const int32_t* in, int64_t rows, int64_t channels, const Requant& q, const RuleTables& t, T* out) {
  using V32 = Vec<int32_t, Lanes>;
  using VOut = Vec<T, Lanes>;
  const V32 zero{};
  for (int64_t p = 0; p < rows; p++) {
    const int32_t* x = in + p * channels;
    T* o = out + p * channels;
    for (int64_t c = 0; c < channels; c += Lanes) {
      V32 v = requantizeLanes<Lanes>(x + c, q, c);
      v = select(v < t.floor, v, zero + t.floor);
      V32 r;
      if constexpr (Thresholds) {
#ifdef TQ_VECTOR_SEARCH
        if constexpr (Lanes == 16) {
          if (t.searchable) {
            r = searchValues(v, t);
            const VOut narrowed = __builtin_convertvector(r, VOut);
            std::memcpy(o + c, &narrowed, sizeof narrowed);
            continue;
          }
        }
#endif
        r = zero + t.base;
#pragma GCC unroll 16
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

/**
 * The residual epilogue, `Lanes` output channels at a time: requantize, add the shortcut term
 * (output channels [first, last) have one; option A pads zero channels around it), ReLU and clamp
 * to [lo, hi], store. `acc` and `out` start at pixel r.begin.
 */
template <class TOut, class TSc, int64_t Lanes>
TQ_CLONES void residualT(const int32_t* acc, const PixelRange& r, const Requant& q, const ShortcutAdd* sc, int32_t lo, int32_t hi, TOut* out) {
  using V32 = Vec<int32_t, Lanes>;
  using V64 = Vec<int64_t, Lanes>;
  const V32 zero{};
  const int64_t pixelsPerImage = r.height * r.width, channels = r.channels;
  const int64_t first = sc ? std::max<int64_t>(0, sc->offset) : 0, last = sc ? std::min(channels, sc->offset + sc->channels) : 0;
  const int64_t scRounding = sc ? roundingTerm(sc->shift) : 0;
  for (int64_t p = r.begin; p < r.end; p++) {
    const int32_t* x = acc + (p - r.begin) * channels;
    TOut* o = out + (p - r.begin) * channels;
    const TSc* s = nullptr;  // the shortcut pixel; output channel j reads s[j - offset]
    if (sc) {
      const int64_t image = p / pixelsPerImage, y = (p % pixelsPerImage) / r.width, xx = p % r.width;
      s = static_cast<const TSc*>(sc->data) + ((image * sc->height + y * sc->stride) * sc->width + xx * sc->stride) * sc->channels;
    }
    for (int64_t c = 0; c < channels; c += Lanes) {
      V32 v = requantizeLanes<Lanes>(x + c, q, c);
      if (sc && c >= first && c + Lanes <= last) {
        const V64 term = __builtin_convertvector(loadVec<Vec<TSc, Lanes>>(s + c - sc->offset), V64) * static_cast<int64_t>(sc->mult) + scRounding;
        v += __builtin_convertvector(term >> static_cast<int64_t>(sc->shift), V32);
      } else if (sc) {
        for (int64_t j = std::max(c, first); j < std::min(c + Lanes, last); j++) v[j - c] += roundingMulShift(s[j - sc->offset], sc->mult, sc->shift, scRounding);
      }
      v = select(v < lo, v, zero + lo);
      v = select(v > hi, v, zero + hi);
      const Vec<TOut, Lanes> narrowed = __builtin_convertvector(v, Vec<TOut, Lanes>);
      std::memcpy(o + c, &narrowed, sizeof narrowed);
    }
  }
}

/** body(T*) with T = int8_t or int16_t, the types of a residual stream. */
template <class Body>
void withResidualType(IntType type, Body body) {
  if (type == IntType::i8) return body(static_cast<int8_t*>(nullptr));
  if (type == IntType::i16) return body(static_cast<int16_t*>(nullptr));
  throw std::invalid_argument("a residual tensor must be int8 or int16");
}

template <class T>
TQ_CLONES void tableT(const uint8_t* image, int64_t channels, int64_t pixels, const int16_t* lut, T* out) {
  for (int64_t c = 0; c < channels; c++) {
    const uint8_t* plane = image + c * pixels;
    const int16_t* table = lut + c * 256;
    for (int64_t p = 0; p < pixels; p++) out[p * channels + c] = static_cast<T>(table[plane[p]]);
  }
}

/** Per output pixel: the channels' sums or maxima over the window positions inside the input, in `acc`, then stored. */
template <class TIn, class TOut, bool Max>
TQ_CLONES void poolT(const TIn* in, int64_t height, int64_t width, int64_t channels, const Window& w, int32_t* acc, TOut* out) {
  const int64_t outH = w.outHeight(height), outW = w.outWidth(width);
  for (int64_t y = 0; y < outH; y++) {
    const int64_t top = y * w.strideH - w.padH, i0 = std::max<int64_t>(0, top), i1 = std::min(height, top + w.kernelH);
    for (int64_t x = 0; x < outW; x++) {
      const int64_t left = x * w.strideW - w.padW, j0 = std::max<int64_t>(0, left), j1 = std::min(width, left + w.kernelW);
      std::fill(acc, acc + channels, Max ? std::numeric_limits<int32_t>::min() : 0);
      for (int64_t i = i0; i < i1; i++) {
        for (int64_t j = j0; j < j1; j++) {
          const TIn* p = in + (i * width + j) * channels;
          for (int64_t c = 0; c < channels; c++) acc[c] = Max ? std::max<int32_t>(acc[c], p[c]) : acc[c] + p[c];
        }
      }
      TOut* o = out + (y * outW + x) * channels;
      for (int64_t c = 0; c < channels; c++) o[c] = static_cast<TOut>(acc[c]);
    }
  }
}

template <class TA, class TB, class TOut>
TQ_CLONES void addT(const TA* a, const TB* b, int64_t n, const AddTerm& ta, const AddTerm& tb, int32_t lo, int32_t hi, TOut* out) {
  const int64_t ra = roundingTerm(ta.shift), rb = roundingTerm(tb.shift);
  for (int64_t i = 0; i < n; i++) {
    const int32_t v = roundingMulShift(a[i], ta.mult, ta.shift, ra) + roundingMulShift(b[i], tb.mult, tb.shift, rb);
    out[i] = static_cast<TOut>(std::min(std::max(v, lo), hi));
  }
}

}  // namespace

Requant::Requant(std::vector<int32_t> m, std::vector<int32_t> s, std::vector<int32_t> b)
    : mult(std::move(m)), shift(std::move(s)), rounding(shift.size()), bias(std::move(b)) {
  for (size_t c = 0; c < shift.size(); c++) rounding[c] = roundingTerm(shift[c]);
}

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
  t.searchable = rule.useThresholds && t.count < RuleTables::kSearchSlots;
  if (t.searchable) {
    for (int64_t k = 0; k < RuleTables::kSearchSlots; k++) {
      t.searchThresholds[k] = k < t.count ? rule.thresholds[k] : std::numeric_limits<int32_t>::max();
      t.searchValues[k] = rule.values[std::min(k, t.count)];
    }
  }
  withType(out, type, [&](auto* o) {
    using T = std::remove_pointer_t<decltype(o)>;
    if (rule.useThresholds) requantizeActivateLanes<T, true>(in, rows, channels, q, t, o + first);
    else requantizeActivateLanes<T, false>(in, rows, channels, q, t, o + first);
  });
}

void residual(const int32_t* acc, const PixelRange& r, const Requant& q, const ShortcutAdd* sc, int32_t lo, int32_t hi, void* out, IntType type) {
  withResidualType(type, [&](auto* outTyped) {
    using TOut = std::remove_pointer_t<decltype(outTyped)>;
    withResidualType(sc ? sc->type : IntType::i16, [&](auto* scTyped) {
      using TSc = std::remove_pointer_t<decltype(scTyped)>;
      TOut* o = static_cast<TOut*>(out) + r.begin * r.channels;
      if (r.channels % 16 == 0) residualT<TOut, TSc, 16>(acc, r, q, sc, lo, hi, o);
      else residualT<TOut, TSc, 1>(acc, r, q, sc, lo, hi, o);
    });
  });
}

void inputTable(const uint8_t* image, int64_t channels, int64_t pixels, const int16_t* lut, void* out, IntType type) {
  withType(out, type, [&](auto* o) { tableT(image, channels, pixels, lut, o); });
}

void pool(const void* in, IntType inType, int64_t height, int64_t width, int64_t channels, const Window& w, bool max, void* out, IntType outType) {
  std::vector<int32_t> acc(static_cast<size_t>(channels));
  withType(in, inType, [&](const auto* i) {
    withType(out, outType, [&](auto* o) {
      if (max) poolT<std::remove_const_t<std::remove_pointer_t<decltype(i)>>, std::remove_pointer_t<decltype(o)>, true>(i, height, width, channels, w, acc.data(), o);
      else poolT<std::remove_const_t<std::remove_pointer_t<decltype(i)>>, std::remove_pointer_t<decltype(o)>, false>(i, height, width, channels, w, acc.data(), o);
    });
  });
}

void add(const AddTerm& a, const AddTerm& b, int64_t first, int64_t n, int32_t lo, int32_t hi, void* out, IntType type) {
  withType(a.data, a.type, [&](const auto* pa) {
    withType(b.data, b.type, [&](const auto* pb) {
      withResidualType(type, [&](auto* typed) {
        using TOut = std::remove_pointer_t<decltype(typed)>;
        addT(pa + first, pb + first, n, a, b, lo, hi, static_cast<TOut*>(out) + first);
      });
    });
  });
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

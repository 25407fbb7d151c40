// The element-level numerics of the fused quantize-dequantize (see QuantSpec in
// src/backend/backend.ts), shared by the plain kernels (quantize.cc) and the ones fused with batch
// normalization (norm_quantize.cc), so that both decide every element exactly alike.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "quantize.hpp"

// Function multi-versioning: the per-segment loops are compiled for AVX-512, AVX2 and the baseline,
// and the best one for the CPU is picked when the addon loads (the build stays portable).
#if defined(__x86_64__) && defined(__GNUC__)
#define TQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TQ_CLONES
#endif

namespace tq::kernels::element {

// Numerics, shared with the TypeScript reference so both pick the same level for every element:
// xn = (x - offset) / scale in float32 (as any float32 implementation of the formula, PyTorch's
// included, rounds it); the bounds and the grid size are float32 numbers (every quantizer's are
// exact in float32), so clipping, the grid product xc * steps (rounded to float32, then rounded half
// to even by std::nearbyint under the default rounding mode) and the comparisons with the level
// midpoints (made exact below) decide exactly as the reference's float64 arithmetic does. Values
// computed after the decision (output, gradient) may differ from it in the last bit.

#define TQ_INLINE inline __attribute__((always_inline))

// Loop-invariant choices are compile-time variants (symmetric, EWGS: they add work) or bit masks
// (passClipped) rather than branches or selects on a scalar flag, which the vectorizer cannot handle.
using Bits = uint32_t;
constexpr Bits kAllBits = ~Bits{0};
constexpr Bits kSignBit = Bits{1} << 31;

TQ_INLINE Bits bitsOf(float v) {
  Bits b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}
TQ_INLINE float floatOf(Bits b) {
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}
TQ_INLINE Bits maskOf(bool set) { return set ? kAllBits : 0; }
/** mask ? a : b, bit by bit. */
TQ_INLINE float choose(Bits mask, float a, float b) { return floatOf((bitsOf(a) & mask) | (bitsOf(b) & ~mask)); }

/** The spec's range test, clip and flags, prepared for the inner loops. */
struct Range {
  float lo, hi;
  // Below the range iff xn < belowLimit, above iff xn > aboveLimit: the inclusivity folded into
  // the limits (the next float inward for an exclusive bound), exact for float32 xn.
  float belowLimit, aboveLimit;
  float delta;
  Bits passClipped;  // gradient also where clipped
  explicit Range(const QuantSpec& s)
      : lo(static_cast<float>(s.lo)), hi(static_cast<float>(s.hi)),
        belowLimit(s.loInclusive ? lo : std::nextafter(lo, std::numeric_limits<float>::infinity())),
        aboveLimit(s.hiInclusive ? hi : std::nextafter(hi, -std::numeric_limits<float>::infinity())),
        delta(static_cast<float>(s.delta)), passClipped(maskOf(s.passClipped)) {}
};

/** The spec's flags that change the work per element, as compile-time choices. */
template <bool Symmetric, bool Ewgs, bool InRangeSums = true>
struct Variant {
  static constexpr bool symmetric = Symmetric;
  static constexpr bool ewgs = Ewgs;  // delta != 0
  static constexpr bool inRangeSums = InRangeSums;  // !onlyClippedSums
};

struct Channel {
  float scale, offset, outScale, outOffset, inputScale;
  Channel(const QuantSpec& s, int64_t c)
      : scale(s.scale[c]), offset(s.offset[c]), outScale(s.outScale[c]), outOffset(s.outOffset[c]),
        inputScale(static_cast<float>(static_cast<double>(s.outScale[c]) / s.scale[c])) {}
};

TQ_INLINE float clip(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/** The uniform grid: round half to even (std::nearbyint, default rounding mode) of a * steps. */
struct GridProjection {
  static constexpr bool kGroupable = false;
  float steps;
  // The level is decided by the rounding; its value may differ from a division in the last bit.
  float stepSize;
  explicit GridProjection(float steps) : steps(steps), stepSize(1.0f / steps) {}
  TQ_INLINE float operator()(float a) const { return std::nearbyint(a * steps) * stepSize; }
};

/**
 * The smallest float above each midpoint of consecutive levels (a float v exceeds the float64
 * midpoint exactly when v >= threshold), and the levels, padded to `size` levels: thresholds with
 * +infinity, levels with the last one.
 */
class LevelTables {
 public:
  LevelTables(const std::vector<float>& levels, size_t size) : levels_(size, levels.back()) {
    const float inf = std::numeric_limits<float>::infinity();
    thresholds_.assign(size - 1, inf);
    std::copy(levels.begin(), levels.end(), levels_.begin());
    for (size_t k = 0; k + 1 < levels.size(); k++) {
      const double mid = (static_cast<double>(levels[k]) + levels[k + 1]) / 2.0;
      float t = static_cast<float>(mid);
      if (static_cast<double>(t) <= mid) t = std::nextafter(t, inf);
      thresholds_[k] = t;
    }
  }
  const float* thresholds() const { return thresholds_.data(); }
  const float* levels() const { return levels_.data(); }

 private:
  std::vector<float> thresholds_, levels_;
};

/** One AVX-512 register of floats or int32s (GCC vector extensions: lowered for every clone). */
using Floats16 = float __attribute__((vector_size(64)));
using Ints16 = int32_t __attribute__((vector_size(64)));
constexpr int kGroup = 16;

/** Whether this CPU runs the grouped projection natively (vpermps); other clones emulate it slowly. */
inline bool groupedProjectionAvailable() {
  static const bool available = __builtin_cpu_supports("avx512f");
  return available;
}

/**
 * Nearest level, ties to the lower one, for sets of up to Size levels: a chain of selects over the
 * sorted thresholds (each one passed moves the result up one level), unrolled at compile time so
 * that it vectorizes as compares and blends, without gathers or branches. NaN stays NaN.
 * Up to 16 levels also project 16 values at once (`group`): a binary search whose table lookups
 * are in-register permutes, about 2 instructions per level fewer than the chain.
 */
template <int Size>
struct LevelProjection {
  static constexpr bool kGroupable = Size <= kGroup;
  float thresholds[Size - 1];
  float levels[Size];
  // The tables again, padded to one register: thresholds with +infinity, levels with the last one.
  alignas(64) float groupThresholds[kGroup];
  alignas(64) float groupLevels[kGroup];
  explicit LevelProjection(const LevelTables& t) {
    std::copy(t.thresholds(), t.thresholds() + Size - 1, thresholds);
    std::copy(t.levels(), t.levels() + Size, levels);
    std::fill(groupThresholds, groupThresholds + kGroup, std::numeric_limits<float>::infinity());
    std::fill(groupLevels, groupLevels + kGroup, levels[Size - 1]);
    if constexpr (kGroupable) {
      std::copy(thresholds, thresholds + Size - 1, groupThresholds);
      std::copy(levels, levels + Size, groupLevels);
    }
  }
  TQ_INLINE float operator()(float a) const {
    return choose(maskOf(a != a), a, selectFrom<0>(a, levels[0]));
  }
  /** out[l] = (*this)(in[l]) for kGroup values. */
  TQ_INLINE void group(const float* in, float* out) const {
    Floats16 a, t, lv;
    std::memcpy(&a, in, sizeof a);
    std::memcpy(&t, groupThresholds, sizeof t);
    std::memcpy(&lv, groupLevels, sizeof lv);
    Ints16 idx = {};  // the number of thresholds at or below the value
#pragma GCC unroll 8
    for (int step = Size / 2; step >= 1; step /= 2) idx += (a >= __builtin_shuffle(t, idx + (step - 1))) & step;
    const Floats16 q = __builtin_shuffle(lv, idx);
    const Floats16 result = a != a ? a : q;
    std::memcpy(out, &result, sizeof result);
  }

 private:
  template <int K>
  TQ_INLINE float selectFrom(float a, float level) const {
    const float above = levels[K + 1];
    level = a >= thresholds[K] ? above : level;  // a compare and a masked move per threshold
    if constexpr (K + 2 < Size) {
      return selectFrom<K + 1>(a, level);
    } else {
      return level;
    }
  }
};

/** Larger level sets: binary search for the number of thresholds at or below the value (scalar). */
struct DeepLevelProjection {
  static constexpr bool kGroupable = false;
  const float* thresholds;
  const float* levels;
  size_t size;  // a power of two
  float operator()(float a) const {
    size_t idx = 0;
    for (size_t step = size / 2; step >= 1; step >>= 1) idx += a >= thresholds[idx + step - 1] ? step : 0;
    return a != a ? a : levels[idx];
  }
};

/** What the magnitude projection sees of a clipped value: |v| when symmetric. */
template <class V>
TQ_INLINE float magnitudeInput(float v) {
  if constexpr (V::symmetric) {
    return floatOf(bitsOf(v) & ~kSignBit);
  } else {
    return v;
  }
}

/** The projection of the clipped value v from its magnitude's projection: the sign restored when symmetric (sign(0) = 0). */
template <class V>
TQ_INLINE float restored(float v, float projected) {
  if constexpr (V::symmetric) {
    const float q = floatOf(bitsOf(projected) | (bitsOf(v) & kSignBit));
    return choose(maskOf(v == 0.0f), 0.0f, q);  // a zero input projects to zero
  } else {
    return projected;
  }
}

/** project(xc) of the spec. */
template <class V, class Projection>
TQ_INLINE float project(const Projection& magnitudeOf, float v) {
  return restored<V>(v, magnitudeOf(magnitudeInput<V>(v)));
}

/** One element's quantize-dequantize: project(clip((x - offset) / scale)) * outScale + outOffset. */
template <class V, class Projection>
TQ_INLINE float quantizeElement(float x, const Range& r, const Channel& c, const Projection& magnitudeOf) {
  const float xn = (x - c.offset) / c.scale;
  return project<V>(magnitudeOf, clip(xn, r.lo, r.hi)) * c.outScale + c.outOffset;
}

/** One element's backward: its gradient and its terms of the five sums (see QuantSpec). */
struct ElementGrad {
  float gx;
  float inside, insideXn, insideError, below, above;
};

/** The backward of an element with normalized value xn, clipped xc and projection q. */
template <class V>
TQ_INLINE ElementGrad gradientOf(float g, float xn, float xc, float q, const Range& r, const Channel& c) {
  // EWGS: g' = g (1 + delta sign(g) (xc - q)) = g + delta |g| (xc - q); delta = 0 is the
  // straight-through estimator.
  float scaled = g;
  if constexpr (V::ewgs) scaled = g + r.delta * floatOf(bitsOf(g) & ~kSignBit) * (xc - q);
  const Bits isBelow = maskOf(xn < r.belowLimit);
  const Bits isAbove = maskOf(xn > r.aboveLimit);
  const Bits isInside = ~(isBelow | isAbove);
  const float gx = floatOf(bitsOf(scaled * c.inputScale) & (isInside | r.passClipped));
  const float below = floatOf(bitsOf(g) & isBelow), above = floatOf(bitsOf(g) & isAbove);
  if constexpr (!V::inRangeSums) return {gx, 0.0f, 0.0f, 0.0f, below, above};  // q unused: no projection
  const float in = floatOf(bitsOf(scaled) & isInside);
  return {gx, in, in * xn, in * (q - xn), below, above};
}

template <class V, class Projection>
TQ_INLINE ElementGrad backwardElement(float x, float g, const Range& r, const Channel& c, const Projection& magnitudeOf) {
  const float xn = (x - c.offset) / c.scale;
  const float xc = clip(xn, r.lo, r.hi);
  return gradientOf<V>(g, xn, xc, project<V>(magnitudeOf, xc), r, c);
}

/**
 * Calls run(std::true_type) when the projection is grouped (16 values at once, see LevelProjection),
 * else run(std::false_type): per element, inside the vectorized loops.
 */
template <class Projection, class Run>
void withGrouping(const Projection&, Run run) {
  if constexpr (Projection::kGroupable) {
    if (groupedProjectionAvailable()) return run(std::true_type{});
  }
  run(std::false_type{});
}

/** With onlyClippedSums, sums [0..2] of every channel are 0 (EWGS's scaling still projects, so they were summed). */
inline void clearInRangeSums(const QuantSpec& spec, double* sums) {
  if (!spec.onlyClippedSums) return;
  for (int64_t c = 0; c < spec.channels; c++) std::fill(sums + c * kQuantSums, sums + c * kQuantSums + 3, 0.0);
}

/** sums[0..4] += the five float32 partial sums of a block (see QuantSpec). */
inline void addSums(double* sums, float inside, float insideXn, float insideError, float below, float above) {
  sums[0] += inside;
  sums[1] += insideXn;
  sums[2] += insideError;
  sums[3] += below;
  sums[4] += above;
}

/** Calls run(projection) with the magnitude projection the spec asks for. */
template <class Run>
void withProjection(const QuantSpec& spec, Run run) {
  if (spec.levels.empty()) {
    run(GridProjection(static_cast<float>(spec.steps)));
    return;
  }
  size_t size = 4;
  while (size < spec.levels.size()) size *= 2;
  const LevelTables tables(spec.levels, size);
  switch (size) {
    case 4: run(LevelProjection<4>(tables)); break;
    case 8: run(LevelProjection<8>(tables)); break;
    case 16: run(LevelProjection<16>(tables)); break;
    case 32: run(LevelProjection<32>(tables)); break;
    default: run(DeepLevelProjection{tables.thresholds(), tables.levels(), size});
  }
}

/**
 * Calls run(variant) with the compile-time variant of the spec's flags (EWGS and the in-range sums
 * only for the backward, `forBackward`).
 */
template <class Run>
void withVariant(const QuantSpec& spec, bool forBackward, Run run) {
  const bool ewgs = forBackward && spec.delta != 0;
  const bool clippedOnly = forBackward && spec.onlyClippedSums && !ewgs;
  if (spec.symmetric) {
    ewgs ? run(Variant<true, true>{}) : clippedOnly ? run(Variant<true, false, false>{}) : run(Variant<true, false>{});
  } else {
    ewgs ? run(Variant<false, true>{}) : clippedOnly ? run(Variant<false, false, false>{}) : run(Variant<false, false>{});
  }
}

}  // namespace tq::kernels::element

#include "quantize.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "parallel.hpp"

// Function multi-versioning: the per-segment loops are compiled for AVX-512, AVX2 and the baseline,
// and the best one for the CPU is picked when the addon loads (the build stays portable).
#if defined(__x86_64__) && defined(__GNUC__)
#define TQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TQ_CLONES
#endif

namespace tq::kernels {
namespace {

// Numerics, shared with the TypeScript reference so both pick the same level for every element:
// xn = (x - offset) / scale in float32 (as any float32 implementation of the formula, PyTorch's
// included, rounds it); the bounds and the grid size are float32 numbers (every quantizer's are
// exact in float32), so clipping, the grid product xc * steps (rounded to float32, then rounded half
// to even by std::nearbyint under the default rounding mode) and the comparisons with the level
// midpoints (made exact below) decide exactly as the reference's float64 arithmetic does. Values
// computed after the decision (output, gradient) may differ from it in the last bit.

#define TQ_INLINE inline __attribute__((always_inline))

// Loop-invariant choices (symmetric, EWGS, passClipped) are applied as bit masks rather than
// branches or selects on a scalar flag, which the vectorizer cannot handle.
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
  Bits ewgs;         // delta != 0
  Bits passClipped;  // gradient also where clipped
  Bits magnitude;    // symmetric: clears the sign bit; else all bits
  Bits sign;         // symmetric: the sign bit; else 0
  explicit Range(const QuantSpec& s)
      : lo(static_cast<float>(s.lo)), hi(static_cast<float>(s.hi)),
        belowLimit(s.loInclusive ? lo : std::nextafter(lo, std::numeric_limits<float>::infinity())),
        aboveLimit(s.hiInclusive ? hi : std::nextafter(hi, -std::numeric_limits<float>::infinity())),
        delta(static_cast<float>(s.delta)), ewgs(maskOf(s.delta != 0)), passClipped(maskOf(s.passClipped)),
        magnitude(s.symmetric ? ~kSignBit : kAllBits), sign(s.symmetric ? kSignBit : 0) {}
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
  float steps;
  TQ_INLINE float operator()(float a) const { return std::nearbyint(a * steps) / steps; }
};

/**
 * Nearest level, ties to the lower one: the level index is the number of midpoints below the
 * value, found by binary search. The tables are padded to 2^Depth entries so that the search is
 * Depth branch-free halvings, written out (so the loop vectorizes, with gathers).
 * thresholds[k] is the smallest float above midpoint k, so a float v exceeds the (float64)
 * midpoint exactly when v >= thresholds[k]. NaN stays NaN.
 */
template <int Step>
TQ_INLINE int searchFrom(const float* thresholds, float a, int idx) {
  idx += a >= thresholds[idx + Step - 1] ? Step : 0;
  if constexpr (Step > 1) {
    return searchFrom<Step / 2>(thresholds, a, idx);
  } else {
    return idx;
  }
}

template <int Depth>
struct LevelProjection {
  const float* thresholds;
  const float* levels;
  TQ_INLINE float operator()(float a) const {
    const float level = levels[searchFrom<(1 << Depth) / 2>(thresholds, a, 0)];
    return a != a ? a : level;
  }
};

/** The same search for level sets beyond the unrolled depths (a loop; not vectorized). */
struct DeepLevelProjection {
  const float* thresholds;
  const float* levels;
  int depth;
  float operator()(float a) const {
    int idx = 0;
    for (int step = 1 << (depth - 1); step >= 1; step >>= 1) idx += a >= thresholds[idx + step - 1] ? step : 0;
    return a != a ? a : levels[idx];
  }
};

class LevelTables {
 public:
  /** Tables of 2^depth entries, depth at least `minDepth`. */
  LevelTables(const std::vector<float>& levels, int minDepth) {
    size_t size = size_t{1} << minDepth;
    while (size < levels.size()) size *= 2;
    const float inf = std::numeric_limits<float>::infinity();
    thresholds_.assign(size - 1, inf);
    levels_.assign(size, levels.back());
    std::copy(levels.begin(), levels.end(), levels_.begin());
    for (size_t k = 0; k + 1 < levels.size(); k++) {
      const double mid = (static_cast<double>(levels[k]) + levels[k + 1]) / 2.0;
      float t = static_cast<float>(mid);
      if (static_cast<double>(t) <= mid) t = std::nextafter(t, inf);
      thresholds_[k] = t;
    }
    depth_ = 0;
    while ((size_t{1} << depth_) < size) depth_++;
  }
  const float* thresholds() const { return thresholds_.data(); }
  const float* levels() const { return levels_.data(); }
  int depth() const { return depth_; }

 private:
  std::vector<float> thresholds_, levels_;
  int depth_;
};

/** project(xc): the magnitude's projection with the sign restored when symmetric (sign(0) = 0). */
template <class Projection>
TQ_INLINE float project(const Projection& magnitudeOf, const Range& r, float v) {
  const float m = magnitudeOf(floatOf(bitsOf(v) & r.magnitude));
  const float q = floatOf(bitsOf(m) | (bitsOf(v) & r.sign));
  return choose(maskOf(v == 0.0f) & r.sign, 0.0f, q);  // symmetric: a zero input projects to zero
}

template <class Projection>
TQ_CLONES void forwardSegment(const float* __restrict x, float* __restrict y, int64_t n, const Range& r, const Channel& c,
    const Projection& magnitudeOf) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    const float xn = (x[i] - c.offset) / c.scale;
    y[i] = project(magnitudeOf, r, clip(xn, r.lo, r.hi)) * c.outScale + c.outOffset;
  }
}

/**
 * gx and the five per-channel sums. The terms of the sums go through small blocks on the stack
 * (the vectorizer handles the elementwise loop, not float64 reductions inside it); each block is
 * then summed in float64 (a fixed order for a given CPU, so results are reproducible).
 */
template <class Projection>
TQ_CLONES void backwardSegment(const float* __restrict x, const float* __restrict gy, float* __restrict gx, int64_t n,
    const Range& r, const Channel& c, const Projection& magnitudeOf, double* sums) {
  constexpr int64_t kBlock = 256;
  alignas(64) float inside[kBlock], insideXn[kBlock], insideError[kBlock], below[kBlock], above[kBlock];
  double total[kQuantSums] = {0.0, 0.0, 0.0, 0.0, 0.0};
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t m = std::min(kBlock, n - start);
    const float* xs = x + start;
    const float* gs = gy + start;
    float* out = gx + start;
#pragma omp simd
    for (int64_t i = 0; i < m; i++) {
      const float g = gs[i];
      const float xn = (xs[i] - c.offset) / c.scale;
      const float xc = clip(xn, r.lo, r.hi);
      const float q = project(magnitudeOf, r, xc);
      // EWGS: g' = g (1 + delta sign(g) (xc - q)); delta = 0 is the straight-through estimator.
      const float sign = g > 0.0f ? 1.0f : (g < 0.0f ? -1.0f : 0.0f);
      const float scaled = choose(r.ewgs, g * (1.0f + r.delta * sign * (xc - q)), g);
      const bool isBelow = xn < r.belowLimit;
      const bool isAbove = xn > r.aboveLimit;
      const bool isInside = !(isBelow | isAbove);
      out[i] = floatOf(bitsOf(scaled * c.inputScale) & (maskOf(isInside) | r.passClipped));
      const float in = floatOf(bitsOf(scaled) & maskOf(isInside));
      inside[i] = in;
      insideXn[i] = in * xn;
      insideError[i] = in * (q - xn);
      below[i] = floatOf(bitsOf(g) & maskOf(isBelow));
      above[i] = floatOf(bitsOf(g) & maskOf(isAbove));
    }
    double t0 = 0.0, t1 = 0.0, t2 = 0.0, t3 = 0.0, t4 = 0.0;
#pragma omp simd reduction(+ : t0, t1, t2, t3, t4)
    for (int64_t i = 0; i < m; i++) {
      t0 += inside[i];
      t1 += insideXn[i];
      t2 += insideError[i];
      t3 += below[i];
      t4 += above[i];
    }
    total[0] += t0;
    total[1] += t1;
    total[2] += t2;
    total[3] += t3;
    total[4] += t4;
  }
  for (int k = 0; k < kQuantSums; k++) sums[k] += total[k];
}

/** Calls run(projection) with the magnitude projection the spec asks for. */
template <class Run>
void withProjection(const QuantSpec& spec, Run run) {
  if (spec.levels.empty()) {
    run(GridProjection{static_cast<float>(spec.steps)});
    return;
  }
  const LevelTables tables(spec.levels, spec.levels.size() <= 16 ? 4 : 8);
  if (tables.depth() == 4) {
    run(LevelProjection<4>{tables.thresholds(), tables.levels()});
  } else if (tables.depth() == 8) {
    run(LevelProjection<8>{tables.thresholds(), tables.levels()});
  } else {
    run(DeepLevelProjection{tables.thresholds(), tables.levels(), tables.depth()});
  }
}

// A level search costs about as much as a few elementwise passes.
constexpr int64_t kWorkPerElement = 8;

}  // namespace

void quantize(const float* x, float* y, int64_t n, const QuantSpec& spec) {
  const Range r(spec);
  withProjection(spec, [&](const auto& magnitudeOf) {
    forChannelSegments(n, spec.channels, n * kWorkPerElement, [&](int, int64_t c, int64_t begin, int64_t end) {
      forwardSegment(x + begin, y + begin, end - begin, r, Channel(spec, c), magnitudeOf);
    });
  });
}

void quantizeBackward(const float* x, const float* gy, float* gx, int64_t n, const QuantSpec& spec, double* sums) {
  const Range r(spec);
  const int team = maxTeam();
  const int64_t perThread = spec.channels * kQuantSums;
  std::vector<double> partial(static_cast<size_t>(team) * perThread, 0.0);
  withProjection(spec, [&](const auto& magnitudeOf) {
    forChannelSegments(n, spec.channels, n * kWorkPerElement, [&](int t, int64_t c, int64_t begin, int64_t end) {
      backwardSegment(x + begin, gy + begin, gx + begin, end - begin, r, Channel(spec, c), magnitudeOf,
          &partial[t * perThread + c * kQuantSums]);
    });
  });
  std::fill(sums, sums + perThread, 0.0);
  for (int t = 0; t < team; t++) {
    for (int64_t j = 0; j < perThread; j++) sums[j] += partial[t * perThread + j];
  }
}

}  // namespace tq::kernels

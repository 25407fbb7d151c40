#include "quantize.hpp"

#include <algorithm>
#include <cmath>
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

/** Clip bounds, inclusivity and EWGS factor of the spec, for the inner loops. */
struct Range {
  float lo, hi, delta;
  bool loInclusive, hiInclusive, passClipped;
  explicit Range(const QuantSpec& s)
      : lo(static_cast<float>(s.lo)), hi(static_cast<float>(s.hi)), delta(static_cast<float>(s.delta)),
        loInclusive(s.loInclusive), hiInclusive(s.hiInclusive), passClipped(s.passClipped) {}
};

struct Channel {
  float scale, offset, outScale, outOffset, inputScale;
  Channel(const QuantSpec& s, int64_t c)
      : scale(s.scale[c]), offset(s.offset[c]), outScale(s.outScale[c]), outOffset(s.outOffset[c]),
        inputScale(static_cast<float>(static_cast<double>(s.outScale[c]) / s.scale[c])) {}
};

#define TQ_INLINE inline __attribute__((always_inline))

TQ_INLINE float clip(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/** The projection of |v| with v's sign restored (sign(0) = 0; NaN stays NaN). */
TQ_INLINE float withSign(float v, float projectedMagnitude) {
  return v > 0.0f ? projectedMagnitude : (v < 0.0f ? -projectedMagnitude : (v == 0.0f ? 0.0f : v));
}

/** The uniform grid: round half to even (std::nearbyint, default rounding mode) of v * steps. */
struct GridProjection {
  float steps;
  bool symmetric;
  TQ_INLINE float magnitude(float a) const { return std::nearbyint(a * steps) / steps; }
  TQ_INLINE float operator()(float v) const { return symmetric ? withSign(v, magnitude(std::fabs(v))) : magnitude(v); }
};

/**
 * Nearest level, ties to the lower one: the level index is the number of midpoints below the
 * value, found by binary search. The tables are padded to a power of two so that the search is a
 * fixed number of branch-free halvings (`kSearchDepth`, unrolled; vectorized with gathers).
 * thresholds[k] is the smallest float above midpoint k, so a float v exceeds the (float64)
 * midpoint exactly when v >= thresholds[k].
 */
constexpr int kSearchDepth = 8;
constexpr size_t kMaxTableLevels = size_t{1} << kSearchDepth;

class LevelTables {
 public:
  explicit LevelTables(const std::vector<float>& levels) {
    size_t size = kMaxTableLevels;
    while (size < levels.size()) size *= 2;
    const float inf = std::numeric_limits<float>::infinity();
    thresholds_.assign(size - 1, inf);
    levels_.assign(size, levels.empty() ? 0.0f : levels.back());
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
  int depth() const { return static_cast<int>(std::log2(levels_.size())); }

 private:
  std::vector<float> thresholds_, levels_;
};

/** One halving of the level search, then the smaller ones (written out so the loop vectorizes). */
template <int Step>
TQ_INLINE int searchFrom(const float* thresholds, float a, int idx) {
  idx += a >= thresholds[idx + Step - 1] ? Step : 0;
  if constexpr (Step > 1) {
    return searchFrom<Step / 2>(thresholds, a, idx);
  } else {
    return idx;
  }
}

/** Level search of fixed depth kSearchDepth (at most kMaxTableLevels levels). */
struct LevelProjection {
  const float* thresholds;
  const float* levels;
  bool symmetric;
  // One search and one table load per element, whatever the branch (so the loop vectorizes).
  TQ_INLINE float operator()(float v) const {
    const float a = symmetric ? std::fabs(v) : v;
    const float level = levels[searchFrom<kMaxTableLevels / 2>(thresholds, a, 0)];
    const float m = a != a ? a : level;
    return symmetric ? withSign(v, m) : m;
  }
};

/** The same search for larger level sets (depth known only at run time; not vectorized). */
struct DeepLevelProjection {
  const float* thresholds;
  const float* levels;
  int depth;
  bool symmetric;
  float magnitude(float a) const {
    int idx = 0;
    for (int step = 1 << (depth - 1); step >= 1; step >>= 1) idx += a >= thresholds[idx + step - 1] ? step : 0;
    return a != a ? a : levels[idx];
  }
  float operator()(float v) const { return symmetric ? withSign(v, magnitude(std::fabs(v))) : magnitude(v); }
};

template <class Projection>
TQ_INLINE void forwardLoop(const float* __restrict x, float* __restrict y, int64_t n, const Range& r, const Channel& c,
    const Projection& project) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    const float xn = (x[i] - c.offset) / c.scale;
    y[i] = project(clip(xn, r.lo, r.hi)) * c.outScale + c.outOffset;
  }
}

template <class Projection>
TQ_INLINE void backwardLoop(const float* __restrict x, const float* __restrict gy, float* __restrict gx, int64_t n,
    const Range& r, const Channel& c, const Projection& project, double* sums) {
  constexpr int64_t kBlock = 64;
  alignas(64) float in[kBlock], inXn[kBlock], inErr[kBlock], low[kBlock], high[kBlock];
  double inside = 0.0, insideXn = 0.0, insideError = 0.0, below = 0.0, above = 0.0;
  for (int64_t base = 0; base < n; base += kBlock) {
    const int64_t m = std::min(kBlock, n - base);
#pragma omp simd
    for (int64_t j = 0; j < m; j++) {
      const float g = gy[base + j];
      const float xn = (x[base + j] - c.offset) / c.scale;
      const float xc = clip(xn, r.lo, r.hi);
      const float q = project(xc);
      const float sign = g > 0.0f ? 1.0f : (g < 0.0f ? -1.0f : 0.0f);
      const float scaled = r.delta == 0.0f ? g : g * (1.0f + r.delta * sign * (xc - q));
      const bool isBelow = (xn < r.lo) | (!r.loInclusive & (xn == r.lo));
      const bool isAbove = (xn > r.hi) | (!r.hiInclusive & (xn == r.hi));
      const bool isInside = !(isBelow | isAbove);
      gx[base + j] = (isInside | r.passClipped) ? scaled * c.inputScale : 0.0f;
      in[j] = isInside ? scaled : 0.0f;
      inXn[j] = in[j] * xn;
      inErr[j] = in[j] * (q - xn);
      low[j] = isBelow ? g : 0.0f;
      high[j] = isAbove ? g : 0.0f;
    }
    for (int64_t j = 0; j < m; j++) {
      inside += in[j];
      insideXn += inXn[j];
      insideError += inErr[j];
      below += low[j];
      above += high[j];
    }
  }
  sums[0] += inside;
  sums[1] += insideXn;
  sums[2] += insideError;
  sums[3] += below;
  sums[4] += above;
}

TQ_CLONES void forwardGrid(const float* x, float* y, int64_t n, const Range& r, const Channel& c, const GridProjection& p) {
  forwardLoop(x, y, n, r, c, p);
}
TQ_CLONES void forwardLevels(const float* x, float* y, int64_t n, const Range& r, const Channel& c, const LevelProjection& p) {
  forwardLoop(x, y, n, r, c, p);
}
void forwardDeepLevels(const float* x, float* y, int64_t n, const Range& r, const Channel& c, const DeepLevelProjection& p) {
  forwardLoop(x, y, n, r, c, p);
}
TQ_CLONES void backwardGrid(const float* x, const float* gy, float* gx, int64_t n, const Range& r, const Channel& c,
    const GridProjection& p, double* sums) {
  backwardLoop(x, gy, gx, n, r, c, p, sums);
}
TQ_CLONES void backwardLevels(const float* x, const float* gy, float* gx, int64_t n, const Range& r, const Channel& c,
    const LevelProjection& p, double* sums) {
  backwardLoop(x, gy, gx, n, r, c, p, sums);
}
void backwardDeepLevels(const float* x, const float* gy, float* gx, int64_t n, const Range& r, const Channel& c,
    const DeepLevelProjection& p, double* sums) {
  backwardLoop(x, gy, gx, n, r, c, p, sums);
}

/** Calls fwd(projection) with the projection the spec asks for. */
template <class Run>
void withProjection(const QuantSpec& spec, Run run) {
  if (spec.levels.empty()) {
    run(GridProjection{static_cast<float>(spec.steps), spec.symmetric});
    return;
  }
  const LevelTables tables(spec.levels);
  if (tables.depth() == kSearchDepth) {
    run(LevelProjection{tables.thresholds(), tables.levels(), spec.symmetric});
  } else {
    run(DeepLevelProjection{tables.thresholds(), tables.levels(), tables.depth(), spec.symmetric});
  }
}

void forwardSegment(const float* x, float* y, int64_t n, const Range& r, const Channel& c, const GridProjection& p) {
  forwardGrid(x, y, n, r, c, p);
}
void forwardSegment(const float* x, float* y, int64_t n, const Range& r, const Channel& c, const LevelProjection& p) {
  forwardLevels(x, y, n, r, c, p);
}
void forwardSegment(const float* x, float* y, int64_t n, const Range& r, const Channel& c, const DeepLevelProjection& p) {
  forwardDeepLevels(x, y, n, r, c, p);
}
void backwardSegment(const float* x, const float* gy, float* gx, int64_t n, const Range& r, const Channel& c,
    const GridProjection& p, double* sums) {
  backwardGrid(x, gy, gx, n, r, c, p, sums);
}
void backwardSegment(const float* x, const float* gy, float* gx, int64_t n, const Range& r, const Channel& c,
    const LevelProjection& p, double* sums) {
  backwardLevels(x, gy, gx, n, r, c, p, sums);
}
void backwardSegment(const float* x, const float* gy, float* gx, int64_t n, const Range& r, const Channel& c,
    const DeepLevelProjection& p, double* sums) {
  backwardDeepLevels(x, gy, gx, n, r, c, p, sums);
}

// A level search costs about as much as a few elementwise passes.
constexpr int64_t kWorkPerElement = 8;

}  // namespace

void quantize(const float* x, float* y, int64_t n, const QuantSpec& spec) {
  const Range r(spec);
  withProjection(spec, [&](const auto& project) {
    forChannelSegments(n, spec.channels, n * kWorkPerElement, [&](int, int64_t c, int64_t begin, int64_t end) {
      forwardSegment(x + begin, y + begin, end - begin, r, Channel(spec, c), project);
    });
  });
}

void quantizeBackward(const float* x, const float* gy, float* gx, int64_t n, const QuantSpec& spec, double* sums) {
  const Range r(spec);
  const int team = maxTeam();
  const int64_t perThread = spec.channels * kQuantSums;
  std::vector<double> partial(static_cast<size_t>(team) * perThread, 0.0);
  withProjection(spec, [&](const auto& project) {
    forChannelSegments(n, spec.channels, n * kWorkPerElement, [&](int t, int64_t c, int64_t begin, int64_t end) {
      backwardSegment(x + begin, gy + begin, gx + begin, end - begin, r, Channel(spec, c), project,
          &partial[t * perThread + c * kQuantSums]);
    });
  });
  std::fill(sums, sums + perThread, 0.0);
  for (int t = 0; t < team; t++) {
    for (int64_t j = 0; j < perThread; j++) sums[j] += partial[t * perThread + j];
  }
}

}  // namespace tq::kernels

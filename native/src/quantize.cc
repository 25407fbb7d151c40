#include "quantize.hpp"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "parallel.hpp"
#include "quantize_element.hpp"

namespace tq::kernels {
namespace {

using namespace element;

/** The quantizer's input, element by element: loaded from x. */
struct Load {
  const float* __restrict x;
  TQ_INLINE float operator()(int64_t i) const { return x[i]; }
  Load shifted(int64_t k) const { return {x + k}; }
};

/** The quantizer's input computed as the residual join relu(a + b), which is stored to `sum` too. */
struct JoinSum {
  const float* __restrict a;
  const float* __restrict b;
  float* __restrict sum;
  TQ_INLINE float operator()(int64_t i) const {
    const float s = a[i] + b[i];
    sum[i] = s < 0.0f ? 0.0f : s;  // NaN stays NaN, as in addRelu
    return sum[i];
  }
  JoinSum shifted(int64_t k) const { return {a + k, b + k, sum + k}; }
};

template <class V, class Source, class Projection>
TQ_CLONES void forwardSegment(const Source& x, float* __restrict y, int64_t n, const Range& r, const Channel& c,
    const Projection& magnitudeOf) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] = quantizeElement<V>(x(i), r, c, magnitudeOf);
}

/** forwardSegment with the projection 16 elements at a time (see LevelProjection::group). */
template <class V, class Source, class Projection>
TQ_CLONES void forwardSegmentGrouped(const Source& x, float* __restrict y, int64_t n, const Range& r, const Channel& c,
    const Projection& magnitudeOf) {
  int64_t start = 0;
  for (; start + kGroup <= n; start += kGroup) {
    alignas(64) float xc[kGroup], m[kGroup], projected[kGroup];
#pragma omp simd
    for (int l = 0; l < kGroup; l++) {
      xc[l] = clip((x(start + l) - c.offset) / c.scale, r.lo, r.hi);
      m[l] = magnitudeInput<V>(xc[l]);
    }
    magnitudeOf.group(m, projected);
#pragma omp simd
    for (int l = 0; l < kGroup; l++) y[start + l] = restored<V>(xc[l], projected[l]) * c.outScale + c.outOffset;
  }
  forwardSegment<V>(x.shifted(start), y + start, n - start, r, c, magnitudeOf);
}

/**
 * gx and the five per-channel sums. Each block of kSumBlock elements sums its terms in float32
 * vector lanes inside the elementwise loop (the vectorizer cannot widen to float64 there); the
 * block sums are then accumulated in float64. The order is fixed for a given CPU, so results are
 * reproducible.
 */
template <class V, bool Accumulate, class Projection>
TQ_CLONES void backwardSegment(const float* __restrict x, const float* __restrict gy, float* __restrict gx, int64_t n,
    const Range& r, const Channel& c, const Projection& magnitudeOf, double* sums) {
  constexpr int64_t kSumBlock = 512;
  for (int64_t start = 0; start < n; start += kSumBlock) {
    const int64_t m = std::min(kSumBlock, n - start);
    const float* xs = x + start;
    const float* gs = gy + start;
    float* out = gx + start;
    float inside = 0.0f, insideXn = 0.0f, insideError = 0.0f, below = 0.0f, above = 0.0f;
#pragma omp simd reduction(+ : inside, insideXn, insideError, below, above)
    for (int64_t i = 0; i < m; i++) {
      const ElementGrad e = backwardElement<V>(xs[i], gs[i], r, c, magnitudeOf);
      out[i] = Accumulate ? out[i] + e.gx : e.gx;
      inside += e.inside;
      insideXn += e.insideXn;
      insideError += e.insideError;
      below += e.below;
      above += e.above;
    }
    addSums(sums, inside, insideXn, insideError, below, above);
  }
}

/** backwardSegment with the projection 16 elements at a time; the sums in per-lane float32 blocks. */
template <class V, bool Accumulate, class Projection>
TQ_CLONES void backwardSegmentGrouped(const float* __restrict x, const float* __restrict gy, float* __restrict gx, int64_t n,
    const Range& r, const Channel& c, const Projection& magnitudeOf, double* sums) {
  constexpr int64_t kGroupsPerBlock = 32;
  int64_t start = 0;
  while (start + kGroup <= n) {
    alignas(64) float inside[kGroup] = {}, insideXn[kGroup] = {}, insideError[kGroup] = {}, below[kGroup] = {},
                      above[kGroup] = {};
    for (int64_t k = 0; k < kGroupsPerBlock && start + kGroup <= n; k++, start += kGroup) {
      alignas(64) float xn[kGroup], xc[kGroup], m[kGroup], projected[kGroup];
#pragma omp simd
      for (int l = 0; l < kGroup; l++) {
        xn[l] = (x[start + l] - c.offset) / c.scale;
        xc[l] = clip(xn[l], r.lo, r.hi);
        m[l] = magnitudeInput<V>(xc[l]);
      }
      magnitudeOf.group(m, projected);
      float* out = gx + start;
#pragma omp simd
      for (int l = 0; l < kGroup; l++) {
        const ElementGrad e = gradientOf<V>(gy[start + l], xn[l], xc[l], restored<V>(xc[l], projected[l]), r, c);
        out[l] = Accumulate ? out[l] + e.gx : e.gx;
        inside[l] += e.inside;
        insideXn[l] += e.insideXn;
        insideError[l] += e.insideError;
        below[l] += e.below;
        above[l] += e.above;
      }
    }
    for (int l = 0; l < kGroup; l++) addSums(sums, inside[l], insideXn[l], insideError[l], below[l], above[l]);
  }
  backwardSegment<V, Accumulate>(x + start, gy + start, gx + start, n - start, r, c, magnitudeOf, sums);
}

// Work per element, for the decision to start threads: memory bound like an elementwise op. Weight
// tensors (up to a few 10^4 elements) stay on one thread: waking a team costs more than it saves.
constexpr int64_t kWorkPerElement = 1;

/** y = quantize(input) over n elements, the input read through `source` (see Load, JoinSum). */
template <class Source>
void quantizeFrom(const Source& source, float* y, int64_t n, const QuantSpec& spec) {
  const Range r(spec);
  withProjection(spec, [&](const auto& magnitudeOf) {
    withVariant(spec, false, [&](auto variant) {
      using V = decltype(variant);
      withGrouping(magnitudeOf, [&](auto grouped) {
        forChannelSegments(n, spec.channels, n * kWorkPerElement, [&](int, int64_t c, int64_t begin, int64_t end) {
          if constexpr (decltype(grouped)::value) {
            forwardSegmentGrouped<V>(source.shifted(begin), y + begin, end - begin, r, Channel(spec, c), magnitudeOf);
          } else {
            forwardSegment<V>(source.shifted(begin), y + begin, end - begin, r, Channel(spec, c), magnitudeOf);
          }
        });
      });
    });
  });
}

}  // namespace

void quantize(const float* x, float* y, int64_t n, const QuantSpec& spec) { quantizeFrom(Load{x}, y, n, spec); }

void addReluQuantize(const float* a, const float* b, float* sum, float* q, int64_t n, const QuantSpec& spec) {
  quantizeFrom(JoinSum{a, b, sum}, q, n, spec);
}

void quantizeBackward(const float* x, const float* gy, float* gx, int64_t n, const QuantSpec& spec, double* sums,
    bool accumulate) {
  const Range r(spec);
  ThreadPartials partials(spec.channels * kQuantSums);
  withProjection(spec, [&](const auto& magnitudeOf) {
    withVariant(spec, true, [&](auto variant) {
      using V = decltype(variant);
      using P = std::decay_t<decltype(magnitudeOf)>;
      withGrouping(magnitudeOf, [&](auto grouped) {
        const auto segment = [&] {
          if constexpr (decltype(grouped)::value) {
            return accumulate ? backwardSegmentGrouped<V, true, P> : backwardSegmentGrouped<V, false, P>;
          } else {
            return accumulate ? backwardSegment<V, true, P> : backwardSegment<V, false, P>;
          }
        }();
        forChannelSegments(n, spec.channels, n * kWorkPerElement, [&](int t, int64_t c, int64_t begin, int64_t end) {
          segment(x + begin, gy + begin, gx + begin, end - begin, r, Channel(spec, c), magnitudeOf,
              partials.of(t) + c * kQuantSums);
        });
      });
    });
  });
  partials.combineInto(sums);
  clearInRangeSums(spec, sums);
}

}  // namespace tq::kernels

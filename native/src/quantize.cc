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

template <class V, class Projection>
TQ_CLONES void forwardSegment(const float* __restrict x, float* __restrict y, int64_t n, const Range& r, const Channel& c,
    const Projection& magnitudeOf) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] = quantizeElement<V>(x[i], r, c, magnitudeOf);
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

// Work per element, for the decision to start threads: memory bound like an elementwise op. Weight
// tensors (up to a few 10^4 elements) stay on one thread: waking a team costs more than it saves.
constexpr int64_t kWorkPerElement = 1;

}  // namespace

void quantize(const float* x, float* y, int64_t n, const QuantSpec& spec) {
  const Range r(spec);
  withProjection(spec, [&](const auto& magnitudeOf) {
    withVariant(spec, false, [&](auto variant) {
      forChannelSegments(n, spec.channels, n * kWorkPerElement, [&](int, int64_t c, int64_t begin, int64_t end) {
        forwardSegment<decltype(variant)>(x + begin, y + begin, end - begin, r, Channel(spec, c), magnitudeOf);
      });
    });
  });
}

void quantizeBackward(const float* x, const float* gy, float* gx, int64_t n, const QuantSpec& spec, double* sums,
    bool accumulate) {
  const Range r(spec);
  const int team = maxTeam();
  const int64_t perThread = spec.channels * kQuantSums;
  std::vector<double> partial(static_cast<size_t>(team) * perThread, 0.0);
  withProjection(spec, [&](const auto& magnitudeOf) {
    withVariant(spec, true, [&](auto variant) {
      forChannelSegments(n, spec.channels, n * kWorkPerElement, [&](int t, int64_t c, int64_t begin, int64_t end) {
        auto segment = accumulate ? backwardSegment<decltype(variant), true, std::decay_t<decltype(magnitudeOf)>>
                                  : backwardSegment<decltype(variant), false, std::decay_t<decltype(magnitudeOf)>>;
        segment(x + begin, gy + begin, gx + begin, end - begin, r, Channel(spec, c), magnitudeOf,
            &partial[t * perThread + c * kQuantSums]);
      });
    });
  });
  std::fill(sums, sums + perThread, 0.0);
  for (int t = 0; t < team; t++) {
    for (int64_t j = 0; j < perThread; j++) sums[j] += partial[t * perThread + j];
  }
}

}  // namespace tq::kernels

// Batch normalization (training mode, optional ReLU) fused with the fake-quantize of its output:
// the normalized activation y is never stored. Forward: per-channel moments, then one pass x -> q.
// Backward: pass 1 recomputes y from x per element, applies the quantizer's backward and the ReLU
// mask, stores that gradient of the batch-norm output in gx's buffer and sums it per channel; pass 2
// turns it into gx in place. Saves a write and a read of y forward, and the quantizer's separate
// pass over the gradient backward.
//
// The image is a sequence of slabs (one image's block of channels: pixels x block values,
// contiguous), each processed as rows of kLanes values: lane l holds channel
// (block index of the slab) * block + l % block, so every per-channel quantity becomes a per-lane
// array and the rows vectorize without gathers.
#include <stdexcept>

#include "kernels.hpp"
#include "parallel.hpp"
#include "quantize.hpp"
#include "quantize_element.hpp"

namespace tq::kernels {
namespace {

using namespace element;

constexpr int kLanes = 16;
/** Rows summed in float32 lanes before the sums move to float64. */
constexpr int64_t kRowsPerFlush = 32;

using Lanes = float[kLanes];
using LaneSums = double[kLanes];

struct Slabs {
  int64_t count, blocks, block, length;  // length = pixels * block
  explicit Slabs(const BlockedImage& x)
      : count(x.n * (x.paddedChannels() / x.block)), blocks(x.paddedChannels() / x.block), block(x.block),
        length(x.h * x.w * x.block) {}
  int64_t channel(int64_t slab, int lane) const { return (slab % blocks) * block + lane % block; }
  /** lanes[l] = perChannel[channel of lane l] for `slab`. */
  template <class T>
  void spread(int64_t slab, const T* perChannel, float* lanes) const {
    for (int l = 0; l < kLanes; l++) lanes[l] = static_cast<float>(perChannel[channel(slab, l)]);
  }
  /** perChannel[channel of lane l] += lanes[l]. */
  void gather(int64_t slab, const double* lanes, double* perChannel) const {
    for (int l = 0; l < kLanes; l++) perChannel[channel(slab, l)] += lanes[l];
  }
};

/** y = (x - mean) * scale + beta, then max(y, 0) where `relu` is all ones (NaN stays NaN). */
TQ_INLINE float normalize(float x, float mean, float scale, float beta, Bits relu) {
  const float y = (x - mean) * scale + beta;
  return choose(maskOf(y < 0.0f) & relu, 0.0f, y);
}

/** The per-lane batch-norm parameters of one slab. */
struct NormLanes {
  Lanes mean, scale, beta;
  NormLanes(const Slabs& s, int64_t slab, const NormAffine& norm) {
    s.spread(slab, norm.mean, mean);
    s.spread(slab, norm.scale, scale);
    s.spread(slab, norm.beta, beta);
  }
};

/** e with its gradient zeroed where the ReLU output y is not positive (when `relu` is all ones). */
TQ_INLINE ElementGrad reluMasked(ElementGrad e, float y, Bits relu) {
  e.gx = floatOf(bitsOf(e.gx) & (~relu | maskOf(y > 0.0f)));
  return e;
}

/** The gradient of the batch-norm output (the quantizer's, masked by the ReLU) and the quantizer's terms. */
template <class V, class Projection>
TQ_INLINE ElementGrad normBackwardElement(float x, float g, const NormLanes& n, int l, Bits relu, const Range& r,
    const Channel& c, const Projection& magnitudeOf) {
  const float y = normalize(x, n.mean[l], n.scale[l], n.beta[l], relu);
  return reluMasked(backwardElement<V>(y, g, r, c, magnitudeOf), y, relu);
}

/** One row's normalized values xn, clipped xc and projections q, the projection 16 at a time. */
template <class V, class Projection>
TQ_INLINE void projectRow(const float* __restrict x, const NormLanes& n, Bits relu, const Range& r, const Channel& c,
    const Projection& magnitudeOf, float* y, float* xn, float* xc, float* q) {
  alignas(64) Lanes m;
#pragma omp simd
  for (int l = 0; l < kLanes; l++) {
    y[l] = normalize(x[l], n.mean[l], n.scale[l], n.beta[l], relu);
    xn[l] = (y[l] - c.offset) / c.scale;
    xc[l] = clip(xn[l], r.lo, r.hi);
    m[l] = magnitudeInput<V>(xc[l]);
  }
  magnitudeOf.group(m, q);
#pragma omp simd
  for (int l = 0; l < kLanes; l++) q[l] = restored<V>(xc[l], q[l]);
}

TQ_CLONES void momentsSlab(const float* __restrict x, int64_t length, const float* shift, double* sum, double* sumSq) {
  const int64_t rows = length / kLanes;
  for (int64_t r0 = 0; r0 < rows; r0 += kRowsPerFlush) {
    Lanes s = {}, q = {};
    for (int64_t r = r0; r < std::min(rows, r0 + kRowsPerFlush); r++) {
#pragma omp simd
      for (int l = 0; l < kLanes; l++) {
        const float d = x[r * kLanes + l] - shift[l];
        s[l] += d;
        q[l] += d * d;
      }
    }
    for (int l = 0; l < kLanes; l++) sum[l] += s[l], sumSq[l] += q[l];
  }
  for (int64_t i = rows * kLanes; i < length; i++) {
    const double d = x[i] - shift[i % kLanes];
    sum[i % kLanes] += d;
    sumSq[i % kLanes] += d * d;
  }
}

template <class V, bool Grouped, class Projection>
TQ_CLONES void forwardSlab(const float* __restrict x, float* __restrict q, int64_t length, const NormLanes& n, Bits relu,
    const Range& r, const Channel& c, const Projection& magnitudeOf) {
  const int64_t rows = length / kLanes;
  for (int64_t row = 0; row < rows; row++) {
    if constexpr (Grouped) {
      alignas(64) Lanes y, xn, xc, projected;
      projectRow<V>(x + row * kLanes, n, relu, r, c, magnitudeOf, y, xn, xc, projected);
#pragma omp simd
      for (int l = 0; l < kLanes; l++) q[row * kLanes + l] = projected[l] * c.outScale + c.outOffset;
    } else {
#pragma omp simd
      for (int l = 0; l < kLanes; l++) {
        const int64_t i = row * kLanes + l;
        q[i] = quantizeElement<V>(normalize(x[i], n.mean[l], n.scale[l], n.beta[l], relu), r, c, magnitudeOf);
      }
    }
  }
  for (int64_t i = rows * kLanes; i < length; i++) {
    const int l = static_cast<int>(i % kLanes);
    q[i] = quantizeElement<V>(normalize(x[i], n.mean[l], n.scale[l], n.beta[l], relu), r, c, magnitudeOf);
  }
}

/** Pass 1: gy (the gradient of the batch-norm output); per lane, sum gy and sum gy (x - mean); the quantizer's five sums. */
template <class V, bool Grouped, class Projection>
TQ_CLONES void backwardSumsSlab(const float* __restrict x, const float* __restrict gq, float* __restrict gy, int64_t length,
    const NormLanes& n, Bits relu, const Range& r, const Channel& c, const Projection& magnitudeOf, double* sumG,
    double* sumGX, double* quantSums) {
  const int64_t rows = length / kLanes;
  for (int64_t r0 = 0; r0 < rows; r0 += kRowsPerFlush) {
    Lanes g = {}, gxc = {}, inside = {}, insideXn = {}, insideError = {}, below = {}, above = {};
    for (int64_t row = r0; row < std::min(rows, r0 + kRowsPerFlush); row++) {
      alignas(64) Lanes y, xn, xc, q;
      if constexpr (Grouped) projectRow<V>(x + row * kLanes, n, relu, r, c, magnitudeOf, y, xn, xc, q);
#pragma omp simd
      for (int l = 0; l < kLanes; l++) {
        const int64_t i = row * kLanes + l;
        const ElementGrad e = Grouped ? reluMasked(gradientOf<V>(gq[i], xn[l], xc[l], q[l], r, c), y[l], relu)
                                      : normBackwardElement<V>(x[i], gq[i], n, l, relu, r, c, magnitudeOf);
        gy[i] = e.gx;
        g[l] += e.gx;
        gxc[l] += e.gx * (x[i] - n.mean[l]);
        inside[l] += e.inside;
        insideXn[l] += e.insideXn;
        insideError[l] += e.insideError;
        below[l] += e.below;
        above[l] += e.above;
      }
    }
    for (int l = 0; l < kLanes; l++) {
      sumG[l] += g[l];
      sumGX[l] += gxc[l];
      addSums(quantSums, inside[l], insideXn[l], insideError[l], below[l], above[l]);
    }
  }
  for (int64_t i = rows * kLanes; i < length; i++) {
    const int l = static_cast<int>(i % kLanes);
    const ElementGrad e = normBackwardElement<V>(x[i], gq[i], n, l, relu, r, c, magnitudeOf);
    gy[i] = e.gx;
    sumG[l] += e.gx;
    sumGX[l] += static_cast<double>(e.gx) * (x[i] - n.mean[l]);
    addSums(quantSums, e.inside, e.insideXn, e.insideError, e.below, e.above);
  }
}

/** Pass 2, in place: gy becomes gx = gy * a + (x - mean) * b + k (batch norm's backward, per-lane coefficients). */
TQ_CLONES void backwardDataSlab(const float* __restrict x, float* __restrict gy, int64_t length, const float* mean,
    const float* a, const float* b, const float* k) {
  const int64_t rows = length / kLanes;
  for (int64_t row = 0; row < rows; row++) {
#pragma omp simd
    for (int l = 0; l < kLanes; l++) {
      const int64_t i = row * kLanes + l;
      gy[i] = gy[i] * a[l] + (x[i] - mean[l]) * b[l] + k[l];
    }
  }
  for (int64_t i = rows * kLanes; i < length; i++) {
    const int64_t l = i % kLanes;
    gy[i] = gy[i] * a[l] + (x[i] - mean[l]) * b[l] + k[l];
  }
}

/** body(thread, slab) for every slab, each thread over its static range. */
template <class Body>
void forSlabs(const Slabs& s, Body body) {
  forThreadRanges(s.count, s.count * s.length, [&](int t, int64_t begin, int64_t end) {
    for (int64_t slab = begin; slab < end; slab++) body(t, slab);
  });
}

/** The caller passes dense layouts (no padded channels) whose block divides kLanes. */
void checkBlock(const BlockedImage& x) {
  if (kLanes % x.block != 0 || x.paddedChannels() != x.c) {
    throw std::invalid_argument("norm-quantize kernels need a dense layout with a channel block dividing 16");
  }
}

}  // namespace

void channelMoments(const BlockedImage& x, double* mean, double* variance) {
  checkBlock(x);
  const Slabs s(x);
  // Sums of x - shift[c], shift[c] a value of the channel: robust when |mean| >> std.
  std::vector<float> shift(static_cast<size_t>(s.blocks * s.block), 0.0f);
  for (int64_t c = 0; c < x.c; c++) shift[c] = x.data[x.offset(0, c, 0, 0)];
  ThreadPartials partials(2 * x.c);
  forSlabs(s, [&](int t, int64_t slab) {
    Lanes laneShift;
    s.spread(slab, shift.data(), laneShift);
    LaneSums sum = {}, sumSq = {};
    momentsSlab(x.data + slab * s.length, s.length, laneShift, sum, sumSq);
    double* p = partials.of(t);
    s.gather(slab, sum, p);
    s.gather(slab, sumSq, p + x.c);
  });
  std::vector<double> total(static_cast<size_t>(2 * x.c));
  partials.combineInto(total.data());
  const double count = static_cast<double>(x.n * x.h * x.w);
  for (int64_t c = 0; c < x.c; c++) {
    const double m = total[c] / count;
    mean[c] = shift[c] + m;
    variance[c] = std::max(0.0, total[x.c + c] / count - m * m);
  }
}

void normQuantize(const BlockedImage& x, const NormAffine& norm, const QuantSpec& spec, float* q) {
  checkBlock(x);
  const Slabs s(x);
  const Range r(spec);
  const Channel c(spec, 0);
  const Bits relu = maskOf(norm.relu);
  withProjection(spec, [&](const auto& magnitudeOf) {
    withVariant(spec, false, [&](auto variant) {
      withGrouping(magnitudeOf, [&](auto grouped) {
        forSlabs(s, [&](int, int64_t slab) {
          const int64_t at = slab * s.length;
          forwardSlab<decltype(variant), decltype(grouped)::value>(x.data + at, q + at, s.length, NormLanes(s, slab, norm),
              relu, r, c, magnitudeOf);
        });
      });
    });
  });
}

void normQuantizeBackward(const BlockedImage& x, const float* gq, const NormAffine& norm, const float* invStd,
    const QuantSpec& spec, float* gx, float* gGamma, float* gBeta, double* quantSums) {
  checkBlock(x);
  const Slabs s(x);
  const Range r(spec);
  const Channel c(spec, 0);
  const Bits relu = maskOf(norm.relu);
  const int64_t channels = x.c;
  ThreadPartials partials(2 * channels + kQuantSums);
  std::vector<double> totals(static_cast<size_t>(2 * channels + kQuantSums));
  withProjection(spec, [&](const auto& magnitudeOf) {
    withVariant(spec, true, [&](auto variant) {
      using V = decltype(variant);
      withGrouping(magnitudeOf, [&](auto grouped) {
        forSlabs(s, [&](int t, int64_t slab) {
          const int64_t at = slab * s.length;
          LaneSums sumG = {}, sumGX = {};
          double* p = partials.of(t);
          backwardSumsSlab<V, decltype(grouped)::value>(x.data + at, gq + at, gx + at, s.length, NormLanes(s, slab, norm),
              relu, r, c, magnitudeOf, sumG, sumGX, p + 2 * channels);
          s.gather(slab, sumG, p);
          s.gather(slab, sumGX, p + channels);
        });
      });
    });
  });
  partials.combineInto(totals.data());
  // gx = gamma invStd (gy - mean(gy) - xhat mean(gy xhat)), xhat = (x - mean) invStd.
  const double count = static_cast<double>(x.n * x.h * x.w);
  std::vector<float> a(static_cast<size_t>(channels)), b(a.size()), k(a.size());
  for (int64_t ch = 0; ch < channels; ch++) {
    const double scale = norm.scale[ch];  // gamma * invStd
    a[ch] = static_cast<float>(scale);
    b[ch] = static_cast<float>(-scale * invStd[ch] * invStd[ch] * totals[channels + ch] / count);
    k[ch] = static_cast<float>(-scale * totals[ch] / count);
    gBeta[ch] = static_cast<float>(totals[ch]);
    gGamma[ch] = static_cast<float>(totals[channels + ch] * invStd[ch]);
  }
  forSlabs(s, [&](int, int64_t slab) {
    Lanes mean, la, lb, lk;
    s.spread(slab, norm.mean, mean);
    s.spread(slab, a.data(), la);
    s.spread(slab, b.data(), lb);
    s.spread(slab, k.data(), lk);
    const int64_t at = slab * s.length;
    backwardDataSlab(x.data + at, gx + at, s.length, mean, la, lb, lk);
  });
  std::copy(totals.begin() + 2 * channels, totals.end(), quantSums);
  clearInRangeSums(spec, quantSums);
}

}  // namespace tq::kernels

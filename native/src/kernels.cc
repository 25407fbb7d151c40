#include "kernels.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "parallel.hpp"

namespace tq::kernels {
namespace {

template <class Op>
void map1(const float* __restrict x, float* __restrict y, int64_t n, Op op) {
  forThreadRanges(n, n, [&](int, int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; i++) y[i] = op(x[i]);
  });
}

template <class Op>
void map2(const float* __restrict a, const float* __restrict b, float* __restrict y, int64_t n, Op op) {
  forThreadRanges(n, n, [&](int, int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; i++) y[i] = op(a[i], b[i]);
  });
}

/** Per-thread partials of a reduction, combined in thread order. */
template <class Partial, class Body, class Combine>
Partial reduceRanges(int64_t n, Partial identity, Body body, Combine combine) {
  std::vector<Partial> partials(maxTeam(), identity);
  forThreadRanges(n, n, [&](int t, int64_t begin, int64_t end) { partials[t] = body(begin, end); });
  Partial total = identity;
  for (const Partial& p : partials) total = combine(total, p);
  return total;
}

}  // namespace

void copy(const float* src, float* dst, int64_t n) {
  forThreadRanges(n, n, [&](int, int64_t begin, int64_t end) {
    std::memcpy(dst + begin, src + begin, static_cast<size_t>(end - begin) * sizeof(float));
  });
}

void fillZero(float* dst, int64_t n) {
  forThreadRanges(n, n, [&](int, int64_t begin, int64_t end) {
    std::memset(dst + begin, 0, static_cast<size_t>(end - begin) * sizeof(float));
  });
}

void add(const float* a, const float* b, float* y, int64_t n) {
  map2(a, b, y, n, [](float u, float v) { return u + v; });
}

void addRelu(const float* a, const float* b, float* y, int64_t n) {
  map2(a, b, y, n, [](float u, float v) {
    const float s = u + v;
    return s < 0.0f ? 0.0f : s;  // NaN stays NaN, as in PyTorch
  });
}

void affine(const float* x, float* y, int64_t n, float alpha, float beta) {
  map1(x, y, n, [=](float u) { return alpha * u + beta; });
}

void mul(const float* a, const float* b, float* y, int64_t n) {
  map2(a, b, y, n, [](float u, float v) { return u * v; });
}

void relu(const float* x, float* y, int64_t n) {
  map1(x, y, n, [](float u) { return u < 0.0f ? 0.0f : u; });
}

void reluBackward(const float* gy, const float* y, float* gx, int64_t n) {
  map2(gy, y, gx, n, [](float g, float v) { return v > 0.0f ? g : 0.0f; });
}

void clippedRelu(const float* x, float* y, int64_t n, float ceiling) {
  map1(x, y, n, [=](float u) { return u < 0.0f ? 0.0f : u > ceiling ? ceiling : u; });
}

void clippedReluBackward(const float* gy, const float* y, float* gx, int64_t n, float ceiling) {
  map2(gy, y, gx, n, [=](float g, float v) { return v <= 0.0f || v >= ceiling ? 0.0f : g; });
}

namespace {
/**
 * tanh as an odd/even rational function of x on [-7.9988, 7.9988] (clamped outside, where tanh is
 * 1 in float32): the minimax approximation Eigen uses. Measured against float64 tanh over [-10, 10]
 * and 1e-8..10: at most 7 ulp (4e-7 relative). Unlike std::tanh it vectorizes (DoReFa's weight
 * transform runs it on every weight of every layer, every step).
 */
inline float rationalTanh(float x) {
  constexpr float kClamp = 7.99881172180175781f;
  const float c = x < -kClamp ? -kClamp : (x > kClamp ? kClamp : x);
  const float c2 = c * c;
  float p = -2.76076847742355e-16f;
  p = p * c2 + 2.00018790482477e-13f;
  p = p * c2 + -8.60467152213735e-11f;
  p = p * c2 + 5.12229709037114e-08f;
  p = p * c2 + 1.48572235717979e-05f;
  p = p * c2 + 6.37261928875436e-04f;
  p = p * c2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * c2 + 1.18534705686654e-04f;
  q = q * c2 + 2.26843463243900e-03f;
  q = q * c2 + 4.89352518554385e-03f;
  const float t = c * p / q;
  return std::fabs(x) < 0.0004f ? x : t;  // tanh(x) = x in float32 there; NaN stays NaN
}
}  // namespace

void tanh(const float* x, float* y, int64_t n) {
  map1(x, y, n, [](float u) { return rationalTanh(u); });
}

void tanhBackward(const float* gy, const float* y, float* gx, int64_t n) {
  map2(gy, y, gx, n, [](float g, float v) { return g * (1.0f - v * v); });
}

void axpy(float* __restrict dst, const float* __restrict src, int64_t n, float alpha) {
  forThreadRanges(n, n, [&](int, int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; i++) dst[i] += alpha * src[i];
  });
}

double dot(const float* a, const float* b, int64_t n) {
  return reduceRanges(
      n, 0.0,
      [&](int64_t begin, int64_t end) {
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = begin; i < end; i++) s += static_cast<double>(a[i]) * b[i];
        return s;
      },
      [](double x, double y) { return x + y; });
}

int64_t countNonFinite(const float* x, int64_t n) {
  return reduceRanges(
      n, int64_t{0},
      [&](int64_t begin, int64_t end) {
        int64_t count = 0;
#pragma omp simd reduction(+ : count)
        for (int64_t i = begin; i < end; i++) count += std::isfinite(x[i]) ? 0 : 1;
        return count;
      },
      [](int64_t p, int64_t q) { return p + q; });
}

void stats(const float* x, int64_t n, int64_t channels, double* out) {
  constexpr int kFields = 5;
  const double inf = std::numeric_limits<double>::infinity();
  const int team = maxTeam();
  // partial[(t * channels + c) * kFields + field]
  std::vector<double> partial(static_cast<size_t>(team) * channels * kFields);
  for (int64_t i = 0; i < team * channels; i++) {
    double* p = &partial[i * kFields];
    p[0] = p[1] = p[4] = 0.0;
    p[2] = inf;
    p[3] = -inf;
  }
  forChannelSegments(n, channels, n, [&](int t, int64_t c, int64_t begin, int64_t end) {
    double sum = 0.0, sumSq = 0.0, absSum = 0.0, lo = inf, hi = -inf;
#pragma omp simd reduction(+ : sum, sumSq, absSum) reduction(min : lo) reduction(max : hi)
    for (int64_t i = begin; i < end; i++) {
      const double v = x[i];
      sum += v;
      sumSq += v * v;
      absSum += std::fabs(v);
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    double* p = &partial[(t * channels + c) * kFields];
    p[0] += sum;
    p[1] += sumSq;
    p[2] = std::min(p[2], lo);
    p[3] = std::max(p[3], hi);
    p[4] += absSum;
  });
  for (int64_t c = 0; c < channels; c++) {
    double* o = out + c * kFields;
    o[0] = o[1] = o[4] = 0.0;
    o[2] = inf;
    o[3] = -inf;
    for (int t = 0; t < team; t++) {
      const double* p = &partial[(t * channels + c) * kFields];
      o[0] += p[0];
      o[1] += p[1];
      o[2] = std::min(o[2], p[2]);
      o[3] = std::max(o[3], p[3]);
      o[4] += p[4];
    }
  }
}

void sgdStep(float* __restrict param, const float* __restrict grad, float* __restrict momentumBuf,
    int64_t n, const SgdParams& p) {
  const float keep = 1.0f - p.dampening;
  forThreadRanges(n, n, [&](int, int64_t begin, int64_t end) {
    if (!momentumBuf) {
#pragma omp simd
      for (int64_t i = begin; i < end; i++) param[i] -= p.lr * (grad[i] + p.weightDecay * param[i]);
      return;
    }
#pragma omp simd
    for (int64_t i = begin; i < end; i++) {
      const float d = grad[i] + p.weightDecay * param[i];
      const float buf = p.momentum * momentumBuf[i] + keep * d;
      momentumBuf[i] = buf;
      param[i] -= p.lr * (p.nesterov ? d + p.momentum * buf : buf);
    }
  });
}

void adamStep(float* __restrict param, const float* __restrict grad, float* __restrict m,
    float* __restrict v, int64_t n, const AdamParams& p) {
  const double correction1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double correction2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  const float stepSize = static_cast<float>(p.lr / correction1);
  const float invSqrtCorrection2 = static_cast<float>(1.0 / std::sqrt(correction2));
  const float decay = p.decoupled ? 1.0f - p.lr * p.weightDecay : 1.0f;
  const float l2 = p.decoupled ? 0.0f : p.weightDecay;
  forThreadRanges(n, n, [&](int, int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; i++) {
      const float w = param[i] * decay;
      const float g = grad[i] + l2 * param[i];
      const float mi = p.beta1 * m[i] + (1.0f - p.beta1) * g;
      const float vi = p.beta2 * v[i] + (1.0f - p.beta2) * g * g;
      m[i] = mi;
      v[i] = vi;
      param[i] = w - stepSize * mi / (std::sqrt(vi) * invSqrtCorrection2 + p.eps);
    }
  });
}

CrossEntropy softmaxCrossEntropy(const float* logits, const int32_t* labels, int64_t rows,
    int64_t classes, double smoothing, float* probs) {
  CrossEntropy result{0.0, 0};
  const double uniform = smoothing / static_cast<double>(classes);
  for (int64_t r = 0; r < rows; r++) {
    const float* x = logits + r * classes;
    int64_t best = 0;
    for (int64_t c = 1; c < classes; c++) {
      if (x[c] > x[best]) best = c;
    }
    const double top = x[best];
    double sumExp = 0.0, sumLogits = 0.0;
    for (int64_t c = 0; c < classes; c++) {
      sumExp += std::exp(static_cast<double>(x[c]) - top);
      sumLogits += x[c];
    }
    const double logSumExp = top + std::log(sumExp);
    for (int64_t c = 0; c < classes; c++) {
      probs[r * classes + c] = static_cast<float>(std::exp(static_cast<double>(x[c]) - logSumExp));
    }
    const int32_t label = labels[r];
    result.loss += (1.0 - smoothing) * (logSumExp - x[label]) + uniform * (classes * logSumExp - sumLogits);
    if (best == label) result.correct++;
  }
  result.loss /= static_cast<double>(rows);
  return result;
}

void softmaxCrossEntropyBackward(const float* probs, const int32_t* labels, int64_t rows,
    int64_t classes, double smoothing, double scale, float* grad) {
  const double uniform = smoothing / static_cast<double>(classes);
  const double factor = scale / static_cast<double>(rows);
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t c = 0; c < classes; c++) {
      const double target = uniform + (c == labels[r] ? 1.0 - smoothing : 0.0);
      grad[r * classes + c] = static_cast<float>((probs[r * classes + c] - target) * factor);
    }
  }
}

void columnSums(const float* x, int64_t rows, int64_t cols, float* out) {
  parallelFor(cols, rows * cols, [&](int64_t c) {
    double s = 0.0;
    for (int64_t r = 0; r < rows; r++) s += x[r * cols + c];
    out[c] = static_cast<float>(s);
  });
}

void globalAvgPool(const BlockedImage& x, float* y) {
  const int64_t blocks = x.paddedChannels() / x.block;
  const int64_t pixels = x.h * x.w;
  const double inv = 1.0 / static_cast<double>(pixels);
  parallelFor(x.n * blocks, x.n * blocks * pixels * x.block, [&](int64_t nb) {
    const int64_t n = nb / blocks, cb = nb % blocks;
    const float* src = x.data + nb * pixels * x.block;
    for (int64_t lane = 0; lane < x.block; lane++) {
      const int64_t c = cb * x.block + lane;
      if (c >= x.c) break;
      double s = 0.0;
      for (int64_t p = 0; p < pixels; p++) s += src[p * x.block + lane];
      y[n * x.c + c] = static_cast<float>(s * inv);
    }
  });
}

void globalAvgPoolBackward(const float* gy, const BlockedImage& gx) {
  const int64_t blocks = gx.paddedChannels() / gx.block;
  const int64_t pixels = gx.h * gx.w;
  const float inv = 1.0f / static_cast<float>(pixels);
  parallelFor(gx.n * blocks, gx.n * blocks * pixels * gx.block, [&](int64_t nb) {
    const int64_t n = nb / blocks, cb = nb % blocks;
    float* dst = gx.data + nb * pixels * gx.block;
    for (int64_t p = 0; p < pixels; p++) {
      for (int64_t lane = 0; lane < gx.block; lane++) {
        const int64_t c = cb * gx.block + lane;
        dst[p * gx.block + lane] = c < gx.c ? gy[n * gx.c + c] * inv : 0.0f;
      }
    }
  });
}

namespace {
/** Offset in `img` of the plane (pixel 0) of each channel `first + lane`, or -1 outside [0, img.c). */
void laneOffsets(const BlockedImage& img, int64_t n, int64_t first, int64_t lanes, int64_t* out) {
  for (int64_t lane = 0; lane < lanes; lane++) {
    const int64_t c = first + lane;
    out[lane] = c >= 0 && c < img.c ? img.offset(n, c, 0, 0) : -1;
  }
}
}  // namespace

void shortcutPad(const BlockedImage& x, const BlockedImage& y, int64_t stride, int64_t padBefore) {
  const int64_t blocks = y.paddedChannels() / y.block;
  parallelFor(y.n * blocks, y.n * blocks * y.h * y.w * y.block, [&](int64_t nb) {
    const int64_t n = nb / blocks, cb = nb % blocks;
    int64_t src[kMaxChannelBlock];
    laneOffsets(x, n, cb * y.block - padBefore, y.block, src);
    float* dst = y.data + nb * y.h * y.w * y.block;
    for (int64_t h = 0; h < y.h; h++) {
      for (int64_t w = 0; w < y.w; w++) {
        const int64_t pixel = (h * stride * x.w + w * stride) * x.block;
        for (int64_t lane = 0; lane < y.block; lane++) *dst++ = src[lane] >= 0 ? x.data[src[lane] + pixel] : 0.0f;
      }
    }
  });
}

void shortcutPadBackward(const BlockedImage& gy, const BlockedImage& gx, int64_t stride, int64_t padBefore) {
  const int64_t blocks = gx.paddedChannels() / gx.block;
  parallelFor(gx.n * blocks, gx.n * blocks * gx.h * gx.w * gx.block, [&](int64_t nb) {
    const int64_t n = nb / blocks, cb = nb % blocks;
    int64_t src[kMaxChannelBlock];
    laneOffsets(gy, n, cb * gx.block + padBefore, gx.block, src);
    // Channels of gx beyond its real ones (blocked padding) have no source and stay zero.
    for (int64_t lane = 0; lane < gx.block; lane++) {
      if (cb * gx.block + lane >= gx.c) src[lane] = -1;
    }
    float* dst = gx.data + nb * gx.h * gx.w * gx.block;
    for (int64_t h = 0; h < gx.h; h++) {
      for (int64_t w = 0; w < gx.w; w++) {
        const bool sampled = h % stride == 0 && w % stride == 0;
        const int64_t pixel = (h / stride * gy.w + w / stride) * gy.block;
        for (int64_t lane = 0; lane < gx.block; lane++) *dst++ = sampled && src[lane] >= 0 ? gy.data[src[lane] + pixel] : 0.0f;
      }
    }
  });
}

namespace {
/**
 * For one (image, channel block) plane `nb` of x: visit(outOffset, inOffset) for every output pixel
 * and real lane of the pooled plane (outH x outW), with the offset (within the plane) of the input
 * position that wins its window (see maxPool2d in kernels.hpp). `FixedBlock` is x.block when the
 * caller knows it at compile time (the lane loops then vectorize), 0 otherwise. The comparison
 * runs on every lane, padded ones included (their values are zeros), and is branch-free.
 */
template <int64_t FixedBlock, class Visit>
void forEachWinner(const BlockedImage& x, int64_t nb, int64_t outH, int64_t outW, const PoolWindow& p, Visit visit) {
  const int64_t block = FixedBlock > 0 ? FixedBlock : x.block;
  const int64_t lanes = std::min(block, x.c - nb % (x.paddedChannels() / block) * block);
  const float* plane = x.data + nb * x.h * x.w * block;
  alignas(64) float best[kMaxChannelBlock];
  alignas(64) int32_t winner[kMaxChannelBlock];  // a plane holds far fewer than 2^31 values
  for (int64_t oy = 0; oy < outH; oy++) {
    const int64_t y0 = oy * p.strideH - p.padH;
    const int64_t yFirst = std::max<int64_t>(0, y0), yEnd = std::min(x.h, y0 + p.kernelH);
    for (int64_t ox = 0; ox < outW; ox++) {
      const int64_t x0 = ox * p.strideW - p.padW;
      const int64_t xFirst = std::max<int64_t>(0, x0), xEnd = std::min(x.w, x0 + p.kernelW);
      const int32_t first = static_cast<int32_t>((yFirst * x.w + xFirst) * block);
#pragma omp simd
      for (int64_t lane = 0; lane < block; lane++) {
        winner[lane] = first + static_cast<int32_t>(lane);
        best[lane] = plane[first + lane];
      }
      for (int64_t iy = yFirst; iy < yEnd; iy++) {
        for (int64_t ix = xFirst; ix < xEnd; ix++) {
          const int32_t pixel = static_cast<int32_t>((iy * x.w + ix) * block);
          const float* v = plane + pixel;
#pragma omp simd
          for (int64_t lane = 0; lane < block; lane++) {
            const bool wins = v[lane] > best[lane] || v[lane] != v[lane];  // v != v: NaN
            best[lane] = wins ? v[lane] : best[lane];
            winner[lane] = wins ? pixel + static_cast<int32_t>(lane) : winner[lane];
          }
        }
      }
      const int64_t out = (oy * outW + ox) * block;
      for (int64_t lane = 0; lane < lanes; lane++) visit(out + lane, winner[lane]);
    }
  }
}

/** forEachWinner with the block sizes convolutions produce fixed at compile time. */
template <class Visit>
void forEachWinnerOf(const BlockedImage& x, int64_t nb, int64_t outH, int64_t outW, const PoolWindow& p, Visit visit) {
  switch (x.block) {
    case 16: return forEachWinner<16>(x, nb, outH, outW, p, visit);
    case 8: return forEachWinner<8>(x, nb, outH, outW, p, visit);
    default: return forEachWinner<0>(x, nb, outH, outW, p, visit);
  }
}
}  // namespace

void maxPool2d(const BlockedImage& x, const BlockedImage& y, const PoolWindow& p) {
  const int64_t planes = y.n * (y.paddedChannels() / y.block);
  const int64_t planeSize = y.h * y.w * y.block;
  parallelFor(planes, planes * planeSize * p.kernelH * p.kernelW, [&](int64_t nb) {
    const float* src = x.data + nb * x.h * x.w * x.block;
    float* dst = y.data + nb * planeSize;
    std::memset(dst, 0, static_cast<size_t>(planeSize) * sizeof(float));  // padded lanes stay zero
    forEachWinnerOf(x, nb, y.h, y.w, p, [&](int64_t out, int64_t in) { dst[out] = src[in]; });
  });
}

void maxPool2dBackward(const BlockedImage& gy, const BlockedImage& x, const BlockedImage& gx, const PoolWindow& p) {
  const int64_t planes = gx.n * (gx.paddedChannels() / gx.block);
  const int64_t planeSize = gx.h * gx.w * gx.block;
  parallelFor(planes, planes * gy.h * gy.w * gy.block * p.kernelH * p.kernelW, [&](int64_t nb) {
    const float* g = gy.data + nb * gy.h * gy.w * gy.block;
    float* dst = gx.data + nb * planeSize;
    std::memset(dst, 0, static_cast<size_t>(planeSize) * sizeof(float));
    forEachWinnerOf(x, nb, gy.h, gy.w, p, [&](int64_t out, int64_t in) { dst[in] += g[out]; });
  });
}

}  // namespace tq::kernels

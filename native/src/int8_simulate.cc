#include "int8_simulate.hpp"

#include <algorithm>
#include <vector>

#include "int8_kernels.hpp"
#include "parallel.hpp"

namespace tq::int8 {
namespace {

/**
 * The integer nearest x, x within float error of one: floor(x + 0.5) in doubles, as simulate.ts's
 * `nearest`. Truncation then a correction, because std::floor is a library call on baseline x86-64
 * (no SSE4.1) and this runs once per stored element; exact for |x| < 2^31 (accumulators are int32).
 */
inline int32_t nearest(double x) {
  const double y = x + 0.5;
  const auto t = static_cast<int32_t>(y);
  return t - (static_cast<double>(t) > y ? 1 : 0);
}

/**
 * How a tensor's integers are recovered from its real values, per channel: v = nearest((x - offset) / unit),
 * 0 where the unit is 0 (its divisor then 1, so that no channel divides by 0 in the vector loops).
 */
struct Recovery {
  std::vector<double> offset, divisor;
  std::vector<int32_t> keep;

  Recovery(int64_t channels, const double* offsets, const double* units) {
    for (int64_t c = 0; c < channels; c++) {
      offset.push_back(offsets ? offsets[c] : 0);
      divisor.push_back(units[c] == 0 ? 1 : units[c]);
      keep.push_back(units[c] == 0 ? 0 : 1);
    }
  }
};

/** The integers of one plane: dst[p] = nearest((src[p] - offset) / unit), contiguous so that the loop vectorizes. */
TQ_CLONES void recoverPlane(const float* src, int64_t n, double offset, double unit, int32_t* dst) {
  for (int64_t p = 0; p < n; p++) dst[p] = nearest((static_cast<double>(src[p]) - offset) / unit);
}

/**
 * One channel block (`width` of its `block` channels in use) of one image into NHWC rows of
 * `channels` integers; `offset`, `divisor` and `keep` start at the block's first channel.
 */
template <class T>
TQ_CLONES void recoverBlock(const float* src, int64_t pixels, int64_t block, int64_t width, const double* offset, const double* divisor, const int32_t* keep, int64_t channels, T* dst) {
  for (int64_t p = 0; p < pixels; p++) {
    const float* s = src + p * block;
    T* d = dst + p * channels;
    for (int64_t j = 0; j < width; j++) d[j] = static_cast<T>(keep[j] * nearest((static_cast<double>(s[j]) - offset[j]) / divisor[j]));
  }
}

/** Image n of x -> NHWC integers (channels innermost, as the epilogue kernels read them). */
template <class T>
void recoverImage(const FloatImages& x, int64_t n, const Recovery& r, T* dst, std::vector<int32_t>& plane) {
  const int64_t pixels = x.pixels(), channels = x.channels;
  if (x.block > 1) {
    for (int64_t first = 0; first < channels; first += x.block) {
      const int64_t k = first / x.block, width = std::min(x.block, channels - first);
      recoverBlock(x.blockData(n, k), pixels, x.block, width, &r.offset[first], &r.divisor[first], &r.keep[first], channels, dst + first);
    }
    return;
  }
  plane.resize(static_cast<size_t>(pixels));
  for (int64_t c = 0; c < channels; c++) {
    if (r.keep[c] == 0) std::fill(plane.begin(), plane.end(), 0);
    else recoverPlane(x.blockData(n, c), pixels, r.offset[c], r.divisor[c], plane.data());
    T* d = dst + c;
    for (int64_t p = 0; p < pixels; p++) d[p * channels] = static_cast<T>(plane[static_cast<size_t>(p)]);
  }
}

/** One channel block of NHWC integers -> real values: dst[p * block + j] = float(unit * v[p * channels + j]). */
template <class T>
TQ_CLONES void storeBlock(const T* v, int64_t pixels, int64_t block, int64_t width, int64_t channels, double unit, float* dst) {
  for (int64_t p = 0; p < pixels; p++) {
    const T* s = v + p * channels;
    float* o = dst + p * block;
    for (int64_t j = 0; j < width; j++) o[j] = static_cast<float>(unit * static_cast<double>(s[j]));
  }
}

/** NHWC integers of one image -> image n of out, in real units. */
template <class T>
void storeImage(const T* v, const FloatImages& out, int64_t n, double unit) {
  for (int64_t first = 0; first < out.channels; first += out.block) {
    storeBlock(v + first, out.pixels(), out.block, std::min(out.block, out.channels - first), out.channels, unit, out.blockData(n, first / out.block));
  }
}

/** body(image, scratch) for every image, images split between the threads. */
template <class Body>
void forImages(const FloatImages& x, std::vector<SimulationScratch>& scratch, Body body) {
  scratch.resize(std::max(scratch.size(), static_cast<size_t>(maxTeam())));
  const int64_t work = x.images * x.channels * x.pixels();
#pragma omp parallel for schedule(static) if (work >= kParallelThreshold)
  for (int64_t n = 0; n < x.images; n++) body(n, scratch[static_cast<size_t>(omp_get_thread_num())]);
}

}  // namespace

void simulateConv(const ConvStep& op, const FloatImages& conv, const double* M, const double* B, const FloatImages* shortcut, double shortcutScale, double unit, const FloatImages& out, std::vector<SimulationScratch>& scratch) {
  const int64_t rows = conv.pixels(), n = rows * conv.channels;
  const Recovery accumulators(conv.channels, B, M);
  const std::vector<double> scales(static_cast<size_t>(conv.channels), shortcutScale);
  const Recovery shortcutValues(conv.channels, nullptr, scales.data());
  const PixelRange image{0, rows, conv.channels, conv.height, conv.width};
  forImages(conv, scratch, [&](int64_t i, SimulationScratch& s) {
    s.values.resize(static_cast<size_t>(n));
    int32_t* acc = s.values.data();
    recoverImage(conv, i, accumulators, acc, s.plane);
    switch (op.epilogue) {
      case EpilogueKind::activation:
        requantizeActivate(acc, rows, conv.channels, op.requant, op.activation, acc, IntType::i32, 0);
        return storeImage(acc, out, i, unit);
      case EpilogueKind::logits:
        requantize(acc, image, op.requant);
        return storeImage(acc, out, i, unit);
      case EpilogueKind::residual: {
        s.stored.resize(static_cast<size_t>(n));
        ShortcutAdd add;
        if (shortcut) {
          s.shortcut.resize(static_cast<size_t>(n));
          recoverImage(*shortcut, i, shortcutValues, s.shortcut.data(), s.plane);
          add = ShortcutAdd{s.shortcut.data(), IntType::i16, conv.height, conv.width, conv.channels, 1, 0, op.shortcut->mult, op.shortcut->shift};
        }
        residual(acc, image, op.requant, shortcut ? &add : nullptr, op.residualLo, op.residualHi, s.stored.data(), IntType::i16);
        return storeImage(s.stored.data(), out, i, unit);
      }
    }
  });
}

void simulateQuantize(const QuantizeStep& op, const FloatImages& x, double step, double unit, const FloatImages& out, std::vector<SimulationScratch>& scratch) {
  const std::vector<double> scales(static_cast<size_t>(x.channels), step);
  const Recovery codes(x.channels, nullptr, scales.data());
  forImages(x, scratch, [&](int64_t i, SimulationScratch& s) {
    s.values.resize(static_cast<size_t>(x.channels * x.pixels()));
    recoverImage(x, i, codes, s.values.data(), s.plane);
    requantizeActivate(s.values.data(), x.pixels(), x.channels, op.requant, op.activation, s.values.data(), IntType::i32, 0);
    storeImage(s.values.data(), out, i, unit);
  });
}

}  // namespace tq::int8

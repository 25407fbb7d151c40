#include "int8_simulate.hpp"

#include <algorithm>
#include <vector>

#include "int8_kernels.hpp"

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

/** The integers of one plane: dst[p] = nearest((src[p] - offset) / unit), contiguous so that the loop vectorizes. */
TQ_CLONES void recoverPlane(const float* src, int64_t n, double offset, double unit, int32_t* dst) {
  for (int64_t p = 0; p < n; p++) dst[p] = nearest((static_cast<double>(src[p]) - offset) / unit);
}

/**
 * NCHW floats -> NHWC integers: dst[n, p, c] = nearest((src[n, c, p] - offset[c]) / unit[c]), 0
 * where unit[c] is 0 (`offset` null: 0). Each image fits in L2, so the strided stores stay cheap.
 */
template <class T>
void recoverNhwc(const FloatPlanes& x, const double* offset, const double* unit, T* dst, std::vector<int32_t>& plane) {
  const int64_t pixels = x.height * x.width;
  plane.resize(static_cast<size_t>(pixels));
  for (int64_t n = 0; n < x.images; n++) {
    for (int64_t c = 0; c < x.channels; c++) {
      if (unit[c] == 0) std::fill(plane.begin(), plane.end(), 0);
      else recoverPlane(x.data + (n * x.channels + c) * pixels, pixels, offset ? offset[c] : 0, unit[c], plane.data());
      T* d = dst + n * pixels * x.channels + c;
      for (int64_t p = 0; p < pixels; p++) d[p * x.channels] = static_cast<T>(plane[static_cast<size_t>(p)]);
    }
  }
}

/** NHWC integers -> NCHW real values: out[n, c, p] = float(unit * v[n, p, c]). */
template <class T>
void storeNchw(const T* v, const FloatPlanes& shape, double unit, float* out) {
  const int64_t pixels = shape.height * shape.width;
  for (int64_t n = 0; n < shape.images; n++) {
    for (int64_t c = 0; c < shape.channels; c++) {
      const T* s = v + n * pixels * shape.channels + c;
      float* o = out + (n * shape.channels + c) * pixels;
      for (int64_t p = 0; p < pixels; p++) o[p] = static_cast<float>(unit * static_cast<double>(s[p * shape.channels]));
    }
  }
}

}  // namespace

void simulateConv(const ConvStep& op, const FloatPlanes& conv, const double* M, const double* B, const float* shortcut, double shortcutScale, double unit, float* out, SimulationScratch& scratch) {
  const int64_t rows = conv.images * conv.height * conv.width, n = rows * conv.channels;
  std::vector<int32_t>& acc = scratch.values;
  acc.resize(static_cast<size_t>(n));
  recoverNhwc(conv, B, M, acc.data(), scratch.plane);
  const PixelRange all{0, rows, conv.channels, conv.height, conv.width};
  switch (op.epilogue) {
    case EpilogueKind::activation:
      requantizeActivate(acc.data(), rows, conv.channels, op.requant, op.activation, acc.data(), IntType::i32, 0);
      return storeNchw(acc.data(), conv, unit, out);
    case EpilogueKind::logits:
      requantize(acc.data(), all, op.requant);
      return storeNchw(acc.data(), conv, unit, out);
    case EpilogueKind::residual: {
      std::vector<int16_t>& stored = scratch.stored;
      stored.resize(static_cast<size_t>(n));
      ShortcutAdd add;
      if (shortcut) {
        std::vector<int16_t>& sc = scratch.shortcut;
        sc.resize(static_cast<size_t>(n));
        const std::vector<double> scale(static_cast<size_t>(conv.channels), shortcutScale);
        recoverNhwc(FloatPlanes{shortcut, conv.images, conv.channels, conv.height, conv.width}, nullptr, scale.data(), sc.data(), scratch.plane);
        add = ShortcutAdd{sc.data(), IntType::i16, conv.height, conv.width, conv.channels, 1, 0, op.shortcut->mult, op.shortcut->shift};
      }
      residual(acc.data(), all, op.requant, shortcut ? &add : nullptr, op.residualLo, op.residualHi, stored.data(), IntType::i16);
      return storeNchw(stored.data(), conv, unit, out);
    }
  }
}

void simulateQuantize(const QuantizeStep& op, const FloatPlanes& x, double step, double unit, float* out, SimulationScratch& scratch) {
  std::vector<int32_t>& v = scratch.values;
  v.resize(static_cast<size_t>(x.images * x.channels * x.height * x.width));
  const std::vector<double> scale(static_cast<size_t>(x.channels), step);
  recoverNhwc(x, nullptr, scale.data(), v.data(), scratch.plane);
  requantizeActivate(v.data(), x.images * x.height * x.width, x.channels, op.requant, op.activation, v.data(), IntType::i32, 0);
  storeNchw(v.data(), x, unit, out);
}

}  // namespace tq::int8

// The fused quantize-dequantize kernels (see QuantSpec in src/backend/backend.ts): one pass
// forward, one pass backward with the per-channel parameter-gradient sums.
#pragma once

#include <cstdint>
#include <vector>

namespace tq::kernels {

constexpr int kQuantSums = 5;

struct QuantSpec {
  int64_t channels = 1;
  std::vector<float> scale, offset, outScale, outOffset;  // one per channel
  double lo = 0, hi = 1;
  bool symmetric = false;
  /** Sorted non-negative levels; empty for the uniform grid. */
  std::vector<float> levels;
  double steps = 1;
  bool loInclusive = true, hiInclusive = true, passClipped = false;
  double delta = 0;
};

/** y = project(clip((x - offset) / scale)) * outScale + outOffset, per chunk of dimension 0. */
void quantize(const float* x, float* y, int64_t n, const QuantSpec& spec);

/** gx and, per channel, QUANT_SUMS float64 sums (layout: sums[c * kQuantSums + k]). */
void quantizeBackward(const float* x, const float* gy, float* gx, int64_t n, const QuantSpec& spec, double* sums);

}  // namespace tq::kernels

// The fused quantize-dequantize kernels (see QuantSpec in src/backend/backend.ts): one pass
// forward, one pass backward with the per-channel parameter-gradient sums.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels.hpp"

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
  bool onlyClippedSums = false;  // the sums of in-range terms ([0..2]) stay 0
};

/** y = project(clip((x - offset) / scale)) * outScale + outOffset, per chunk of dimension 0. */
void quantize(const float* x, float* y, int64_t n, const QuantSpec& spec);
/** sum = max(a + b, 0) and q = quantize(sum) in one pass. */
void addReluQuantize(const float* a, const float* b, float* sum, float* q, int64_t n, const QuantSpec& spec);

/**
 * gx (added into gx's values when `accumulate`) and, per channel, QUANT_SUMS float64 sums
 * (layout: sums[c * kQuantSums + k]).
 */
void quantizeBackward(const float* x, const float* gy, float* gx, int64_t n, const QuantSpec& spec, double* sums,
    bool accumulate);

/** Training-mode batch normalization per channel: y = (x - mean) * scale + beta, scale = gamma / std. */
struct NormAffine {
  const float* mean;
  const float* scale;
  const float* beta;
  bool relu;  // then y = max(y, 0)
};

// Batch normalization fused with a per-tensor quantize of its output (norm_quantize.cc). Images are
// dense (no padded channels), plain or channel-blocked with a block dividing 16.

/** Per-channel mean and biased variance (float64). */
void channelMoments(const BlockedImage& x, double* mean, double* variance);
/** q = quantize(y) over the normalized image y, in x's layout. */
void normQuantize(const BlockedImage& x, const NormAffine& norm, const QuantSpec& spec, float* q);
/**
 * From the gradient of q: gx (x's layout), the gradients of gamma and beta, and the quantizer's
 * QUANT_SUMS sums. `invStd` is 1 / sqrt(variance + eps) per channel.
 */
void normQuantizeBackward(const BlockedImage& x, const float* gq, const NormAffine& norm, const float* invStd,
    const QuantSpec& spec, float* gx, float* gGamma, float* gBeta, double* quantSums);

}  // namespace tq::kernels

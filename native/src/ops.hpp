// Tensor-level operations: validate shapes, pick layouts, run oneDNN primitives or the addon's
// kernels. Independent of Node-API; every error is an OpError naming the op and the shapes.
#pragma once

#include <optional>
#include <vector>

#include "kernels.hpp"
#include "quantize.hpp"
#include "runtime.hpp"

namespace tq::ops {

// ---- memory --------------------------------------------------------------------------------
Tensor upload(const float* data, int64_t length, const Shape& shape);
/** Logical row-major values into `out` (numel floats). */
void download(const Tensor& x, float* out);
Tensor zeros(const Shape& shape);
Tensor clone(const Tensor& x);
Tensor reshape(const Tensor& x, const Shape& shape);

// ---- elementwise and reductions ----------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor addRelu(const Tensor& a, const Tensor& b);
Tensor affine(const Tensor& x, float alpha, float beta);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor relu(const Tensor& x);
Tensor reluBackward(const Tensor& gy, const Tensor& y);
Tensor clippedRelu(const Tensor& x, float ceiling);
Tensor clippedReluBackward(const Tensor& gy, const Tensor& y, float ceiling);
Tensor tanh(const Tensor& x);
Tensor tanhBackward(const Tensor& gy, const Tensor& y);
void axpyInPlace(Tensor& dst, const Tensor& src, float alpha);
double dot(const Tensor& a, const Tensor& b);
std::vector<double> stats(const Tensor& x, int64_t channels);
int64_t countNonFinite(const Tensor& x);

// ---- convolution ---------------------------------------------------------------------------
struct ConvParams {
  int64_t strideH, strideW, padH, padW, groups;
};
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p);
Tensor conv2dBackwardData(const Tensor& gy, const Tensor& w, const Shape& xShape, const ConvParams& p);
struct WeightGrads {
  Tensor gw;
  std::optional<Tensor> gb;
};
WeightGrads conv2dBackwardWeights(const Tensor& gy, const Tensor& x, const Shape& wShape, bool withBias, const ConvParams& p);

// ---- batch normalization ---------------------------------------------------------------------
struct BatchNormParams {
  float eps;
  float momentum;
  bool relu;
};
/** What the training forward hands to the backward. */
struct BatchNormState {
  Shape shape;
  memory::desc data;  // layout of x
  BatchNormParams params;
  Tensor mean, variance;            // batch statistics (biased variance)
  std::optional<Tensor> workspace;  // fused ReLU mask
};
struct BatchNormTrainResult {
  Tensor y;
  BatchNormState state;
};
BatchNormTrainResult batchNormTrain(const Tensor& x, const Tensor& gamma, const Tensor& beta,
    Tensor& runningMean, Tensor& runningVar, const BatchNormParams& p);
Tensor batchNormInfer(const Tensor& x, const Tensor& gamma, const Tensor& beta,
    const Tensor& runningMean, const Tensor& runningVar, const BatchNormParams& p);
struct BatchNormGrads {
  Tensor gx, gGamma, gBeta;
};
BatchNormGrads batchNormBackward(const Tensor& gy, const Tensor& x, const Tensor& gamma,
    const BatchNormState& state, const BatchNormParams& p);
/** Training-mode batch norm (and ReLU) whose output goes through a per-tensor quantize; returns q. */
BatchNormTrainResult batchNormQuantizeTrain(const Tensor& x, const Tensor& gamma, const Tensor& beta,
    Tensor& runningMean, Tensor& runningVar, const BatchNormParams& p, const kernels::QuantSpec& spec);
struct NormQuantizeGrads {
  BatchNormGrads grads;
  std::vector<double> sums;  // the quantizer's
};
NormQuantizeGrads batchNormQuantizeBackward(const Tensor& gq, const Tensor& x, const Tensor& gamma, const Tensor& beta,
    const BatchNormState& state, const BatchNormParams& p, const kernels::QuantSpec& spec);

// ---- pooling ---------------------------------------------------------------------------------
struct PoolParams {
  int64_t kernelH, kernelW, strideH, strideW, padH, padW;
};
Tensor avgPool2d(const Tensor& x, const PoolParams& p);
Tensor avgPool2dBackward(const Tensor& gy, const Shape& xShape, const PoolParams& p);
Tensor maxPool2d(const Tensor& x, const PoolParams& p);
/** The winners are recomputed from the forward input x. */
Tensor maxPool2dBackward(const Tensor& gy, const Tensor& x, const PoolParams& p);
Tensor globalAvgPool(const Tensor& x);
Tensor globalAvgPoolBackward(const Tensor& gy, const Shape& xShape);

// ---- fully connected -------------------------------------------------------------------------
Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias);
Tensor linearBackwardData(const Tensor& gy, const Tensor& w);
WeightGrads linearBackwardWeights(const Tensor& gy, const Tensor& x, bool withBias);

// ---- shortcut, loss, optimizers, quantization --------------------------------------------------
Tensor shortcutPad(const Tensor& x, int64_t stride, int64_t padBefore, int64_t padAfter);
Tensor shortcutPadBackward(const Tensor& gy, const Shape& xShape, int64_t stride, int64_t padBefore);

struct CrossEntropyResult {
  double loss;
  Tensor probs;
  int64_t correct;
};
CrossEntropyResult softmaxCrossEntropy(const Tensor& logits, const int32_t* labels, int64_t count, double smoothing);
Tensor softmaxCrossEntropyBackward(const Tensor& probs, const int32_t* labels, int64_t count, double smoothing, double scale);

void sgdStep(Tensor& param, const Tensor& grad, Tensor* momentumBuf, const kernels::SgdParams& p);
void adamStep(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const kernels::AdamParams& p);

Tensor quantize(const Tensor& x, const kernels::QuantSpec& spec);
struct JoinQuantized {
  Tensor y, q;
};
/** y = relu(a + b) (a residual join) and q = quantize(y) with a per-tensor spec, in one pass. */
JoinQuantized addReluQuantize(const Tensor& a, const Tensor& b, const kernels::QuantSpec& spec);
struct QuantizeGrads {
  std::optional<Tensor> gx;  // none when accumulated into the caller's tensor
  std::vector<double> sums;
};
/** gx and the sums; with `into`, gx is added into *into instead (same shape). */
QuantizeGrads quantizeBackward(const Tensor& x, const Tensor& gy, const kernels::QuantSpec& spec, Tensor* into = nullptr);

}  // namespace tq::ops

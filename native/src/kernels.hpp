// The addon's own OpenMP kernels over raw float buffers. Elementwise kernels see the physical
// buffer and are therefore layout agnostic (the caller guarantees matching, unpadded layouts).
#pragma once

#include <cstdint>

namespace tq::kernels {

/** dst = src over n floats, split among the threads. */
void copy(const float* src, float* dst, int64_t n);
/** dst = 0 over n floats, split among the threads. */
void fillZero(float* dst, int64_t n);

void add(const float* a, const float* b, float* y, int64_t n);
void addRelu(const float* a, const float* b, float* y, int64_t n);
void affine(const float* x, float* y, int64_t n, float alpha, float beta);
void mul(const float* a, const float* b, float* y, int64_t n);
void relu(const float* x, float* y, int64_t n);
void reluBackward(const float* gy, const float* y, float* gx, int64_t n);
/** min(max(x, 0), ceiling); NaN stays NaN. */
void clippedRelu(const float* x, float* y, int64_t n, float ceiling);
/** gy where 0 < y < ceiling, else 0 (a NaN y passes gy, as PyTorch's hardtanh backward). */
void clippedReluBackward(const float* gy, const float* y, float* gx, int64_t n, float ceiling);
void tanh(const float* x, float* y, int64_t n);
void tanhBackward(const float* gy, const float* y, float* gx, int64_t n);
/** dst += alpha * src. */
void axpy(float* dst, const float* src, int64_t n, float alpha);

double dot(const float* a, const float* b, int64_t n);
/** [sum, sumSq, min, max, absSum] (float64) for each of `channels` equal contiguous chunks. */
void stats(const float* x, int64_t n, int64_t channels, double* out);
int64_t countNonFinite(const float* x, int64_t n);

struct SgdParams {
  float lr, momentum, dampening, weightDecay;
  bool nesterov;
};
/** PyTorch SGD; `momentumBuf` may be null when momentum is 0. */
void sgdStep(float* param, const float* grad, float* momentumBuf, int64_t n, const SgdParams& p);

struct AdamParams {
  float lr, beta1, beta2, eps, weightDecay;
  bool decoupled;
  int64_t step;
};
/** PyTorch Adam (decoupled = AdamW). */
void adamStep(float* param, const float* grad, float* m, float* v, int64_t n, const AdamParams& p);

struct CrossEntropy {
  double loss;
  int64_t correct;
};
/** Softmax cross-entropy over rows of (rows, classes) logits; writes the probabilities. */
CrossEntropy softmaxCrossEntropy(const float* logits, const int32_t* labels, int64_t rows,
    int64_t classes, double smoothing, float* probs);
/** (probs - target) * scale / rows. */
void softmaxCrossEntropyBackward(const float* probs, const int32_t* labels, int64_t rows,
    int64_t classes, double smoothing, double scale, float* grad);

/** Column sums of a row-major (rows, cols) matrix (float64 accumulation). */
void columnSums(const float* x, int64_t rows, int64_t cols, float* out);

/** Largest channel block the kernels below accept (layouts with larger ones are made plain). */
constexpr int64_t kMaxChannelBlock = 64;

/** An (N, C, H, W) tensor stored as N, ceil(C/block), H, W, block (block 1 = plain NCHW). */
struct BlockedImage {
  float* data;
  int64_t n, c, h, w, block;
  int64_t paddedChannels() const { return (c + block - 1) / block * block; }
  int64_t offset(int64_t in, int64_t ic, int64_t ih, int64_t iw) const {
    return ((in * (paddedChannels() / block) + ic / block) * h * w + ih * w + iw) * block + ic % block;
  }
};

/** Mean over H and W into a plain (N, C) matrix. */
void globalAvgPool(const BlockedImage& x, float* y);
/** Spread a plain (N, C) gradient evenly over H and W. */
void globalAvgPoolBackward(const float* gy, const BlockedImage& gx);
/** Every `stride`-th pixel, channels shifted by `padBefore`, zeros elsewhere. */
void shortcutPad(const BlockedImage& x, const BlockedImage& y, int64_t stride, int64_t padBefore);
void shortcutPadBackward(const BlockedImage& gy, const BlockedImage& gx, int64_t stride, int64_t padBefore);

struct PoolWindow {
  int64_t kernelH, kernelW, strideH, strideW, padH, padW;
};
/**
 * Max pooling, x and y in the same channel block. In each window only positions inside x compete
 * (padding never wins); the first maximum in window order (rows, then columns) wins, a NaN wins
 * over any number (the last NaN): PyTorch's rule, which the js backend follows too.
 */
void maxPool2d(const BlockedImage& x, const BlockedImage& y, const PoolWindow& p);
/** gx (zeroed here) gets each window's gy at the position maxPool2d picks from x; x and gx share a layout. */
void maxPool2dBackward(const BlockedImage& gy, const BlockedImage& x, const BlockedImage& gx, const PoolWindow& p);

}  // namespace tq::kernels

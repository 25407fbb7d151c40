// Batch normalization through oneDNN, in the layout of its input (the convolution's blocked
// layout), with the ReLU fused (its mask kept in the workspace for the backward). The running
// statistics update (PyTorch convention, unbiased variance) is done here. Batch normalization
// fused with the fake-quantize of its output runs on the addon's own kernels (norm_quantize.cc).
#include <cmath>

#include "compat.hpp"
#include "ops.hpp"
#include "ops_common.hpp"

namespace tq::ops {
namespace {

enum OpTag : int64_t { kBatchNormTrain = 200, kBatchNormInfer, kBatchNormBackward };

using Flags = dnnl::normalization_flags;
using ForwardEntry = Compiled<dnnl::batch_normalization_forward::primitive_desc, dnnl::batch_normalization_forward>;
using BackwardEntry = Compiled<dnnl::batch_normalization_backward::primitive_desc, dnnl::batch_normalization_backward>;

/** Validates x and the per-channel parameters; returns the channel count. */
int64_t checkBatchNorm(const char* op, const Tensor& x, std::initializer_list<std::pair<const char*, const Tensor*>> perChannel,
    const BatchNormParams& p) {
  const Shape& shape = x.shape();
  if (shape.size() != 2 && shape.size() != 4) fail(op, "x must be (N, C) or (N, C, H, W), got ", shapeStr(shape));
  if (numelOf(shape) == 0) fail(op, "x ", shapeStr(shape), " is empty");
  const int64_t channels = shape[1];
  for (const auto& [name, t] : perChannel) {
    if (t->shape() != Shape{channels}) {
      fail(op, name, " has shape ", shapeStr(t->shape()), " but x ", shapeStr(shape), " has ", channels, " channels");
    }
  }
  if (!(p.eps >= 0.0f)) fail(op, "eps must be non-negative, got ", p.eps);
  return channels;
}

Flags flagsFor(bool relu, Flags base) {
  Flags f = base | Flags::use_scale | Flags::use_shift;
  return relu ? f | Flags::fuse_norm_relu : f;
}

const ForwardEntry& trainingPrimitive(const memory::desc& data, const BatchNormParams& p) {
  static PrimitiveCache<ForwardEntry> cache;
  const Key key = Key(kBatchNormTrain).add(data).add(floatKey(p.eps)).add(p.relu);
  return cache.get(key, [&] {
    return ForwardEntry(makeBatchNormForwardPd(cpuEngine(), dnnl::prop_kind::forward_training, data, p.eps,
        flagsFor(p.relu, Flags::none), primitiveAttr()));
  });
}

/** running = (1 - momentum) * running + momentum * batch, with the unbiased batch variance. */
void updateRunningStats(Tensor& runningMean, Tensor& runningVar, const Tensor& mean, const Tensor& variance,
    int64_t count, float momentum) {
  const double m = momentum;
  const double unbias = static_cast<double>(count) / static_cast<double>(count - 1);
  float* rm = runningMean.data();
  float* rv = runningVar.data();
  for (int64_t c = 0; c < mean.numel(); c++) {
    rm[c] = static_cast<float>((1.0 - m) * rm[c] + m * mean.data()[c]);
    rv[c] = static_cast<float>((1.0 - m) * rv[c] + m * variance.data()[c] * unbias);
  }
}

}  // namespace

BatchNormTrainResult batchNormTrain(const Tensor& x, const Tensor& gamma, const Tensor& beta,
    Tensor& runningMean, Tensor& runningVar, const BatchNormParams& p) {
  const char* op = "batchNormTrain";
  const int64_t channels = checkBatchNorm(op, x,
      {{"gamma", &gamma}, {"beta", &beta}, {"runningMean", &runningMean}, {"runningVar", &runningVar}}, p);
  const int64_t count = x.numel() / channels;
  if (count < 2) fail(op, "x ", shapeStr(x.shape()), " has one value per channel; training needs more");
  const ForwardEntry& e = trainingPrimitive(x.desc(), p);
  const Shape stat{channels};
  BatchNormTrainResult r{Tensor(x.shape(), e.pd.dst_desc()),
      BatchNormState{x.shape(), x.desc(), p, Tensor(stat, e.pd.mean_desc()), Tensor(stat, e.pd.variance_desc()), std::nullopt}};
  std::optional<Staging> sg, sb;
  ArgMap args{{DNNL_ARG_SRC, x.mem()}, {DNNL_ARG_DST, r.y.mem()},
      {DNNL_ARG_SCALE, stageInput(gamma.mem(), argDesc(e.pd, DNNL_ARG_SCALE), sg)},
      {DNNL_ARG_SHIFT, stageInput(beta.mem(), argDesc(e.pd, DNNL_ARG_SHIFT), sb)},
      {DNNL_ARG_MEAN, r.state.mean.mem()}, {DNNL_ARG_VARIANCE, r.state.variance.mem()}};
  if (p.relu) {
    // The ReLU mask (a byte buffer; its logical shape is irrelevant).
    r.state.workspace.emplace(Shape{}, e.pd.workspace_desc());
    args.emplace(DNNL_ARG_WORKSPACE, r.state.workspace->mem());
  }
  execute(e.prim, e.pd, std::move(args));
  updateRunningStats(runningMean, runningVar, r.state.mean, r.state.variance, count, p.momentum);
  return r;
}

Tensor batchNormInfer(const Tensor& x, const Tensor& gamma, const Tensor& beta,
    const Tensor& runningMean, const Tensor& runningVar, const BatchNormParams& p) {
  checkBatchNorm("batchNormInfer", x,
      {{"gamma", &gamma}, {"beta", &beta}, {"runningMean", &runningMean}, {"runningVar", &runningVar}}, p);
  static PrimitiveCache<ForwardEntry> cache;
  const Key key = Key(kBatchNormInfer).add(x.desc()).add(floatKey(p.eps)).add(p.relu);
  const ForwardEntry& e = cache.get(key, [&] {
    return ForwardEntry(makeBatchNormForwardPd(cpuEngine(), dnnl::prop_kind::forward_inference, x.desc(), p.eps,
        flagsFor(p.relu, Flags::use_global_stats), primitiveAttr()));
  });
  Tensor y(x.shape(), e.pd.dst_desc());
  std::optional<Staging> sg, sb, sm, sv;
  execute(e.prim, e.pd,
      {{DNNL_ARG_SRC, x.mem()}, {DNNL_ARG_DST, y.mem()},
          {DNNL_ARG_SCALE, stageInput(gamma.mem(), argDesc(e.pd, DNNL_ARG_SCALE), sg)},
          {DNNL_ARG_SHIFT, stageInput(beta.mem(), argDesc(e.pd, DNNL_ARG_SHIFT), sb)},
          {DNNL_ARG_MEAN, stageInput(runningMean.mem(), e.pd.mean_desc(), sm)},
          {DNNL_ARG_VARIANCE, stageInput(runningVar.mem(), e.pd.variance_desc(), sv)}});
  return y;
}

BatchNormGrads batchNormBackward(const Tensor& gy, const Tensor& x, const Tensor& gamma,
    const BatchNormState& state, const BatchNormParams& p) {
  const char* op = "batchNormBackward";
  const int64_t channels = checkBatchNorm(op, x, {{"gamma", &gamma}}, p);
  requireSameShape(op, "gy", gy, "x", x);
  if (x.shape() != state.shape) {
    fail(op, "x ", shapeStr(x.shape()), " does not match the saved forward state of shape ", shapeStr(state.shape));
  }
  if (p.relu != state.params.relu || p.eps != state.params.eps) {
    fail(op, "params (relu ", p.relu, ", eps ", p.eps, ") differ from the forward's (relu ", state.params.relu, ", eps ",
        state.params.eps, ")");
  }
  const ForwardEntry& hint = trainingPrimitive(state.data, p);
  static PrimitiveCache<BackwardEntry> cache;
  const Key key = Key(kBatchNormBackward).add(state.data).add(floatKey(p.eps)).add(p.relu);
  const BackwardEntry& e = cache.get(key, [&] {
    return BackwardEntry(makeBatchNormBackwardPd(cpuEngine(), state.data, p.eps, flagsFor(p.relu, Flags::none), hint.pd,
        primitiveAttr()));
  });
  std::optional<Tensor> hx, hg;
  std::optional<Staging> sg;
  const Tensor& src = inLayout(x, state.data, hx);
  const Tensor& diffDst = inLayout(gy, e.pd.diff_dst_desc(), hg);
  const Shape stat{channels};
  BatchNormGrads g{Tensor(x.shape(), e.pd.diff_src_desc()), Tensor(stat, argDesc(e.pd, DNNL_ARG_DIFF_SCALE)),
      Tensor(stat, argDesc(e.pd, DNNL_ARG_DIFF_SHIFT))};
  ArgMap args{{DNNL_ARG_SRC, src.mem()}, {DNNL_ARG_DIFF_DST, diffDst.mem()},
      {DNNL_ARG_MEAN, state.mean.mem()}, {DNNL_ARG_VARIANCE, state.variance.mem()},
      {DNNL_ARG_SCALE, stageInput(gamma.mem(), argDesc(e.pd, DNNL_ARG_SCALE), sg)},
      {DNNL_ARG_DIFF_SRC, g.gx.mem()}, {DNNL_ARG_DIFF_SCALE, g.gGamma.mem()}, {DNNL_ARG_DIFF_SHIFT, g.gBeta.mem()}};
  if (state.workspace) args.emplace(DNNL_ARG_WORKSPACE, state.workspace->mem());
  // oneDNN 2.6 lists the shift among the backward's inputs although no gradient depends on it;
  // any memory of its shape will do.
  const memory::desc shiftDesc = argDesc(e.pd, DNNL_ARG_SHIFT);
  if (shiftDesc.get_size() > 0) args.emplace(DNNL_ARG_SHIFT, args.at(DNNL_ARG_SCALE));
  execute(e.prim, e.pd, std::move(args));
  return g;
}

// ---- fused with the fake-quantize of the output ---------------------------------------------------

namespace {

/** x in a layout the norm-quantize kernels take: dense, plain or with a channel block dividing 16. */
const Tensor& normQuantizeLayout(const Tensor& x, std::optional<Tensor>& holder) {
  const int block = channelBlock(x.desc());
  if (block > 0 && 16 % block == 0 && !hasPadding(x.desc())) return x;
  return asPlain(x, holder);
}

void checkNormQuantizeSpec(const char* op, const Tensor& x, const kernels::QuantSpec& spec) {
  checkQuantSpec(op, x, spec);
  if (spec.channels != 1) fail(op, "the quantizer must be per tensor (1 channel), got ", spec.channels, " channels");
}

std::vector<float> asFloats(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

/** The per-channel normalization (mean, gamma / sqrt(variance + eps), beta) and the inverse std. */
struct Normalization {
  std::vector<float> scale, invStd;
  Normalization(const Tensor& gamma, const Tensor& variance, float eps) : scale(gamma.numel()), invStd(gamma.numel()) {
    for (int64_t c = 0; c < gamma.numel(); c++) {
      invStd[c] = 1.0f / std::sqrt(variance.data()[c] + eps);
      scale[c] = gamma.data()[c] * invStd[c];
    }
  }
  kernels::NormAffine affine(const Tensor& mean, const Tensor& beta, bool relu) const {
    return {mean.data(), scale.data(), beta.data(), relu};
  }
};

}  // namespace

BatchNormTrainResult batchNormQuantizeTrain(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& runningMean,
    Tensor& runningVar, const BatchNormParams& p, const kernels::QuantSpec& spec) {
  const char* op = "batchNormQuantizeTrain";
  const int64_t channels = checkBatchNorm(op, x,
      {{"gamma", &gamma}, {"beta", &beta}, {"runningMean", &runningMean}, {"runningVar", &runningVar}}, p);
  checkNormQuantizeSpec(op, x, spec);
  const int64_t count = x.numel() / channels;
  if (count < 2) fail(op, "x ", shapeStr(x.shape()), " has one value per channel; training needs more");
  std::optional<Tensor> hx;
  const Tensor& src = normQuantizeLayout(x, hx);
  const kernels::BlockedImage image = imageView(src);
  std::vector<double> mean(channels), variance(channels);
  kernels::channelMoments(image, mean.data(), variance.data());
  const Shape stat{channels};
  BatchNormTrainResult r{Tensor(x.shape(), src.desc()),
      BatchNormState{x.shape(), src.desc(), p, upload(asFloats(mean).data(), channels, stat),
          upload(asFloats(variance).data(), channels, stat), std::nullopt}};
  updateRunningStats(runningMean, runningVar, r.state.mean, r.state.variance, count, p.momentum);
  const Normalization norm(gamma, r.state.variance, p.eps);
  kernels::normQuantize(image, norm.affine(r.state.mean, beta, p.relu), spec, r.y.data());
  return r;
}

NormQuantizeGrads batchNormQuantizeBackward(const Tensor& gq, const Tensor& x, const Tensor& gamma, const Tensor& beta,
    const BatchNormState& state, const BatchNormParams& p, const kernels::QuantSpec& spec) {
  const char* op = "batchNormQuantizeBackward";
  const int64_t channels = checkBatchNorm(op, x, {{"gamma", &gamma}, {"beta", &beta}}, p);
  requireSameShape(op, "gq", gq, "x", x);
  checkNormQuantizeSpec(op, x, spec);
  if (x.shape() != state.shape || state.workspace) {
    fail(op, "the saved state (shape ", shapeStr(state.shape), ") is not a batchNormQuantizeTrain state of x ",
        shapeStr(x.shape()));
  }
  std::optional<Tensor> hx, hg;
  const Tensor& src = inLayout(x, state.data, hx);
  const Tensor& g = inLayout(gq, state.data, hg);
  const Shape stat{channels};
  NormQuantizeGrads out{{Tensor(x.shape(), state.data), Tensor(stat, plainDesc(stat)), Tensor(stat, plainDesc(stat))},
      std::vector<double>(kernels::kQuantSums)};
  const Normalization norm(gamma, state.variance, p.eps);
  kernels::normQuantizeBackward(imageView(src), g.data(), norm.affine(state.mean, beta, p.relu), norm.invStd.data(), spec,
      out.grads.gx.data(), out.grads.gGamma.data(), out.grads.gBeta.data(), out.sums.data());
  return out;
}

}  // namespace tq::ops

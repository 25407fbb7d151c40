// Convolutions through oneDNN. Descriptors are created with format_tag::any so oneDNN picks its
// preferred (blocked) layouts; activations stay in them, weights (plain OIHW parameters) are
// reordered into the primitive's weight layout on each call (they are small).
#include <cstdlib>
#include <cstring>

#include "compat.hpp"
#include "ops.hpp"
#include "ops_common.hpp"

namespace tq::ops {
namespace {

enum OpTag : int64_t { kConvForward = 100, kConvBackwardData, kConvBackwardWeights };

struct ConvShape {
  int64_t n, c, h, w, o, kh, kw, oh, ow, groups;
  Shape xShape() const { return {n, c, h, w}; }
  Shape wShape() const { return {o, c / groups, kh, kw}; }
  Shape yShape() const { return {n, o, oh, ow}; }
};

ConvShape convShape(const char* op, const Shape& x, const Shape& w, const ConvParams& p) {
  requireRank(op, "x", x, 4);
  requireRank(op, "w", w, 4);
  requirePositive(op, "stride", std::min(p.strideH, p.strideW));
  requireNonNegative(op, "padding", std::min(p.padH, p.padW));
  requirePositive(op, "groups", p.groups);
  ConvShape s{x[0], x[1], x[2], x[3], w[0], w[2], w[3], 0, 0, p.groups};
  if (s.n < 1 || s.c < 1 || s.h < 1 || s.w < 1 || s.o < 1 || s.kh < 1 || s.kw < 1 || w[1] < 1) {
    fail(op, "x ", shapeStr(x), " and w ", shapeStr(w), " must have positive dimensions");
  }
  if (s.c % p.groups != 0 || s.o % p.groups != 0) {
    fail(op, "groups ", p.groups, " must divide the input channels of x ", shapeStr(x), " and the output channels of w ", shapeStr(w));
  }
  if (w[1] * p.groups != s.c) {
    fail(op, "x ", shapeStr(x), " has ", s.c, " channels but w ", shapeStr(w), " expects ", w[1], " x ", p.groups, " groups");
  }
  if (s.h + 2 * p.padH < s.kh || s.w + 2 * p.padW < s.kw) {
    fail(op, "kernel of w ", shapeStr(w), " is larger than the padded input x ", shapeStr(x));
  }
  s.oh = (s.h + 2 * p.padH - s.kh) / p.strideH + 1;
  s.ow = (s.w + 2 * p.padW - s.kw) / p.strideW + 1;
  return s;
}

Key convKey(OpTag tag, const ConvShape& s, const ConvParams& p, bool bias) {
  Key k(tag);
  k.add(s.xShape()).add(s.wShape()).add(p.strideH).add(p.strideW).add(p.padH).add(p.padW).add(p.groups).add(bias);
  return k;
}

ConvGeometry geometry(const ConvParams& p) {
  // Symmetric padding: oneDNN's floor-mode output size then equals PyTorch's.
  return {{p.strideH, p.strideW}, {p.padH, p.padW}, {p.padH, p.padW}};
}

memory::dims weightDims(const ConvShape& s) {
  if (s.groups == 1) return {s.o, s.c, s.kh, s.kw};
  return {s.groups, s.o / s.groups, s.c / s.groups, s.kh, s.kw};
}

/** Plain OIHW weights; with groups, the same bytes viewed as (G, O/G, C/G, KH, KW). */
memory::desc plainWeights(const ConvShape& s) {
  return memory::desc(weightDims(s), memory::data_type::f32, s.groups == 1 ? memory::format_tag::oihw : memory::format_tag::goihw);
}

memory::desc anyDesc(const memory::dims& dims) {
  return memory::desc(dims, memory::data_type::f32, memory::format_tag::any);
}

memory::dims dimsOf(const Shape& s) { return memory::dims(s.begin(), s.end()); }

using BackwardDataEntry = Compiled<dnnl::convolution_backward_data::primitive_desc, dnnl::convolution_backward_data>;
using BackwardWeightsEntry = Compiled<dnnl::convolution_backward_weights::primitive_desc, dnnl::convolution_backward_weights>;

struct ForwardEntry : Compiled<dnnl::convolution_forward::primitive_desc, dnnl::convolution_forward> {
  dnnl::algorithm algorithm;  // the backward passes use the same
  ForwardEntry(dnnl::convolution_forward::primitive_desc pd, dnnl::algorithm alg) : Compiled(std::move(pd)), algorithm(alg) {}
};

/** TINYQUANT_CONV=direct: direct convolution everywhere (the summation order of PyTorch's CPU kernels, closer than Winograd's). */
bool directOnly() {
  static const bool direct = [] {
    const char* v = std::getenv("TINYQUANT_CONV");
    return v != nullptr && std::strcmp(v, "direct") == 0;
  }();
  return direct;
}

/**
 * Winograd F(4x4, 3x3) where it beats direct convolution: 3x3, stride 1, ungrouped, at least 32
 * input and output channels (measured with AVX-512 on ResNet's 32- and 64-channel stages: faster
 * forward and in both backward passes; with 16 channels or the 3-channel stem direct is faster).
 * Decided by the shape alone, so results are reproducible from run to run. Its transforms round
 * differently at each output position, which can move a value parked on a quantizer threshold to
 * the other side (docs/fidelity.md): TINYQUANT_CONV=direct turns it off.
 */
dnnl::algorithm preferredAlgorithm(const ConvShape& s, const ConvParams& p) {
  const bool winograd = !directOnly() && s.kh == 3 && s.kw == 3 && p.strideH == 1 && p.strideW == 1 && s.groups == 1 && s.c >= 32 && s.o >= 32;
  return winograd ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct;
}

/** make(algorithm), falling back to direct convolution where oneDNN has no Winograd kernel (e.g. without AVX-512). */
template <class Make>
auto withFallback(dnnl::algorithm alg, Make make) -> decltype(make(alg)) {
  if (alg == dnnl::algorithm::convolution_winograd) {
    try {
      return make(alg);
    } catch (const dnnl::error&) {
      // no Winograd implementation for this shape or CPU
    }
  }
  return make(dnnl::algorithm::convolution_direct);
}

const ForwardEntry& forwardPrimitive(const ConvShape& s, const ConvParams& p, bool bias) {
  static PrimitiveCache<ForwardEntry> cache;
  return cache.get(convKey(kConvForward, s, p, bias), [&] {
    const memory::desc biasMd({s.o}, memory::data_type::f32, memory::format_tag::x);
    dnnl::algorithm chosen = dnnl::algorithm::convolution_direct;
    auto pd = withFallback(preferredAlgorithm(s, p), [&](dnnl::algorithm alg) {
      auto made = makeConvForwardPd(cpuEngine(), alg, anyDesc(dimsOf(s.xShape())), anyDesc(weightDims(s)),
          bias ? &biasMd : nullptr, anyDesc(dimsOf(s.yShape())), geometry(p), primitiveAttr());
      chosen = alg;
      return made;
    });
    return ForwardEntry(std::move(pd), chosen);
  });
}

/** The weights as the primitive wants them (plain parameters reordered when needed). */
dnnl::memory weightsFor(const Tensor& w, const ConvShape& s, const memory::desc& want,
    std::optional<Tensor>& plainHolder, std::optional<Staging>& stageHolder) {
  const Tensor& wp = asPlain(w, plainHolder);
  return stageInput(viewOf(plainWeights(s), wp.data()), want, stageHolder);
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p) {
  const ConvShape s = convShape("conv2d", x.shape(), w.shape(), p);
  if (bias) requireShape("conv2d", "bias", bias->shape(), {s.o});
  const ForwardEntry& e = forwardPrimitive(s, p, bias != nullptr);
  std::optional<Tensor> hx, hw;
  std::optional<Staging> sw, sb;
  const Tensor& src = inLayout(x, e.pd.src_desc(), hx);
  Tensor y(s.yShape(), e.pd.dst_desc());
  ArgMap args{{DNNL_ARG_SRC, src.mem()}, {DNNL_ARG_WEIGHTS, weightsFor(w, s, e.pd.weights_desc(), hw, sw)}, {DNNL_ARG_DST, y.mem()}};
  if (bias) args.emplace(DNNL_ARG_BIAS, stageInput(bias->mem(), e.pd.bias_desc(), sb));
  execute(e.prim, e.pd, std::move(args));
  return y;
}

Tensor conv2dBackwardData(const Tensor& gy, const Tensor& w, const Shape& xShape, const ConvParams& p) {
  const ConvShape s = convShape("conv2dBackwardData", xShape, w.shape(), p);
  requireShape("conv2dBackwardData", "gy", gy.shape(), s.yShape());
  static PrimitiveCache<BackwardDataEntry> cache;
  const BackwardDataEntry& e = cache.get(convKey(kConvBackwardData, s, p, false), [&] {
    const ForwardEntry& hint = forwardPrimitive(s, p, false);
    return BackwardDataEntry(withFallback(hint.algorithm, [&](dnnl::algorithm alg) {
      return makeConvBackwardDataPd(cpuEngine(), alg, anyDesc(dimsOf(s.xShape())), anyDesc(weightDims(s)),
          anyDesc(dimsOf(s.yShape())), geometry(p), hint.pd, primitiveAttr());
    }));
  });
  std::optional<Tensor> hg, hw;
  std::optional<Staging> sw;
  const Tensor& diffDst = inLayout(gy, e.pd.diff_dst_desc(), hg);
  Tensor gx(s.xShape(), e.pd.diff_src_desc());
  execute(e.prim, e.pd,
      {{DNNL_ARG_DIFF_DST, diffDst.mem()}, {DNNL_ARG_WEIGHTS, weightsFor(w, s, e.pd.weights_desc(), hw, sw)},
          {DNNL_ARG_DIFF_SRC, gx.mem()}});
  return gx;
}

WeightGrads conv2dBackwardWeights(const Tensor& gy, const Tensor& x, const Shape& wShape, bool withBias, const ConvParams& p) {
  const ConvShape s = convShape("conv2dBackwardWeights", x.shape(), wShape, p);
  requireShape("conv2dBackwardWeights", "gy", gy.shape(), s.yShape());
  static PrimitiveCache<BackwardWeightsEntry> cache;
  const BackwardWeightsEntry& e = cache.get(convKey(kConvBackwardWeights, s, p, withBias), [&] {
    const memory::desc biasMd({s.o}, memory::data_type::f32, memory::format_tag::x);
    const ForwardEntry& hint = forwardPrimitive(s, p, withBias);
    return BackwardWeightsEntry(withFallback(hint.algorithm, [&](dnnl::algorithm alg) {
      return makeConvBackwardWeightsPd(cpuEngine(), alg, anyDesc(dimsOf(s.xShape())), anyDesc(weightDims(s)),
          withBias ? &biasMd : nullptr, anyDesc(dimsOf(s.yShape())), geometry(p), hint.pd, primitiveAttr());
    }));
  });
  std::optional<Tensor> hx, hg;
  const Tensor& src = inLayout(x, e.pd.src_desc(), hx);
  const Tensor& diffDst = inLayout(gy, e.pd.diff_dst_desc(), hg);
  WeightGrads out{Tensor(s.wShape(), plainDesc(s.wShape())), std::nullopt};
  OutputStage gw(viewOf(plainWeights(s), out.gw.data()), e.pd.diff_weights_desc());
  ArgMap args{{DNNL_ARG_SRC, src.mem()}, {DNNL_ARG_DIFF_DST, diffDst.mem()}, {DNNL_ARG_DIFF_WEIGHTS, gw.mem()}};
  std::optional<OutputStage> gb;
  if (withBias) {
    out.gb.emplace(Shape{s.o}, plainDesc({s.o}));
    gb.emplace(out.gb->mem(), e.pd.diff_bias_desc());
    args.emplace(DNNL_ARG_DIFF_BIAS, gb->mem());
  }
  execute(e.prim, e.pd, std::move(args));
  gw.finish();
  if (gb) gb->finish();
  return out;
}

}  // namespace tq::ops

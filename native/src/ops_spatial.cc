// Pooling (oneDNN average pooling; own kernels for max pooling, the global average and the
// option-A shortcut, which work on plain and channel-blocked layouts alike).
//
// Max pooling is the addon's kernel rather than oneDNN's pooling_max: its backward must send each
// window's gradient to exactly the position the js backend (and PyTorch) picks, the first maximum
// in window order or a NaN, and oneDNN documents no tie or NaN rule for its implementations. The
// kernel recomputes the winners from x in the backward, so no workspace crosses the Backend
// interface; the recomputation costs one read of x, small next to the convolutions around it.
#include "compat.hpp"
#include "ops.hpp"
#include "ops_common.hpp"

namespace tq::ops {
namespace {

enum OpTag : int64_t { kAvgPoolForward = 300, kAvgPoolBackward };

using ForwardEntry = Compiled<dnnl::pooling_forward::primitive_desc, dnnl::pooling_forward>;
using BackwardEntry = Compiled<dnnl::pooling_backward::primitive_desc, dnnl::pooling_backward>;

Shape poolOutShape(const char* op, const Shape& x, const PoolParams& p) {
  requireRank(op, "x", x, 4);
  requirePositive(op, "kernel", std::min(p.kernelH, p.kernelW));
  requirePositive(op, "stride", std::min(p.strideH, p.strideW));
  requireNonNegative(op, "padding", std::min(p.padH, p.padW));
  if (2 * p.padH > p.kernelH || 2 * p.padW > p.kernelW) {
    fail(op, "padding (", p.padH, ", ", p.padW, ") must be at most half the kernel (", p.kernelH, ", ", p.kernelW, ")");
  }
  if (numelOf(x) == 0) fail(op, "x ", shapeStr(x), " is empty");
  if (x[2] + 2 * p.padH < p.kernelH || x[3] + 2 * p.padW < p.kernelW) {
    fail(op, "kernel (", p.kernelH, ", ", p.kernelW, ") is larger than the padded input ", shapeStr(x));
  }
  return {x[0], x[1], (x[2] + 2 * p.padH - p.kernelH) / p.strideH + 1, (x[3] + 2 * p.padW - p.kernelW) / p.strideW + 1};
}

PoolGeometry geometry(const PoolParams& p) {
  return {{p.strideH, p.strideW}, {p.kernelH, p.kernelW}, {p.padH, p.padW}, {p.padH, p.padW}};
}

kernels::PoolWindow window(const PoolParams& p) {
  return {p.kernelH, p.kernelW, p.strideH, p.strideW, p.padH, p.padW};
}

Key poolKey(int64_t tag, const memory::desc& src, const PoolParams& p) {
  Key k(tag);
  k.add(src).add(p.kernelH).add(p.kernelW).add(p.strideH).add(p.strideW).add(p.padH).add(p.padW);
  return k;
}

}  // namespace

Tensor avgPool2d(const Tensor& x, const PoolParams& p) {
  const Shape yShape = poolOutShape("avgPool2d", x.shape(), p);
  std::optional<Tensor> hx;
  const Tensor& src = blockedImage(x, hx);
  const memory::desc dstMd = activationDesc(yShape, channelBlock(src.desc()));
  static PrimitiveCache<ForwardEntry> cache;
  const ForwardEntry& e = cache.get(poolKey(kAvgPoolForward, src.desc(), p), [&] {
    return ForwardEntry(makeAvgPoolForwardPd(cpuEngine(), src.desc(), dstMd, geometry(p), primitiveAttr()));
  });
  Tensor y(yShape, e.pd.dst_desc());
  execute(e.prim, e.pd, {{DNNL_ARG_SRC, src.mem()}, {DNNL_ARG_DST, y.mem()}});
  return y;
}

Tensor avgPool2dBackward(const Tensor& gy, const Shape& xShape, const PoolParams& p) {
  const Shape yShape = poolOutShape("avgPool2dBackward", xShape, p);
  requireShape("avgPool2dBackward", "gy", gy.shape(), yShape);
  std::optional<Tensor> hg;
  const Tensor& diffDst = blockedImage(gy, hg);
  const memory::desc diffSrcMd = activationDesc(xShape, channelBlock(diffDst.desc()));
  static PrimitiveCache<BackwardEntry> cache;
  Key key = poolKey(kAvgPoolBackward, diffDst.desc(), p);
  key.add(diffSrcMd);  // several input sizes pool to the same output size
  const BackwardEntry& e = cache.get(key, [&] {
    const auto hint = makeAvgPoolForwardPd(cpuEngine(), diffSrcMd, diffDst.desc(), geometry(p), primitiveAttr());
    return BackwardEntry(makeAvgPoolBackwardPd(cpuEngine(), diffSrcMd, diffDst.desc(), geometry(p), hint, primitiveAttr()));
  });
  Tensor gx(xShape, e.pd.diff_src_desc());
  execute(e.prim, e.pd, {{DNNL_ARG_DIFF_DST, diffDst.mem()}, {DNNL_ARG_DIFF_SRC, gx.mem()}});
  return gx;
}

Tensor maxPool2d(const Tensor& x, const PoolParams& p) {
  const Shape yShape = poolOutShape("maxPool2d", x.shape(), p);
  std::optional<Tensor> hx;
  const Tensor& src = blockedImage(x, hx);
  Tensor y(yShape, activationDesc(yShape, channelBlock(src.desc())));
  kernels::maxPool2d(imageView(src), imageView(y), window(p));
  return y;
}

Tensor maxPool2dBackward(const Tensor& gy, const Tensor& x, const PoolParams& p) {
  const Shape yShape = poolOutShape("maxPool2dBackward", x.shape(), p);
  requireShape("maxPool2dBackward", "gy", gy.shape(), yShape);
  std::optional<Tensor> hx, hg;
  const Tensor& src = blockedImage(x, hx);
  const int block = channelBlock(src.desc());
  const Tensor& g = inLayout(gy, activationDesc(yShape, block), hg);
  Tensor gx(x.shape(), src.desc());
  kernels::maxPool2dBackward(imageView(g), imageView(src), imageView(gx), window(p));
  return gx;
}

Tensor globalAvgPool(const Tensor& x) {
  requireRank("globalAvgPool", "x", x.shape(), 4);
  if (x.numel() == 0) fail("globalAvgPool", "x ", shapeStr(x.shape()), " is empty");
  std::optional<Tensor> hx;
  const Tensor& src = blockedImage(x, hx);
  const Shape yShape{x.shape()[0], x.shape()[1]};
  Tensor y(yShape, plainDesc(yShape));
  kernels::globalAvgPool(imageView(src), y.data());
  return y;
}

Tensor globalAvgPoolBackward(const Tensor& gy, const Shape& xShape) {
  requireRank("globalAvgPoolBackward", "xShape", xShape, 4);
  if (numelOf(xShape) == 0) fail("globalAvgPoolBackward", "xShape ", shapeStr(xShape), " is empty");
  requireShape("globalAvgPoolBackward", "gy", gy.shape(), {xShape[0], xShape[1]});
  std::optional<Tensor> hg;
  const Tensor& g = asPlain(gy, hg);
  Tensor gx(xShape, activationDesc(xShape, preferredBlock(xShape[1])));
  kernels::globalAvgPoolBackward(g.data(), imageView(gx));
  return gx;
}

Tensor shortcutPad(const Tensor& x, int64_t stride, int64_t padBefore, int64_t padAfter) {
  const char* op = "shortcutPad";
  requireRank(op, "x", x.shape(), 4);
  requirePositive(op, "stride", stride);
  requireNonNegative(op, "padBefore", padBefore);
  requireNonNegative(op, "padAfter", padAfter);
  if (x.numel() == 0) fail(op, "x ", shapeStr(x.shape()), " is empty");
  const Shape& s = x.shape();
  const Shape yShape{s[0], s[1] + padBefore + padAfter, (s[2] + stride - 1) / stride, (s[3] + stride - 1) / stride};
  std::optional<Tensor> hx;
  const Tensor& src = blockedImage(x, hx);
  Tensor y(yShape, activationDesc(yShape, preferredBlock(yShape[1])));
  kernels::shortcutPad(imageView(src), imageView(y), stride, padBefore);
  return y;
}

Tensor shortcutPadBackward(const Tensor& gy, const Shape& xShape, int64_t stride, int64_t padBefore) {
  const char* op = "shortcutPadBackward";
  requireRank(op, "xShape", xShape, 4);
  requireRank(op, "gy", gy.shape(), 4);
  requirePositive(op, "stride", stride);
  requireNonNegative(op, "padBefore", padBefore);
  if (numelOf(xShape) == 0) fail(op, "xShape ", shapeStr(xShape), " is empty");
  const Shape& g = gy.shape();
  const Shape spatial{(xShape[2] + stride - 1) / stride, (xShape[3] + stride - 1) / stride};
  if (g[0] != xShape[0] || g[1] < xShape[1] + padBefore || g[2] != spatial[0] || g[3] != spatial[1]) {
    fail(op, "gy ", shapeStr(g), " is not the padded, strided shape of x ", shapeStr(xShape), " (stride ", stride,
        ", padBefore ", padBefore, ")");
  }
  std::optional<Tensor> hg;
  const Tensor& src = blockedImage(gy, hg);
  Tensor gx(xShape, activationDesc(xShape, preferredBlock(xShape[1])));
  kernels::shortcutPadBackward(imageView(src), imageView(gx), stride, padBefore);
  return gx;
}

}  // namespace tq::ops

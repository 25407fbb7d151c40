// Memory ops, elementwise ops, reductions, optimizer steps and quantization: everything that runs
// the addon's own kernels over the physical buffer.
#include <cmath>

#include "ops.hpp"
#include "ops_common.hpp"

namespace tq::ops {
namespace {

constexpr size_t kMaxRank = DNNL_MAX_NDIMS;

void checkShape(const char* op, const Shape& shape) {
  if (shape.size() > kMaxRank) fail(op, "shape ", shapeStr(shape), " has more than ", kMaxRank, " dimensions");
  for (int64_t d : shape) {
    if (d < 0) fail(op, "shape ", shapeStr(shape), " has a negative dimension");
  }
}

/** y = kernel(x, y, n) in x's layout (made dense first). */
template <class UnaryKernel>
Tensor unary(const Tensor& x, UnaryKernel kernel) {
  std::optional<Tensor> hx;
  const Tensor& dx = asDense(x, hx);
  Tensor y(x.shape(), dx.desc());
  kernel(dx.data(), y.data(), dx.physicalSize());
  return y;
}

/** y = kernel(a, b, y, n) in a's layout; b is reordered to it when its layout differs. */
template <class BinaryKernel>
Tensor binary(const char* op, const char* nameA, const Tensor& a, const char* nameB, const Tensor& b, BinaryKernel kernel) {
  requireSameShape(op, nameA, a, nameB, b);
  std::optional<Tensor> ha, hb;
  const Tensor& da = asDense(a, ha);
  const Tensor& db = inLayout(b, da.desc(), hb);
  Tensor y(a.shape(), da.desc());
  kernel(da.data(), db.data(), y.data(), da.physicalSize());
  return y;
}

/** x in a layout where every chunk of dimension 0 is contiguous (for per-channel kernels). */
const Tensor& channelChunked(const char* op, const Tensor& x, int64_t channels, std::optional<Tensor>& holder) {
  requirePositive(op, "channels", channels);
  const int64_t rows = x.shape().empty() ? 1 : x.shape()[0];
  if (rows % channels != 0) {
    fail(op, "dimension 0 of ", shapeStr(x.shape()), " does not split into ", channels, " channels");
  }
  if (channels == 1) return asDense(x, holder);
  return dim0Contiguous(x.desc()) ? x : asPlain(x, holder);
}

}  // namespace

// ---- memory --------------------------------------------------------------------------------

Tensor upload(const float* data, int64_t length, const Shape& shape) {
  checkShape("upload", shape);
  if (numelOf(shape) != length) fail("upload", length, " values do not fill shape ", shapeStr(shape));
  Tensor t(shape, plainDesc(shape));
  kernels::copy(data, t.data(), length);
  return t;
}

void download(const Tensor& x, float* out) {
  if (x.numel() == 0) return;
  if (isPlain(x.desc())) {
    kernels::copy(x.data(), out, x.numel());
  } else {
    reorder(x.mem(), viewOf(plainDesc(x.shape()), out));
  }
}

Tensor zeros(const Shape& shape) {
  checkShape("zeros", shape);
  Tensor t(shape, plainDesc(shape));
  kernels::fillZero(t.data(), t.physicalSize());
  return t;
}

Tensor clone(const Tensor& x) {
  Tensor t(x.shape(), x.desc());
  kernels::copy(x.data(), t.data(), x.physicalSize());
  return t;
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  checkShape("reshape", shape);
  if (numelOf(shape) != x.numel()) {
    fail("reshape", "cannot reshape ", shapeStr(x.shape()), " (", x.numel(), " values) to ", shapeStr(shape));
  }
  Tensor t(shape, plainDesc(shape));
  download(x, t.data());
  return t;
}

// ---- elementwise -----------------------------------------------------------------------------

Tensor add(const Tensor& a, const Tensor& b) { return binary("add", "a", a, "b", b, kernels::add); }
Tensor addRelu(const Tensor& a, const Tensor& b) { return binary("addRelu", "a", a, "b", b, kernels::addRelu); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary("mul", "a", a, "b", b, kernels::mul); }
Tensor relu(const Tensor& x) { return unary(x, kernels::relu); }
Tensor tanh(const Tensor& x) { return unary(x, kernels::tanh); }

Tensor reluBackward(const Tensor& gy, const Tensor& y) {
  return binary("reluBackward", "gy", gy, "y", y, kernels::reluBackward);
}

namespace {
void requireCeiling(const char* op, float ceiling) {
  if (!(std::isfinite(ceiling) && ceiling > 0.0f)) fail(op, "ceiling must be a positive finite number, got ", ceiling);
}
}  // namespace

Tensor clippedRelu(const Tensor& x, float ceiling) {
  requireCeiling("clippedRelu", ceiling);
  return unary(x, [=](const float* in, float* out, int64_t n) { kernels::clippedRelu(in, out, n, ceiling); });
}

Tensor clippedReluBackward(const Tensor& gy, const Tensor& y, float ceiling) {
  requireCeiling("clippedReluBackward", ceiling);
  return binary("clippedReluBackward", "gy", gy, "y", y,
      [=](const float* g, const float* v, float* out, int64_t n) { kernels::clippedReluBackward(g, v, out, n, ceiling); });
}

Tensor tanhBackward(const Tensor& gy, const Tensor& y) {
  return binary("tanhBackward", "gy", gy, "y", y, kernels::tanhBackward);
}

Tensor affine(const Tensor& x, float alpha, float beta) {
  return unary(x, [=](const float* in, float* out, int64_t n) { kernels::affine(in, out, n, alpha, beta); });
}

void axpyInPlace(Tensor& dst, const Tensor& src, float alpha) {
  requireSameShape("axpyInPlace", "dst", dst, "src", src);
  std::optional<Tensor> hs;
  // Padding (if any) is zero in both, and stays zero.
  const Tensor& s = inLayout(src, dst.desc(), hs);
  kernels::axpy(dst.data(), s.data(), dst.physicalSize(), alpha);
}

// ---- reductions ------------------------------------------------------------------------------

double dot(const Tensor& a, const Tensor& b) {
  requireSameShape("dot", "a", a, "b", b);
  std::optional<Tensor> ha, hb;
  const Tensor& da = asDense(a, ha);
  const Tensor& db = inLayout(b, da.desc(), hb);
  return kernels::dot(da.data(), db.data(), da.physicalSize());
}

std::vector<double> stats(const Tensor& x, int64_t channels) {
  std::optional<Tensor> hx;
  const Tensor& cx = channelChunked("stats", x, channels, hx);
  if (x.numel() == 0) fail("stats", "x ", shapeStr(x.shape()), " is empty");
  std::vector<double> out(static_cast<size_t>(channels) * 5);
  kernels::stats(cx.data(), cx.physicalSize(), channels, out.data());
  return out;
}

int64_t countNonFinite(const Tensor& x) {
  std::optional<Tensor> hx;
  const Tensor& dx = asDense(x, hx);
  return kernels::countNonFinite(dx.data(), dx.physicalSize());
}

// ---- optimizers ------------------------------------------------------------------------------

void sgdStep(Tensor& param, const Tensor& grad, Tensor* momentumBuf, const kernels::SgdParams& p) {
  requireSameShape("sgdStep", "param", param, "grad", grad);
  if (momentumBuf) requireSameShape("sgdStep", "param", param, "momentumBuf", *momentumBuf);
  if (p.momentum != 0.0f && !momentumBuf) fail("sgdStep", "momentum ", p.momentum, " needs a momentum buffer");
  std::optional<Tensor> hg;
  const Tensor& g = inLayout(grad, param.desc(), hg);
  const int64_t n = param.physicalSize();
  if (!momentumBuf || p.momentum == 0.0f) {
    kernels::sgdStep(param.data(), g.data(), nullptr, n, p);
    return;
  }
  inPlaceAs(*momentumBuf, param.desc(), [&](float* buf) { kernels::sgdStep(param.data(), g.data(), buf, n, p); });
}

void adamStep(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const kernels::AdamParams& p) {
  requireSameShape("adamStep", "param", param, "grad", grad);
  requireSameShape("adamStep", "param", param, "m", m);
  requireSameShape("adamStep", "param", param, "v", v);
  if (p.step < 1) fail("adamStep", "step must be at least 1, got ", p.step);
  std::optional<Tensor> hg;
  const Tensor& g = inLayout(grad, param.desc(), hg);
  const int64_t n = param.physicalSize();
  inPlaceAs(m, param.desc(), [&](float* mData) {
    inPlaceAs(v, param.desc(), [&](float* vData) { kernels::adamStep(param.data(), g.data(), mData, vData, n, p); });
  });
}

// ---- quantization ----------------------------------------------------------------------------

Tensor quantize(const Tensor& x, const kernels::QuantSpec& spec) {
  checkQuantSpec("quantize", x, spec);
  std::optional<Tensor> hx;
  const Tensor& cx = channelChunked("quantize", x, spec.channels, hx);
  Tensor y(x.shape(), cx.desc());
  kernels::quantize(cx.data(), y.data(), cx.physicalSize(), spec);
  return y;
}

JoinQuantized addReluQuantize(const Tensor& a, const Tensor& b, const kernels::QuantSpec& spec) {
  const char* op = "addReluQuantize";
  requireSameShape(op, "a", a, "b", b);
  checkQuantSpec(op, a, spec);
  if (spec.channels != 1) fail(op, "the quantizer must be per tensor (1 channel), got ", spec.channels, " channels");
  std::optional<Tensor> ha, hb;
  const Tensor& da = asDense(a, ha);
  const Tensor& db = inLayout(b, da.desc(), hb);
  JoinQuantized out{Tensor(a.shape(), da.desc()), Tensor(a.shape(), da.desc())};
  kernels::addReluQuantize(da.data(), db.data(), out.y.data(), out.q.data(), da.physicalSize(), spec);
  return out;
}

QuantizeGrads quantizeBackward(const Tensor& x, const Tensor& gy, const kernels::QuantSpec& spec, Tensor* into) {
  requireSameShape("quantizeBackward", "x", x, "gy", gy);
  if (into) requireSameShape("quantizeBackward", "x", x, "accumulate", *into);
  checkQuantSpec("quantizeBackward", x, spec);
  std::optional<Tensor> hx, hg;
  const Tensor& cx = channelChunked("quantizeBackward", x, spec.channels, hx);
  const Tensor& g = inLayout(gy, cx.desc(), hg);
  QuantizeGrads out{std::nullopt, std::vector<double>(static_cast<size_t>(spec.channels) * kernels::kQuantSums)};
  // In place when the accumulated gradient is in x's layout, else computed apart and added.
  const bool inPlace = into && into->desc() == cx.desc();
  if (!inPlace) out.gx.emplace(x.shape(), cx.desc());
  kernels::quantizeBackward(cx.data(), g.data(), inPlace ? into->data() : out.gx->data(), cx.physicalSize(), spec,
      out.sums.data(), inPlace);
  if (into && !inPlace) {
    axpyInPlace(*into, *out.gx, 1.0f);
    out.gx.reset();
  }
  return out;
}

// ---- loss ------------------------------------------------------------------------------------

namespace {
void checkLogits(const char* op, const char* name, const Tensor& t, const int32_t* labels, int64_t count) {
  requireRank(op, name, t.shape(), 2);
  const int64_t rows = t.shape()[0], classes = t.shape()[1];
  if (rows < 1 || classes < 1) fail(op, name, " ", shapeStr(t.shape()), " is empty");
  if (count != rows) fail(op, count, " labels for ", name, " with ", rows, " rows ", shapeStr(t.shape()));
  for (int64_t r = 0; r < rows; r++) {
    if (labels[r] < 0 || labels[r] >= classes) {
      fail(op, "label ", labels[r], " at row ", r, " is outside [0, ", classes, ") for ", name, " ", shapeStr(t.shape()));
    }
  }
}

void checkSmoothing(const char* op, double smoothing) {
  if (!(smoothing >= 0.0 && smoothing <= 1.0)) fail(op, "smoothing must be in [0, 1], got ", smoothing);
}
}  // namespace

CrossEntropyResult softmaxCrossEntropy(const Tensor& logits, const int32_t* labels, int64_t count, double smoothing) {
  checkLogits("softmaxCrossEntropy", "logits", logits, labels, count);
  checkSmoothing("softmaxCrossEntropy", smoothing);
  std::optional<Tensor> hl;
  const Tensor& l = asPlain(logits, hl);
  Tensor probs(logits.shape(), plainDesc(logits.shape()));
  const auto r = kernels::softmaxCrossEntropy(l.data(), labels, logits.shape()[0], logits.shape()[1], smoothing, probs.data());
  return {r.loss, std::move(probs), r.correct};
}

Tensor softmaxCrossEntropyBackward(const Tensor& probs, const int32_t* labels, int64_t count, double smoothing, double scale) {
  checkLogits("softmaxCrossEntropyBackward", "probs", probs, labels, count);
  checkSmoothing("softmaxCrossEntropyBackward", smoothing);
  std::optional<Tensor> hp;
  const Tensor& p = asPlain(probs, hp);
  Tensor g(probs.shape(), plainDesc(probs.shape()));
  kernels::softmaxCrossEntropyBackward(p.data(), labels, probs.shape()[0], probs.shape()[1], smoothing, scale, g.data());
  return g;
}

}  // namespace tq::ops

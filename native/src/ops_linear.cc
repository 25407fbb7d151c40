// Fully connected layers through oneDNN matmul on plain row-major matrices; transposes are
// strided views, never copies.
#include "compat.hpp"
#include "ops.hpp"
#include "ops_common.hpp"

namespace tq::ops {
namespace {

enum OpTag : int64_t { kMatmul = 400 };

using Entry = Compiled<dnnl::matmul::primitive_desc, dnnl::matmul>;

/** A (rows, cols) f32 matrix, row-major, or its transpose when `transposed` (strides swapped). */
memory::desc matrix(int64_t rows, int64_t cols, bool transposed = false) {
  return memory::desc({rows, cols}, memory::data_type::f32, transposed ? memory::dims{1, rows} : memory::dims{cols, 1});
}

/** dst (rows, cols) = src x weights (+ bias broadcast over rows). */
void matmul(const memory::desc& srcMd, float* src, const memory::desc& weightsMd, float* weights, const float* bias,
    int64_t rows, int64_t cols, float* dst) {
  static PrimitiveCache<Entry> cache;
  const memory::desc dstMd = matrix(rows, cols);
  const memory::desc biasMd = matrix(1, cols);
  const Key key = Key(kMatmul).add(srcMd).add(weightsMd).add(dstMd).add(bias != nullptr);
  const Entry& e = cache.get(key, [&] {
    return Entry(makeMatmulPd(cpuEngine(), srcMd, weightsMd, bias ? &biasMd : nullptr, dstMd, primitiveAttr()));
  });
  ArgMap args{{DNNL_ARG_SRC, viewOf(srcMd, src)}, {DNNL_ARG_WEIGHTS, viewOf(weightsMd, weights)}, {DNNL_ARG_DST, viewOf(dstMd, dst)}};
  if (bias) args.emplace(DNNL_ARG_BIAS, viewOf(biasMd, const_cast<float*>(bias)));
  execute(e.prim, e.pd, std::move(args));
}

void requireMatrix(const char* op, const char* name, const Tensor& t) {
  requireRank(op, name, t.shape(), 2);
  if (t.numel() == 0) fail(op, name, " ", shapeStr(t.shape()), " is empty");
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias) {
  const char* op = "linear";
  requireMatrix(op, "x", x);
  requireMatrix(op, "w", w);
  const int64_t n = x.shape()[0], k = x.shape()[1], m = w.shape()[0];
  if (w.shape()[1] != k) fail(op, "x ", shapeStr(x.shape()), " has ", k, " features but w ", shapeStr(w.shape()), " expects ", w.shape()[1]);
  if (bias) requireShape(op, "bias", bias->shape(), {m});
  std::optional<Tensor> hx, hw, hb;
  const Tensor& xp = asPlain(x, hx);
  const Tensor& wp = asPlain(w, hw);
  Tensor y({n, m}, plainDesc({n, m}));
  matmul(matrix(n, k), xp.data(), matrix(k, m, true), wp.data(), bias ? asPlain(*bias, hb).data() : nullptr, n, m, y.data());
  return y;
}

Tensor linearBackwardData(const Tensor& gy, const Tensor& w) {
  const char* op = "linearBackwardData";
  requireMatrix(op, "gy", gy);
  requireMatrix(op, "w", w);
  const int64_t n = gy.shape()[0], m = gy.shape()[1], k = w.shape()[1];
  if (w.shape()[0] != m) fail(op, "gy ", shapeStr(gy.shape()), " has ", m, " columns but w ", shapeStr(w.shape()), " has ", w.shape()[0], " rows");
  std::optional<Tensor> hg, hw;
  const Tensor& gp = asPlain(gy, hg);
  const Tensor& wp = asPlain(w, hw);
  Tensor gx({n, k}, plainDesc({n, k}));
  matmul(matrix(n, m), gp.data(), matrix(m, k), wp.data(), nullptr, n, k, gx.data());
  return gx;
}

WeightGrads linearBackwardWeights(const Tensor& gy, const Tensor& x, bool withBias) {
  const char* op = "linearBackwardWeights";
  requireMatrix(op, "gy", gy);
  requireMatrix(op, "x", x);
  const int64_t n = gy.shape()[0], m = gy.shape()[1], k = x.shape()[1];
  if (x.shape()[0] != n) fail(op, "gy ", shapeStr(gy.shape()), " and x ", shapeStr(x.shape()), " have different batch sizes");
  std::optional<Tensor> hg, hx;
  const Tensor& gp = asPlain(gy, hg);
  const Tensor& xp = asPlain(x, hx);
  WeightGrads out{Tensor({m, k}, plainDesc({m, k})), std::nullopt};
  // gw = gy^T x: gy (N, M) read as an (M, N) matrix through swapped strides.
  matmul(matrix(m, n, true), gp.data(), matrix(n, k), xp.data(), nullptr, m, k, out.gw.data());
  if (withBias) {
    out.gb.emplace(Shape{m}, plainDesc({m}));
    kernels::columnSums(gp.data(), n, m, out.gb->data());
  }
  return out;
}

}  // namespace tq::ops

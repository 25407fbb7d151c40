// Helpers shared by the op implementations: shape checks and staging of memory into the layout
// a primitive asks for.
#pragma once

#include <optional>

#include "kernels.hpp"
#include "layout.hpp"
#include "quantize.hpp"
#include "runtime.hpp"

namespace tq::ops {

void requireRank(const char* op, const char* name, const Shape& shape, size_t rank);
void requireShape(const char* op, const char* name, const Shape& actual, const Shape& expected);
void requireSameShape(const char* op, const char* nameA, const Tensor& a, const char* nameB, const Tensor& b);
void requirePositive(const char* op, const char* name, int64_t value);
void requireNonNegative(const char* op, const char* name, int64_t value);

/** A pool block with a memory object over it, for temporaries in a primitive's layout. */
struct Staging {
  PooledBlock block;
  dnnl::memory mem;
  explicit Staging(const memory::desc& md);
};

/** `src` if its layout is `want`, else a reordered copy owned by `holder`. */
dnnl::memory stageInput(const dnnl::memory& src, const memory::desc& want, std::optional<Staging>& holder);

/** A memory object over `data` (plain row-major of `shape`) viewed with descriptor md. */
dnnl::memory viewOf(const memory::desc& md, float* data);

/**
 * Where a primitive writes an output that the caller wants in another layout: the target itself
 * when the layouts match, else a temporary that `finish` reorders into the target.
 */
class OutputStage {
 public:
  OutputStage(const dnnl::memory& target, const memory::desc& produced);
  const dnnl::memory& mem() const { return staging_ ? staging_->mem : target_; }
  void finish();

 private:
  dnnl::memory target_;
  std::optional<Staging> staging_;
};

/**
 * Run an in-place kernel over `t`'s physical buffer in layout md: directly when t has that
 * layout, else on a copy that is written back.
 */
template <class Fn>
void inPlaceAs(Tensor& t, const memory::desc& md, Fn fn) {
  if (t.desc() == md) {
    fn(t.data());
    return;
  }
  Tensor copy = reordered(t, md);
  fn(copy.data());
  reorder(copy.mem(), t.mem());
}

/** The memory descriptor a primitive expects for execution argument `arg` (e.g. DNNL_ARG_SCALE). */
inline memory::desc argDesc(const dnnl::primitive_desc_base& pd, int arg) {
  return pd.query_md(dnnl::query::exec_arg_md, arg);
}

/** The spec's per-channel arrays, bounds, grid and levels are consistent and x is not empty. */
void checkQuantSpec(const char* op, const Tensor& x, const kernels::QuantSpec& spec);

/** x itself when it is plain or channel-blocked NCHW, else a plain copy owned by `holder`. */
const Tensor& blockedImage(const Tensor& x, std::optional<Tensor>& holder);

/** A plain or channel-blocked (N, C, H, W) tensor, or (N, C) as (N, C, 1, 1), for the addon's kernels. */
kernels::BlockedImage imageView(const Tensor& t);

/** Bit pattern of a float, for cache keys. */
int64_t floatKey(float v);

}  // namespace tq::ops

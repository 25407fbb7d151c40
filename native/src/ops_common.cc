#include "ops_common.hpp"

#include <cstring>

namespace tq::ops {

void requireRank(const char* op, const char* name, const Shape& shape, size_t rank) {
  if (shape.size() != rank) fail(op, name, " must have rank ", rank, ", got shape ", shapeStr(shape));
}

void requireShape(const char* op, const char* name, const Shape& actual, const Shape& expected) {
  if (actual != expected) fail(op, name, " has shape ", shapeStr(actual), ", expected ", shapeStr(expected));
}

void requireSameShape(const char* op, const char* nameA, const Tensor& a, const char* nameB, const Tensor& b) {
  if (a.shape() != b.shape()) {
    fail(op, nameA, " ", shapeStr(a.shape()), " and ", nameB, " ", shapeStr(b.shape()), " must have the same shape");
  }
}

void requirePositive(const char* op, const char* name, int64_t value) {
  if (value < 1) fail(op, name, " must be a positive integer, got ", value);
}

void requireNonNegative(const char* op, const char* name, int64_t value) {
  if (value < 0) fail(op, name, " must be a non-negative integer, got ", value);
}

Staging::Staging(const memory::desc& md) : block(md.get_size()), mem(md, cpuEngine(), block.get()) {}

dnnl::memory stageInput(const dnnl::memory& src, const memory::desc& want, std::optional<Staging>& holder) {
  if (src.get_desc() == want) return src;
  holder.emplace(want);
  reorder(src, holder->mem);
  return holder->mem;
}

dnnl::memory viewOf(const memory::desc& md, float* data) { return dnnl::memory(md, cpuEngine(), data); }

OutputStage::OutputStage(const dnnl::memory& target, const memory::desc& produced) : target_(target) {
  if (target.get_desc() != produced) staging_.emplace(produced);
}

void OutputStage::finish() {
  if (staging_) reorder(staging_->mem, target_);
}

int64_t floatKey(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits;
}

void checkQuantSpec(const char* op, const Tensor& x, const kernels::QuantSpec& spec) {
  const size_t c = static_cast<size_t>(spec.channels);
  if (spec.scale.size() != c || spec.offset.size() != c || spec.outScale.size() != c || spec.outOffset.size() != c) {
    fail(op, "scale, offset, outScale and outOffset must each have ", c, " values (one per channel)");
  }
  if (!(spec.lo <= spec.hi)) fail(op, "lo (", spec.lo, ") must not exceed hi (", spec.hi, ")");
  if (spec.levels.empty() && !(spec.steps > 0)) fail(op, "steps must be positive without levels, got ", spec.steps);
  for (size_t k = 0; k < spec.levels.size(); k++) {
    if (!(spec.levels[k] >= 0) || (k > 0 && !(spec.levels[k] >= spec.levels[k - 1]))) {
      fail(op, "levels must be sorted and non-negative");
    }
  }
  if (x.numel() == 0) fail(op, "x ", shapeStr(x.shape()), " is empty");
}

const Tensor& blockedImage(const Tensor& x, std::optional<Tensor>& holder) {
  return channelBlock(x.desc()) > 0 ? x : asPlain(x, holder);
}

kernels::BlockedImage imageView(const Tensor& t) {
  const Shape& s = t.shape();
  const bool image = s.size() == 4;
  return {t.data(), s[0], s[1], image ? s[2] : 1, image ? s[3] : 1, channelBlock(t.desc())};
}

}  // namespace tq::ops

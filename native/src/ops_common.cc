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

}  // namespace tq::ops

#include "layout.hpp"

#include <algorithm>
#include <map>
#include <numeric>

#include "compat.hpp"
#include "kernels.hpp"

namespace tq {
namespace {

memory::dims storedDims(const Shape& shape) {
  return shape.empty() ? memory::dims{1} : memory::dims(shape.begin(), shape.end());
}

memory::dims rowMajorStrides(const memory::dims& dims) {
  memory::dims strides(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; i--) strides[i] = strides[i + 1] * dims[i + 1];
  return strides;
}

/** Strides match `expected` on every dimension of size > 1. */
bool stridesMatch(const Blocking& b, const memory::dims& expected) {
  for (size_t i = 0; i < b.dims.size(); i++) {
    if (b.dims[i] > 1 && b.strides[i] != expected[i]) return false;
  }
  return true;
}

constexpr int64_t kReorderTag = 1;

}  // namespace

memory::desc plainDesc(const Shape& shape) {
  const memory::dims dims = storedDims(shape);
  return memory::desc(dims, memory::data_type::f32, rowMajorStrides(dims));
}

bool isPlain(const memory::desc& md) {
  const Blocking b = blockingOf(md);
  return b.blocked && b.innerBlocks.empty() && !hasPadding(md) && stridesMatch(b, rowMajorStrides(b.dims));
}

bool hasPadding(const memory::desc& md) {
  const Blocking b = blockingOf(md);
  return b.dims != b.paddedDims;
}

int channelBlock(const memory::desc& md) {
  const Blocking b = blockingOf(md);
  const size_t rank = b.dims.size();
  if (!b.blocked || (rank != 2 && rank != 4)) return 0;
  int64_t block = 1;
  if (!b.innerBlocks.empty()) {
    if (b.innerBlocks.size() != 1 || b.innerIndices[0] != 1) return 0;
    block = b.innerBlocks[0];
    if (block > kernels::kMaxChannelBlock) return 0;
  }
  for (size_t i = 0; i < rank; i++) {
    if (i != 1 && b.paddedDims[i] != b.dims[i]) return 0;
  }
  if (b.paddedDims[1] % block != 0) return 0;
  // Outer dims N, C/block, H, W in row-major order, each step `block` elements wide.
  memory::dims outer = b.paddedDims;
  outer[1] /= block;
  memory::dims expected = rowMajorStrides(outer);
  for (auto& s : expected) s *= block;
  return stridesMatch(b, expected) ? static_cast<int>(block) : 0;
}

memory::desc activationDesc(const Shape& shape, int block) {
  if (block <= 1 || shape.size() != 4) return plainDesc(shape);
  using tag = memory::format_tag;
  const memory::dims dims(shape.begin(), shape.end());
  switch (block) {
    case 4: return memory::desc(dims, memory::data_type::f32, tag::nChw4c);
    case 8: return memory::desc(dims, memory::data_type::f32, tag::nChw8c);
    case 16: return memory::desc(dims, memory::data_type::f32, tag::nChw16c);
    default: return plainDesc(shape);
  }
}

int preferredBlock(int64_t channels) {
  static std::map<int64_t, int> known;
  auto it = known.find(channels);
  if (it != known.end()) return it->second;
  // Ask oneDNN which layout a 3x3 convolution with this many output channels would produce.
  const auto any = memory::format_tag::any;
  const auto f32 = memory::data_type::f32;
  const memory::desc src({2, channels, 8, 8}, f32, any);
  const memory::desc weights({channels, channels, 3, 3}, f32, any);
  const ConvGeometry g{{1, 1}, {1, 1}, {1, 1}};
  const auto pd = makeConvForwardPd(cpuEngine(), dnnl::algorithm::convolution_direct, src, weights, nullptr, src, g, primitiveAttr());
  int block = channelBlock(pd.dst_desc());
  if (block == 0 || channels % block != 0) block = 1;
  known.emplace(channels, block);
  return block;
}

bool dim0Contiguous(const memory::desc& md) {
  const Blocking b = blockingOf(md);
  if (!b.blocked || hasPadding(md)) return false;
  if (b.dims[0] == 1) return true;
  for (int64_t idx : b.innerIndices) {
    if (idx == 0) return false;
  }
  const int64_t total = static_cast<int64_t>(md.get_size() / sizeof(float));
  if (b.strides[0] * b.dims[0] != total) return false;
  for (size_t i = 1; i < b.dims.size(); i++) {
    if (b.dims[i] > 1 && b.strides[i] >= b.strides[0]) return false;
  }
  return true;
}

std::string layoutName(const memory::desc& md) {
  const Blocking b = blockingOf(md);
  if (!b.blocked) return "opaque";
  const size_t rank = b.dims.size();
  std::vector<size_t> order(rank);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return b.strides[x] > b.strides[y]; });
  std::string name;
  for (size_t d : order) {
    const bool blockedDim = std::find(b.innerIndices.begin(), b.innerIndices.end(), static_cast<int64_t>(d)) != b.innerIndices.end();
    name += static_cast<char>((blockedDim ? 'A' : 'a') + d);
  }
  for (size_t i = 0; i < b.innerBlocks.size(); i++) {
    name += std::to_string(b.innerBlocks[i]) + static_cast<char>('a' + b.innerIndices[i]);
  }
  return name;
}

void appendLayoutKey(std::vector<int64_t>& key, const memory::desc& md) {
  const Blocking b = blockingOf(md);
  key.push_back(b.blocked ? 1 : 0);
  key.push_back(static_cast<int64_t>(b.dims.size()));
  key.insert(key.end(), b.dims.begin(), b.dims.end());
  key.insert(key.end(), b.paddedDims.begin(), b.paddedDims.end());
  key.insert(key.end(), b.strides.begin(), b.strides.end());
  key.push_back(static_cast<int64_t>(b.innerBlocks.size()));
  key.insert(key.end(), b.innerBlocks.begin(), b.innerBlocks.end());
  key.insert(key.end(), b.innerIndices.begin(), b.innerIndices.end());
}

void reorder(const dnnl::memory& src, const dnnl::memory& dst) {
  using Entry = Compiled<dnnl::reorder::primitive_desc, dnnl::reorder>;
  static PrimitiveCache<Entry> cache;
  const memory::desc srcMd = src.get_desc();
  const memory::desc dstMd = dst.get_desc();
  const Key key = Key(kReorderTag).add(srcMd).add(dstMd);
  const Entry& e = cache.get(key, [&] {
    return Entry(dnnl::reorder::primitive_desc(cpuEngine(), srcMd, cpuEngine(), dstMd, primitiveAttr()));
  });
  execute(e.prim, e.pd, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}});
}

Tensor reordered(const Tensor& x, const memory::desc& md) {
  Tensor out(x.shape(), md);
  reorder(x.mem(), out.mem());
  return out;
}

const Tensor& inLayout(const Tensor& x, const memory::desc& md, std::optional<Tensor>& holder) {
  if (x.desc() == md) return x;
  holder.emplace(reordered(x, md));
  return *holder;
}

const Tensor& asPlain(const Tensor& x, std::optional<Tensor>& holder) {
  if (isPlain(x.desc())) return x;
  holder.emplace(reordered(x, plainDesc(x.shape())));
  return *holder;
}

const Tensor& asDense(const Tensor& x, std::optional<Tensor>& holder) {
  if (!hasPadding(x.desc())) return x;
  holder.emplace(reordered(x, plainDesc(x.shape())));
  return *holder;
}

}  // namespace tq

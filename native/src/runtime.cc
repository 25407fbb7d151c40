#include "runtime.hpp"

#include <omp.h>

#include <cstdlib>
#include <new>

#include "layout.hpp"

namespace tq {

std::string shapeStr(const Shape& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); i++) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

int64_t numelOf(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {
// Larger requests are refused with an error instead of risking the OS killing the process.
constexpr size_t kMaxTensorBytes = size_t{1} << 32;

size_t checkedSize(const Shape& shape, const memory::desc& md) {
  const size_t bytes = md.get_size();
  if (bytes > kMaxTensorBytes) {
    throw OpError("tensor of shape " + shapeStr(shape) + " needs " + std::to_string(bytes >> 20) +
        " MiB, more than the 4 GiB a native buffer may have");
  }
  return bytes;
}
}  // namespace

Tensor::Tensor(Shape shape, const memory::desc& md)
    : shape_(std::move(shape)), md_(md), block_(checkedSize(shape_, md)) {}

const dnnl::memory& Tensor::mem() const {
  if (!mem_) mem_ = dnnl::memory(md_, cpuEngine(), block_.get());
  return mem_;
}

const dnnl::engine& cpuEngine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& cpuStream() {
  static dnnl::stream stream(cpuEngine());
  return stream;
}

namespace {
int activeThreads = 0;

/** One scratchpad shared by all primitives (ops run one at a time); grows, never shrinks. */
class Scratchpad {
 public:
  void* reserve(size_t bytes) {
    if (bytes > capacity_) {
      std::free(data_);
      capacity_ = (bytes + 4095) / 4096 * 4096;
      data_ = std::aligned_alloc(4096, capacity_);
      if (!data_) {
        capacity_ = 0;
        throw std::bad_alloc();
      }
    }
    return data_;
  }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};
}  // namespace

int defaultThreads() { return omp_get_num_procs(); }

void useThreads(int threads) {
  const int n = threads > 0 ? threads : defaultThreads();
  if (n != activeThreads) {
    omp_set_num_threads(n);
    activeThreads = n;
  }
}

int currentThreads() { return activeThreads; }

dnnl::primitive_attr primitiveAttr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

void execute(const dnnl::primitive& prim, const dnnl::primitive_desc_base& pd, ArgMap args) {
  static Scratchpad scratchpad;
  const memory::desc scratchDesc = pd.scratchpad_desc();
  const size_t bytes = scratchDesc.get_size();
  if (bytes > 0) {
    args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(scratchDesc, cpuEngine(), scratchpad.reserve(bytes)));
  }
  prim.execute(cpuStream(), args);
  cpuStream().wait();
}

Key& Key::add(const Shape& dims) {
  values_.push_back(static_cast<int64_t>(dims.size()));
  values_.insert(values_.end(), dims.begin(), dims.end());
  return *this;
}

Key& Key::add(const memory::desc& md) {
  appendLayoutKey(values_, md);
  return *this;
}

size_t Key::hash() const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the 64-bit values
  for (int64_t v : values_) {
    h ^= static_cast<uint64_t>(v);
    h *= 1099511628211ull;
  }
  return static_cast<size_t>(h);
}

}  // namespace tq

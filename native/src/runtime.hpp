// Process-wide oneDNN runtime: engine, stream, thread count, the shared scratchpad, primitive
// caches, and the Tensor type every op works on.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pool.hpp"

namespace tq {

using dnnl::memory;
using Shape = std::vector<int64_t>;

// ---- errors --------------------------------------------------------------------------------

/** Bad input to an op; the message already names the op. */
class OpError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

std::string shapeStr(const Shape& shape);

template <class... Parts>
[[noreturn]] void fail(const char* op, const Parts&... parts) {
  std::ostringstream os;
  os << op << ": ";
  (os << ... << parts);
  throw OpError(os.str());
}

int64_t numelOf(const Shape& shape);

// ---- tensors -------------------------------------------------------------------------------

/**
 * A float32 tensor: its logical shape, its physical layout (a oneDNN memory descriptor whose
 * dims equal the shape; rank 0 is stored as {1}) and the pool block holding the data.
 */
class Tensor {
 public:
  Tensor(Shape shape, const memory::desc& md);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;

  const Shape& shape() const { return shape_; }
  const memory::desc& desc() const { return md_; }
  float* data() const { return static_cast<float*>(block_.get()); }
  int64_t numel() const { return numelOf(shape_); }
  /** Bytes of the physical layout (including blocked padding). */
  size_t bytes() const { return md_.get_size(); }
  /** Elements of the physical layout (including blocked padding). */
  int64_t physicalSize() const { return static_cast<int64_t>(bytes() / sizeof(float)); }
  /** The oneDNN memory object over this tensor (created once). */
  const dnnl::memory& mem() const;

 private:
  Shape shape_;
  memory::desc md_;
  PooledBlock block_;
  mutable dnnl::memory mem_;
};

// ---- runtime -------------------------------------------------------------------------------

const dnnl::engine& cpuEngine();
dnnl::stream& cpuStream();

/** Make `threads` the OpenMP thread count for the following ops (0 = all cores). */
void useThreads(int threads);
int currentThreads();
int defaultThreads();

/** Attributes for every primitive: user-managed scratchpad (the shared one below). */
dnnl::primitive_attr primitiveAttr();

using ArgMap = std::unordered_map<int, dnnl::memory>;

/** Run a primitive with the shared scratchpad appended to its arguments. */
void execute(const dnnl::primitive& prim, const dnnl::primitive_desc_base& pd, ArgMap args);

/** Cache key: integers (op tag, dims, params, layouts); the thread count is always included. */
class Key {
 public:
  explicit Key(int64_t opTag) { values_ = {opTag, currentThreads()}; }
  Key& add(int64_t v) {
    values_.push_back(v);
    return *this;
  }
  Key& add(const Shape& dims);
  Key& add(const memory::desc& md);
  bool operator==(const Key& other) const { return values_ == other.values_; }
  size_t hash() const;

 private:
  std::vector<int64_t> values_;
};

struct KeyHash {
  size_t operator()(const Key& k) const { return k.hash(); }
};

/** Primitive descriptors and primitives, keyed by op + shapes + params + layouts. */
template <class Entry>
class PrimitiveCache {
 public:
  template <class Make>
  const Entry& get(const Key& key, Make make) {
    auto it = entries_.find(key);
    if (it == entries_.end()) it = entries_.emplace(key, make()).first;
    return it->second;
  }

 private:
  std::unordered_map<Key, Entry, KeyHash> entries_;
};

/** A primitive descriptor with its primitive. */
template <class Pd, class Prim>
struct Compiled {
  Pd pd;
  Prim prim;
  explicit Compiled(Pd p) : pd(std::move(p)), prim(pd) {}
};

}  // namespace tq

#include "pool.hpp"

#include <sys/mman.h>

#include <cstdlib>
#include <new>
#include <utility>

namespace tq {
namespace {

// Blocks from this size on are mapped directly, so trimming gives the pages back to the OS
// (large malloc'ed blocks can stay in the heap and keep the resident size up).
constexpr size_t kMapThreshold = size_t{256} << 10;
constexpr size_t kPage = 4096;
constexpr size_t kAlign = 64;
// A miss with more than this cached (and more cached than live) means the working set changed
// (e.g. evaluation after training, another batch size): drop the cache instead of growing.
constexpr size_t kTrimFloor = size_t{64} << 20;

size_t sizeClass(size_t bytes) {
  if (bytes == 0) bytes = kAlign;
  const size_t unit = bytes < kMapThreshold ? kAlign : kPage;
  return (bytes + unit - 1) / unit * unit;
}

void* osAllocate(size_t capacity) {
  if (capacity >= kMapThreshold) {
    void* p = mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return p;
  }
  void* p = std::aligned_alloc(kAlign, capacity);
  if (!p) throw std::bad_alloc();
  return p;
}

void osFree(void* p, size_t capacity) {
  if (capacity >= kMapThreshold) {
    munmap(p, capacity);
  } else {
    std::free(p);
  }
}

}  // namespace

MemoryPool& MemoryPool::instance() {
  static MemoryPool* pool = new MemoryPool();  // never destroyed: finalizers may run at exit
  return *pool;
}

void* MemoryPool::acquire(size_t bytes, size_t& capacity) {
  capacity = sizeClass(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = free_.find(capacity);
  if (it != free_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= capacity;
    live_ += capacity;
    return p;
  }
  if (cached_ > kTrimFloor && cached_ > live_) trimLocked();
  void* p = osAllocate(capacity);
  live_ += capacity;
  return p;
}

void MemoryPool::release(void* ptr, size_t capacity) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  free_[capacity].push_back(ptr);
  live_ -= capacity;
  cached_ += capacity;
}

void MemoryPool::trim() {
  std::lock_guard<std::mutex> lock(mutex_);
  trimLocked();
}

void MemoryPool::trimLocked() {
  for (auto& [capacity, blocks] : free_) {
    for (void* p : blocks) osFree(p, capacity);
  }
  free_.clear();
  cached_ = 0;
}

PooledBlock::PooledBlock(size_t bytes) { ptr_ = MemoryPool::instance().acquire(bytes, capacity_); }

PooledBlock::PooledBlock(PooledBlock&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), capacity_(std::exchange(other.capacity_, 0)) {}

PooledBlock& PooledBlock::operator=(PooledBlock&& other) noexcept {
  if (this != &other) {
    reset();
    ptr_ = std::exchange(other.ptr_, nullptr);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

void PooledBlock::reset() {
  if (ptr_) MemoryPool::instance().release(ptr_, capacity_);
  ptr_ = nullptr;
  capacity_ = 0;
}

}  // namespace tq

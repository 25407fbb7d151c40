// Size-bucketed memory pool (process wide, thread safe): a training step allocates the same set of sizes every time, so after
// the first step every request is served from a free list and nothing is asked of the OS.
#pragma once

#include <cstddef>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace tq {

class MemoryPool {
 public:
  static MemoryPool& instance();

  /** A block of at least `bytes` bytes (64-byte aligned); `capacity` receives its real size. */
  void* acquire(size_t bytes, size_t& capacity);
  void release(void* ptr, size_t capacity);

  /** Bytes in blocks handed out and not yet released. */
  size_t liveBytes() const { return live_; }
  /** Bytes held in free lists. */
  size_t cachedBytes() const { return cached_; }
  /** Return every cached block to the OS. */
  void trim();

 private:
  MemoryPool() = default;

  void trimLocked();

  std::mutex mutex_;  // finalizers and worker threads may release concurrently
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t live_ = 0;
  size_t cached_ = 0;
};

/** Move-only owner of one pool block; returns it to the pool when destroyed. */
class PooledBlock {
 public:
  PooledBlock() = default;
  explicit PooledBlock(size_t bytes);
  PooledBlock(PooledBlock&& other) noexcept;
  PooledBlock& operator=(PooledBlock&& other) noexcept;
  PooledBlock(const PooledBlock&) = delete;
  PooledBlock& operator=(const PooledBlock&) = delete;
  ~PooledBlock() { reset(); }

  void reset();
  void* get() const { return ptr_; }
  size_t capacity() const { return capacity_; }
  explicit operator bool() const { return ptr_ != nullptr; }

 private:
  void* ptr_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace tq

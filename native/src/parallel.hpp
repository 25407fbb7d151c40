// OpenMP helpers. Every reduction splits its index range into one contiguous, statically
// assigned range per thread and combines the per-thread partials in thread order, so results
// are bit-identical from run to run for a fixed thread count.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tq {

/**
 * Below this much work (about one elementwise operation per element) a kernel runs on the calling
 * thread only: that takes at most ~100 us, while waking a sleeping team on a busy machine (shared
 * cores) was measured at several hundred. Weight-sized tensors stay on one thread; activations of a
 * training batch are far larger.
 */
constexpr int64_t kParallelThreshold = 1 << 17;

/** Thread `t` of `threads` gets [begin, end) of [0, n); ranges start on 16-element boundaries. */
inline void threadRange(int64_t n, int t, int threads, int64_t& begin, int64_t& end) {
  int64_t chunk = (n + threads - 1) / threads;
  chunk = (chunk + 15) / 16 * 16;
  begin = std::min<int64_t>(n, chunk * t);
  end = std::min<int64_t>(n, begin + chunk);
}

/** Upper bound of the team size of the next parallel region. */
inline int maxTeam() { return omp_get_max_threads(); }

/**
 * Run body(thread, begin, end) on every thread of a team over its static range of [0, n).
 * `work` is the number of elementary operations, deciding whether threads are worth starting.
 */
template <class Body>
void forThreadRanges(int64_t n, int64_t work, Body body) {
#pragma omp parallel if (work >= kParallelThreshold)
  {
    int64_t begin, end;
    const int t = omp_get_thread_num();
    threadRange(n, t, omp_get_num_threads(), begin, end);
    body(t, begin, end);
  }
}

/**
 * [0, n) is `channels` equal contiguous chunks; run body(thread, channel, begin, end) over the
 * part of each chunk that falls in each thread's static range.
 */
template <class Body>
void forChannelSegments(int64_t n, int64_t channels, int64_t work, Body body) {
  const int64_t chunk = n / channels;
  forThreadRanges(n, work, [&](int t, int64_t begin, int64_t end) {
    for (int64_t start = begin; start < end;) {
      const int64_t c = start / chunk;
      const int64_t stop = std::min(end, (c + 1) * chunk);
      body(t, c, start, stop);
      start = stop;
    }
  });
}

/** body(i) for i in [0, n), statically scheduled. */
template <class Body>
void parallelFor(int64_t n, int64_t work, Body body) {
#pragma omp parallel for schedule(static) if (work >= kParallelThreshold)
  for (int64_t i = 0; i < n; i++) body(i);
}

/** Per-thread float64 partials of `width` values (zeroed), combined in thread order into `out`. */
class ThreadPartials {
 public:
  explicit ThreadPartials(int64_t width) : width_(width), values_(static_cast<size_t>(maxTeam() * width), 0.0) {}
  double* of(int thread) { return &values_[static_cast<size_t>(thread * width_)]; }
  void combineInto(double* out) const {
    std::fill(out, out + width_, 0.0);
    for (size_t t = 0; t * width_ < values_.size(); t++) {
      for (int64_t j = 0; j < width_; j++) out[j] += values_[t * width_ + j];
    }
  }

 private:
  int64_t width_;
  std::vector<double> values_;
};

}  // namespace tq

#include "quantize.hpp"

#include <algorithm>
#include <cmath>

#include "parallel.hpp"

namespace tq::kernels {
namespace {

// Numerics (shared with the TypeScript reference, so both pick the same level for every element):
// xn = (x - offset) / scale is computed in float32, like any float32 implementation of the formula
// (PyTorch's included); the clip, the projection and everything after it run in float64, and the
// results are stored as float32.

/** Projection of a clipped, normalized value onto the level set or the uniform grid. */
class Projector {
 public:
  explicit Projector(const QuantSpec& spec)
      : levels_(spec.levels), steps_(spec.steps), symmetric_(spec.symmetric) {
    for (size_t k = 0; k + 1 < levels_.size(); k++) {
      midpoints_.push_back((static_cast<double>(levels_[k]) + levels_[k + 1]) / 2.0);
    }
  }

  double operator()(double v) const {
    if (!symmetric_ || std::isnan(v)) return magnitude(v);
    if (v == 0.0) return 0.0;
    const double p = magnitude(std::fabs(v));
    return v > 0.0 ? p : -p;
  }

 private:
  double magnitude(double a) const {
    if (levels_.empty()) {
      // std::nearbyint rounds half to even under the default rounding mode (never changed here).
      return std::nearbyint(static_cast<double>(static_cast<float>(a * steps_))) / steps_;
    }
    if (std::isnan(a)) return a;
    // The level index is the number of midpoints strictly below a: a tie picks the lower level.
    const auto it = std::lower_bound(midpoints_.begin(), midpoints_.end(), a);
    return levels_[it - midpoints_.begin()];
  }

  std::vector<float> levels_;
  std::vector<double> midpoints_;
  double steps_;
  bool symmetric_;
};

/** Per-channel constants of the spec. */
struct ChannelParams {
  float scale, offset;
  double outScale, outOffset, inputScale;
  ChannelParams(const QuantSpec& s, int64_t c)
      : scale(s.scale[c]), offset(s.offset[c]), outScale(s.outScale[c]), outOffset(s.outOffset[c]),
        inputScale(outScale / scale) {}
  double normalized(float x) const { return (x - offset) / scale; }
};

double clip(double v, double lo, double hi) { return v < lo ? lo : (v > hi ? hi : v); }

double sign(double v) { return v > 0.0 ? 1.0 : (v < 0.0 ? -1.0 : 0.0); }

// A binary search per element costs about as much as a few elementwise passes.
constexpr int64_t kWorkPerElement = 8;

}  // namespace

void quantize(const float* x, float* y, int64_t n, const QuantSpec& spec) {
  const Projector project(spec);
  forChannelSegments(n, spec.channels, n * kWorkPerElement, [&](int, int64_t c, int64_t begin, int64_t end) {
    const ChannelParams p(spec, c);
    for (int64_t i = begin; i < end; i++) {
      const double q = project(clip(p.normalized(x[i]), spec.lo, spec.hi));
      y[i] = static_cast<float>(q * p.outScale + p.outOffset);
    }
  });
}

void quantizeBackward(const float* x, const float* gy, float* gx, int64_t n, const QuantSpec& spec, double* sums) {
  const Projector project(spec);
  const int team = maxTeam();
  std::vector<double> partial(static_cast<size_t>(team) * spec.channels * kQuantSums, 0.0);
  forChannelSegments(n, spec.channels, n * kWorkPerElement, [&](int t, int64_t c, int64_t begin, int64_t end) {
    const ChannelParams p(spec, c);
    double inside = 0.0, insideXn = 0.0, insideError = 0.0, below = 0.0, above = 0.0;
    for (int64_t i = begin; i < end; i++) {
      const double g = gy[i];
      const double xn = p.normalized(x[i]);
      const double xc = clip(xn, spec.lo, spec.hi);
      const double q = project(xc);
      // EWGS: g' = g (1 + delta sign(g) (xc - q)); delta = 0 is the straight-through estimator.
      const double scaled = spec.delta == 0.0 ? g : g * (1.0 + spec.delta * sign(g) * (xc - q));
      const bool isBelow = spec.loInclusive ? xn < spec.lo : xn <= spec.lo;
      const bool isAbove = spec.hiInclusive ? xn > spec.hi : xn >= spec.hi;
      if (isBelow) {
        below += g;
      } else if (isAbove) {
        above += g;
      } else {
        inside += scaled;
        insideXn += scaled * xn;
        insideError += scaled * (q - xn);
      }
      gx[i] = (!isBelow && !isAbove) || spec.passClipped ? static_cast<float>(scaled * p.inputScale) : 0.0f;
    }
    double* s = &partial[(t * spec.channels + c) * kQuantSums];
    s[0] += inside;
    s[1] += insideXn;
    s[2] += insideError;
    s[3] += below;
    s[4] += above;
  });
  std::fill(sums, sums + spec.channels * kQuantSums, 0.0);
  for (int t = 0; t < team; t++) {
    for (int64_t k = 0; k < spec.channels * kQuantSums; k++) sums[k] += partial[t * spec.channels * kQuantSums + k];
  }
}

}  // namespace tq::kernels

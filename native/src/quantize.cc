#include "quantize.hpp"

#include <algorithm>
#include <cmath>

#include "parallel.hpp"

namespace tq::kernels {
namespace {

// Per-element arithmetic is done in float64, like the TypeScript reference, so both backends
// pick the same level even for values within float32 rounding of a decision point.

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
    if (!symmetric_) return magnitude(v);
    const double p = magnitude(std::fabs(v));
    return v > 0.0 ? p : (v < 0.0 ? -p : 0.0);
  }

 private:
  double magnitude(double a) const {
    // std::nearbyint rounds half to even under the default rounding mode (never changed here).
    if (levels_.empty()) return std::nearbyint(a * steps_) / steps_;
    // The level index is the number of midpoints strictly below a: a tie picks the lower level.
    const auto it = std::lower_bound(midpoints_.begin(), midpoints_.end(), a);
    return levels_[it - midpoints_.begin()];
  }

  std::vector<float> levels_;
  std::vector<double> midpoints_;
  double steps_;
  bool symmetric_;
};

/** Per-channel constants of the spec, widened once per segment. */
struct ChannelParams {
  double scale, offset, outScale, outOffset;
  ChannelParams(const QuantSpec& s, int64_t c)
      : scale(s.scale[c]), offset(s.offset[c]), outScale(s.outScale[c]), outOffset(s.outOffset[c]) {}
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
      const double xn = (x[i] - p.offset) / p.scale;
      const double q = project(clip(xn, spec.lo, spec.hi));
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
    double inSum = 0.0, inSumXn = 0.0, inSumErr = 0.0, below = 0.0, above = 0.0;
    for (int64_t i = begin; i < end; i++) {
      const double xn = (x[i] - p.offset) / p.scale;
      const double xc = clip(xn, spec.lo, spec.hi);
      const double q = project(xc);
      const double g = gy[i];
      const bool aboveLo = spec.loInclusive ? xn >= spec.lo : xn > spec.lo;
      const bool belowHi = spec.hiInclusive ? xn <= spec.hi : xn < spec.hi;
      const bool inside = aboveLo && belowHi;
      const double gScaled = g * (1.0 + spec.delta * sign(g) * (xc - q));
      gx[i] = inside || spec.passClipped ? static_cast<float>(gScaled * p.outScale / p.scale) : 0.0f;
      if (inside) {
        inSum += gScaled;
        inSumXn += gScaled * xn;
        inSumErr += gScaled * (q - xn);
      } else if (!aboveLo) {
        below += g;
      } else {
        above += g;
      }
    }
    double* s = &partial[(t * spec.channels + c) * kQuantSums];
    s[0] += inSum;
    s[1] += inSumXn;
    s[2] += inSumErr;
    s[3] += below;
    s[4] += above;
  });
  std::fill(sums, sums + spec.channels * kQuantSums, 0.0);
  for (int t = 0; t < team; t++) {
    for (int64_t k = 0; k < spec.channels * kQuantSums; k++) sums[k] += partial[t * spec.channels * kQuantSums + k];
  }
}

}  // namespace tq::kernels

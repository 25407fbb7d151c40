// The exact evaluation of a simulated deployment (src/export/simulate.ts): the integer values a
// lowered conv or quantize op stores, computed from the float model's outputs. Each stored integer
// is recovered from its float value (within float error of an integer), run through the host int8
// path's own epilogue kernels (int8_kernels.hpp) and stored in real units, in the layout the
// training backend holds the float tensor in. Same values as simulate.ts's JavaScript loops,
// element for element.
#pragma once

#include <cstdint>
#include <vector>

#include "int8_model.hpp"

namespace tq::int8 {

/**
 * Float images (real units) as the training backend stores them: image after image, each either
 * channels x pixels (block 1: NCHW) or channel blocks of `block` channels x pixels x block
 * (nChw16c and the like), the channels padded to `paddedChannels`, a multiple of the block.
 */
struct FloatImages {
  float* data;
  int64_t images, channels, height, width;
  int64_t block = 1;
  int64_t paddedChannels = channels;

  int64_t pixels() const { return height * width; }
  int64_t imageStride() const { return paddedChannels * pixels(); }
  /** The start of channel block `k` of image `n` (block 1: of channel k). */
  float* blockData(int64_t n, int64_t k) const { return data + n * imageStride() + k * pixels() * block; }
};

/** Buffers one image's integers pass through, kept between calls (one per thread). */
struct SimulationScratch {
  std::vector<int32_t> values, plane;
  std::vector<int16_t> shortcut, stored;
};

/**
 * A conv's stored values from its float output before batch norm: accumulator = round((conv - B[c]) / M[c])
 * (0 where M[c] is 0), then the op's requantization and epilogue, the shortcut's integers recovered
 * at `shortcutScale` (null: none); out = unit * value, rounded to float. `out` has conv's shape
 * and may be conv itself (each image is read whole before it is written).
 */
void simulateConv(const ConvStep& op, const FloatImages& conv, const double* M, const double* B, const FloatImages* shortcut, double shortcutScale, double unit, const FloatImages& out, std::vector<SimulationScratch>& scratch);

/** A quantize op's codes of its input (integers recovered at `step`), out = unit * code; out may be x. */
void simulateQuantize(const QuantizeStep& op, const FloatImages& x, double step, double unit, const FloatImages& out, std::vector<SimulationScratch>& scratch);

}  // namespace tq::int8

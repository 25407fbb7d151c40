// The exact evaluation of a simulated deployment (src/export/simulate.ts): the integer values a
// lowered conv or quantize op stores, computed from the float model's outputs. Each stored integer
// is recovered from its float value (within float error of an integer), run through the host int8
// path's own epilogue kernels (int8_kernels.hpp) and returned in real units, NCHW as the training
// backend holds it. Same values as simulate.ts's JavaScript loops, element for element.
#pragma once

#include <cstdint>
#include <vector>

#include "int8_model.hpp"

namespace tq::int8 {

/** The float form of a stream the simulation passes between layers: images x channels x pixels, real units. */
struct FloatPlanes {
  const float* data;
  int64_t images, channels, height, width;
};

/** Buffers one channel's integers pass through, kept between calls. */
struct SimulationScratch {
  std::vector<int32_t> values, plane;
  std::vector<int16_t> shortcut, stored;
};

/**
 * A conv's stored values from its float output before batch norm: accumulator = round((conv - B[c]) / M[c])
 * (0 where M[c] is 0), then the op's requantization and epilogue, the shortcut's integers recovered
 * at `shortcutScale` (null: none); out[i] = unit * value, rounded to float.
 */
void simulateConv(const ConvStep& op, const FloatPlanes& conv, const double* M, const double* B, const float* shortcut, double shortcutScale, double unit, float* out, SimulationScratch& scratch);

/** A quantize op's codes of its input (integers recovered at `step`), out[i] = unit * code. */
void simulateQuantize(const QuantizeStep& op, const FloatPlanes& x, double step, double unit, float* out, SimulationScratch& scratch);

}  // namespace tq::int8

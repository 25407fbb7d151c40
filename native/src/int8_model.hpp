// The host int8 path: a lowered integer model (src/export/ir.ts) run in batches, with the
// convolutions as oneDNN int8 convolutions (u8/s8 activations x s8 weights -> s32, exact) and
// the requantization, activation codes, residual adds, add ops and pooling in int8_kernels. The logits
// are bit-identical to the TypeScript integer engine's.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "int8_kernels.hpp"

namespace tq::int8 {

struct TensorSpec {
  IntType type;
  int64_t channels, height, width;
  int64_t pixels() const { return height * width; }
  int64_t size() const { return channels * height * width; }
};

enum class EpilogueKind { activation, residual, logits };

struct ShortcutSpec {
  int64_t input, stride, offset;
  int32_t mult, shift;
};

struct InputStep {
  int64_t output;
  std::vector<int16_t> lut;  // channels * 256
};

struct ConvStep {
  std::string name;
  int64_t input, output;
  int64_t inChannels, outChannels, groups = 1;
  Window window;
  std::vector<int32_t> weights;  // integer values, OIHW (I = input channels per group)
  Requant requant;
  EpilogueKind epilogue;
  ActivationRule activation;  // epilogue activation (a ceiling already folded into the rule)
  int residualBits = 16;      // epilogue residual: the output's bits, and its clamp [lo, hi]
  int32_t residualLo = 0, residualHi = 0;
  std::optional<ShortcutSpec> shortcut;
};

struct QuantizeStep {
  std::string name;
  int64_t input, output;
  Requant requant;  // one entry per channel
  ActivationRule activation;
};

struct PoolStep {
  std::string name;
  int64_t input, output;
  bool max;  // maxpool, else sumpool
  Window window;
};

struct AddInputSpec {
  int64_t input;
  int32_t mult, shift;
};

struct AddStep {
  std::string name;
  AddInputSpec a, b;
  int64_t output;
  int bits;
  int32_t lo, hi;  // ReLU, ceiling and saturation as one clamp
};

struct Step {
  enum class Kind { input, conv, quantize, pool, add } kind;
  size_t index;  // into the vector of that kind
};

struct ModelSpec {
  std::vector<TensorSpec> tensors;
  std::vector<InputStep> inputs;
  std::vector<ConvStep> convs;
  std::vector<QuantizeStep> quantizes;
  std::vector<PoolStep> pools;
  std::vector<AddStep> adds;
  std::vector<Step> steps;  // execution order
  int64_t output;
};

class IntModel {
 public:
  /** Checks the spec's structure (indices, table sizes, shapes); `batch` images run per pass. */
  IntModel(ModelSpec spec, int64_t batch);
  ~IntModel();
  IntModel(const IntModel&) = delete;
  IntModel& operator=(const IntModel&) = delete;

  int64_t imageBytes() const;
  int64_t classes() const;
  /** Logits (classes int32 per image) of `count` uint8 CHW images stored back to back. */
  void infer(const uint8_t* images, int64_t count, int32_t* logits);
  /** How each convolution runs, one line per conv (oneDNN implementation names). */
  std::vector<std::string> describe();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tq::int8

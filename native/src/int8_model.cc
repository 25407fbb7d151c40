#include "int8_model.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>

#include "runtime.hpp"

namespace tq::int8 {
namespace {

constexpr const char* kOp = "IntModel";
/** Pixels per unit of epilogue work: a few KiB of accumulators, enough to amortize the loop setup. */
constexpr int64_t kBlockPixels = 64;

/** A 64-byte aligned, zero-initialized byte buffer. */
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t bytes) : bytes_(bytes) {
    const size_t rounded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
    data_ = std::aligned_alloc(64, rounded);
    if (!data_) throw std::bad_alloc();
    std::memset(data_, 0, rounded);
  }
  Buffer(Buffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), bytes_(o.bytes_) {}
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~Buffer() { std::free(data_); }
  template <class T = void>
  T* as() const { return static_cast<T*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

memory::data_type dnnlType(IntType t) {
  switch (t) {
    case IntType::i8:
      return memory::data_type::s8;
    case IntType::u8:
      return memory::data_type::u8;
    case IntType::i16:
    case IntType::i32:
      break;
  }
  throw OpError(std::string(kOp) + ": no int8 convolution source for this type");
}

/** Forward-inference convolution descriptor, oneDNN 2.x or 3.x (see compat.hpp for the API split). */
dnnl::convolution_forward::primitive_desc makeConvPd(const memory::desc& src, const memory::desc& weights,
    const memory::desc& dst, const memory::dims& strides, const memory::dims& pad) {
  const auto prop = dnnl::prop_kind::forward_inference;
  const auto alg = dnnl::algorithm::convolution_direct;
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::convolution_forward::primitive_desc(cpuEngine(), prop, alg, src, weights, dst, strides, pad, pad, primitiveAttr());
#else
  const dnnl::convolution_forward::desc d(prop, alg, src, weights, dst, strides, pad, pad);
  return {d, primitiveAttr(), cpuEngine()};
#endif
}

/**
 * On x86 without VNNI, oneDNN's int8 kernels add pairs of u8*s8 products in int16 with
 * saturation (vpmaddubsw), which is not exact; with VNNI (or AMX) the products go straight into
 * int32. Elsewhere (aarch64) the int8 kernels accumulate in int32.
 */
void requireExactInt8() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  if (!__builtin_cpu_supports("avx512vnni") && !__builtin_cpu_supports("avxvnni")) {
    throw OpError(std::string(kOp) + ": this CPU has no VNNI instructions; oneDNN's int8 convolutions would not be exact here "
        "(int16 saturation), so the host int8 path is unavailable (use the TypeScript integer engine)");
  }
#endif
}

/** Integer weights as signed 8-bit pieces: w = sum of piece * 2^shift (one piece when they fit int8). */
struct WeightPiece {
  std::vector<int8_t> values;
  int shift;
};

std::vector<WeightPiece> weightPieces(const ConvStep& conv) {
  const auto [lo, hi] = std::minmax_element(conv.weights.begin(), conv.weights.end());
  if (*lo >= -128 && *hi <= 127) return {{std::vector<int8_t>(conv.weights.begin(), conv.weights.end()), 0}};
  // w = high * 128 + low with 0 <= low < 128.
  WeightPiece low{std::vector<int8_t>(conv.weights.size()), 0}, high{std::vector<int8_t>(conv.weights.size()), 7};
  for (size_t i = 0; i < conv.weights.size(); i++) {
    const int32_t w = conv.weights[i];
    if ((w >> 7) < -128 || (w >> 7) > 127) {
      fail(kOp, conv.name, ": weight ", i, " is ", w, ", beyond the 15-bit range the int8 split covers");
    }
    low.values[i] = static_cast<int8_t>(w & 127);
    high.values[i] = static_cast<int8_t>(w >> 7);
  }
  return {std::move(low), std::move(high)};
}

/** One oneDNN convolution of a source piece with a weight piece, its result weighted by 2^shift. */
struct Term {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  dnnl::memory src, weights, dst;
  int shift;
};

}  // namespace

struct IntModel::Impl {
  ModelSpec spec;
  int64_t batch;
  std::vector<Buffer> tensors;  // NHWC, `batch` images each
  Buffer acc, term;             // int32 accumulators of the largest conv
  Buffer splitHigh, splitLow;   // int16 conv inputs as int8 pieces
  std::vector<std::vector<WeightPiece>> weights;  // per conv
  std::map<std::pair<size_t, int64_t>, std::vector<Term>> terms;  // (conv, images) -> terms
  std::vector<Buffer> scratch;  // per thread: one block of int32
  Buffer staging;               // a short batch padded to a power of two

  Impl(ModelSpec s, int64_t b) : spec(std::move(s)), batch(b) {}

  const TensorSpec& tensor(int64_t id) const { return spec.tensors[static_cast<size_t>(id)]; }
  char* data(int64_t id) const { return tensors[static_cast<size_t>(id)].as<char>(); }
  int64_t maxChannels() const {
    int64_t c = 1;
    for (const TensorSpec& t : spec.tensors) c = std::max(c, t.channels);
    return c;
  }

  void check() const;
  void allocate();
  std::vector<Term>& termsFor(size_t index, int64_t images);
  void run(const Step& step, const uint8_t* images, int64_t n);
  void runInput(const InputStep& s, const uint8_t* images, int64_t n);
  void runConv(size_t index, int64_t n);
  void runQuantize(const QuantizeStep& s, int64_t n);
  void runPool(const PoolStep& s, int64_t n);
  void runAdd(const AddStep& s, int64_t n);
};

// ---- construction ----------------------------------------------------------------------------

namespace {

void checkTensorId(const ModelSpec& spec, int64_t id, const std::string& where) {
  if (id < 0 || id >= static_cast<int64_t>(spec.tensors.size())) fail(kOp, where, ": tensor ", id, " does not exist");
}

void checkRequant(const Requant& q, int64_t channels, const std::string& where) {
  if (q.mult.size() != static_cast<size_t>(channels) || q.shift.size() != q.mult.size() || q.bias.size() != q.mult.size()) {
    fail(kOp, where, ": requantization needs ", channels, " entries per table");
  }
  for (int32_t s : q.shift) {
    if (s < 0 || s > 62) fail(kOp, where, ": shift ", s, " is outside [0, 62]");
  }
}

void checkRule(const ActivationRule& r, const TensorSpec& out, const std::string& where) {
  if (out.type != IntType::u8 && out.type != IntType::i8) fail(kOp, where, ": an activation output must be int8 or uint8");
  if (r.useThresholds) {
    if (r.values.size() != r.thresholds.size() + 1) fail(kOp, where, ": needs one more value than thresholds");
  } else if (r.fracBits < 0 || r.fracBits > 30 || r.minCode > r.maxCode) {
    fail(kOp, where, ": invalid rounding rule");
  }
}

}  // namespace

void IntModel::Impl::check() const {
  if (batch < 1 || batch > 65536) fail(kOp, "batch must be in [1, 65536], got ", batch);
  checkTensorId(spec, spec.output, "output");
  if (tensor(spec.output).type != IntType::i32 || tensor(spec.output).pixels() != 1) fail(kOp, "the output must be int32 [classes, 1, 1]");
  if (spec.steps.empty() || spec.steps[0].kind != Step::Kind::input) fail(kOp, "the first op must be the input op");
  for (const InputStep& s : spec.inputs) {
    checkTensorId(spec, s.output, "input");
    const TensorSpec& t = tensor(s.output);
    if (t.type != IntType::i8 && t.type != IntType::i16) fail(kOp, "input: output must be int8 or int16");
    if (s.lut.size() != static_cast<size_t>(t.channels * 256)) fail(kOp, "input: the table needs channels x 256 entries");
  }
  for (const ConvStep& c : spec.convs) {
    checkTensorId(spec, c.input, c.name);
    checkTensorId(spec, c.output, c.name);
    const TensorSpec& in = tensor(c.input);
    const TensorSpec& out = tensor(c.output);
    const Window& w = c.window;
    if (in.channels != c.inChannels || out.channels != c.outChannels || c.groups < 1 || c.inChannels % c.groups != 0 || c.outChannels % c.groups != 0 ||
        out.height != w.outHeight(in.height) || out.width != w.outWidth(in.width)) {
      fail(kOp, c.name, ": shapes do not match the convolution");
    }
    if (in.type == IntType::i32) fail(kOp, c.name, ": an int32 input cannot run as an int8 convolution");
    if (c.weights.size() != static_cast<size_t>(c.outChannels * (c.inChannels / c.groups) * w.kernelH * w.kernelW)) fail(kOp, c.name, ": wrong number of weights");
    checkRequant(c.requant, c.outChannels, c.name);
    switch (c.epilogue) {
      case EpilogueKind::activation:
        checkRule(c.activation, out, c.name);
        break;
      case EpilogueKind::logits:
        if (out.type != IntType::i32) fail(kOp, c.name, ": logits must be int32");
        break;
      case EpilogueKind::residual:
        if (!((c.residualBits == 8 && out.type == IntType::i8) || (c.residualBits == 16 && out.type == IntType::i16))) {
          fail(kOp, c.name, ": residual output type does not match its bits");
        }
        if (c.shortcut) {
          checkTensorId(spec, c.shortcut->input, c.name + " shortcut");
          const TensorSpec& sc = tensor(c.shortcut->input);
          const int64_t st = c.shortcut->stride;
          if (st < 1 || (out.height - 1) * st >= sc.height || (out.width - 1) * st >= sc.width || sc.type == IntType::i32 ||
              c.shortcut->shift < 0 || c.shortcut->shift > 62) {
            fail(kOp, c.name, ": shortcut does not fit the output");
          }
        }
        break;
    }
  }
  for (const QuantizeStep& q : spec.quantizes) {
    checkTensorId(spec, q.input, q.name);
    checkTensorId(spec, q.output, q.name);
    const TensorSpec& in = tensor(q.input);
    const TensorSpec& out = tensor(q.output);
    if (in.channels != out.channels || in.height != out.height || in.width != out.width) fail(kOp, q.name, ": input and output shapes differ");
    checkRequant(q.requant, in.channels, q.name);
    checkRule(q.activation, out, q.name);
  }
  for (const PoolStep& p : spec.pools) {
    checkTensorId(spec, p.input, p.name);
    checkTensorId(spec, p.output, p.name);
    const TensorSpec& in = tensor(p.input);
    const TensorSpec& out = tensor(p.output);
    if (out.type != (p.max ? in.type : IntType::i32)) fail(kOp, p.name, p.max ? ": a maxpool output must have its input's type" : ": a sumpool output must be int32");
    if (out.channels != in.channels || out.height != p.window.outHeight(in.height) || out.width != p.window.outWidth(in.width)) {
      fail(kOp, p.name, ": output shape does not match the pooling window");
    }
  }
  for (const AddStep& a : spec.adds) {
    checkTensorId(spec, a.a.input, a.name);
    checkTensorId(spec, a.b.input, a.name);
    checkTensorId(spec, a.output, a.name);
    const TensorSpec& out = tensor(a.output);
    for (const AddInputSpec* term : {&a.a, &a.b}) {
      const TensorSpec& t = tensor(term->input);
      if (t.channels != out.channels || t.height != out.height || t.width != out.width) fail(kOp, a.name, ": inputs and output shapes differ");
      if (term->shift < 0 || term->shift > 62) fail(kOp, a.name, ": shift ", term->shift, " is outside [0, 62]");
    }
    if (!((a.bits == 8 && out.type == IntType::i8) || (a.bits == 16 && out.type == IntType::i16))) fail(kOp, a.name, ": output type does not match its bits");
  }
}

void IntModel::Impl::allocate() {
  for (const TensorSpec& t : spec.tensors) tensors.emplace_back(static_cast<size_t>(batch * t.size()) * bytesOf(t.type));
  int64_t accElements = 0, split = 0;
  bool multiTerm = false;
  for (const ConvStep& c : spec.convs) {
    accElements = std::max(accElements, tensor(c.output).size());
    weights.push_back(weightPieces(c));
    if (tensor(c.input).type == IntType::i16) split = std::max(split, tensor(c.input).size());
    multiTerm = multiTerm || weights.back().size() > 1 || tensor(c.input).type == IntType::i16;
  }
  acc = Buffer(static_cast<size_t>(batch * accElements) * 4);
  if (multiTerm) term = Buffer(acc.bytes());
  if (split > 0) {
    splitHigh = Buffer(static_cast<size_t>(batch * split));
    splitLow = Buffer(static_cast<size_t>(batch * split));
  }
}

IntModel::IntModel(ModelSpec spec, int64_t batch) : impl_(std::make_unique<Impl>(std::move(spec), batch)) {
  requireExactInt8();
  impl_->check();
  impl_->allocate();
}

IntModel::~IntModel() = default;

int64_t IntModel::imageBytes() const {
  const InputStep& s = impl_->spec.inputs.at(0);
  return impl_->tensor(s.output).size();
}

int64_t IntModel::classes() const { return impl_->tensor(impl_->spec.output).channels; }

// ---- convolutions ----------------------------------------------------------------------------

/** The terms of conv `index` for `images` images: primitives, reordered weights and memories, made once. */
std::vector<Term>& IntModel::Impl::termsFor(size_t index, int64_t images) {
  const auto key = std::make_pair(index, images);
  auto found = terms.find(key);
  if (found != terms.end()) return found->second;
  const ConvStep& c = spec.convs[index];
  const TensorSpec& in = tensor(c.input);
  const TensorSpec& out = tensor(c.output);
  struct Source {
    IntType type;
    void* data;
    int shift;
  };
  // An int16 input runs as two int8 convolutions: x = high * 256 + low.
  const std::vector<Source> sources = in.type == IntType::i16
      ? std::vector<Source>{{IntType::i8, splitHigh.as(), 8}, {IntType::u8, splitLow.as(), 0}}
      : std::vector<Source>{{in.type, data(c.input), 0}};
  const bool direct = sources.size() == 1 && weights[index].size() == 1;
  const Window& w = c.window;
  const memory::dims strides{w.strideH, w.strideW}, pad{w.padH, w.padW};
  const memory::desc dstMd({images, c.outChannels, out.height, out.width}, memory::data_type::s32, memory::format_tag::nhwc);
  // Grouped weights as [groups, out / groups, in / groups, KH, KW]: the same bytes as OIHW.
  const memory::dims weightDims = c.groups == 1 ? memory::dims{c.outChannels, c.inChannels, w.kernelH, w.kernelW}
                                                : memory::dims{c.groups, c.outChannels / c.groups, c.inChannels / c.groups, w.kernelH, w.kernelW};
  const memory::desc plainWeights(weightDims, memory::data_type::s8, c.groups == 1 ? memory::format_tag::oihw : memory::format_tag::goihw);
  const memory::desc anyWeights(weightDims, memory::data_type::s8, memory::format_tag::any);
  std::vector<Term> made;
  for (const Source& s : sources) {
    const memory::desc srcMd({images, c.inChannels, in.height, in.width}, dnnlType(s.type), memory::format_tag::nhwc);
    for (const WeightPiece& piece : weights[index]) {
      auto pd = makeConvPd(srcMd, anyWeights, dstMd, strides, pad);
      dnnl::memory packed(pd.weights_desc(), cpuEngine());
      dnnl::memory plain(plainWeights, cpuEngine(), const_cast<int8_t*>(piece.values.data()));
      dnnl::reorder(plain, packed).execute(cpuStream(), plain, packed);
      cpuStream().wait();
      dnnl::memory src(srcMd, cpuEngine(), s.data);
      dnnl::memory dst(dstMd, cpuEngine(), direct ? acc.as() : term.as());
      made.push_back(Term{pd, dnnl::convolution_forward(pd), src, packed, dst, s.shift + piece.shift});
    }
  }
  return terms.emplace(key, std::move(made)).first->second;
}

void IntModel::Impl::runConv(size_t index, int64_t n) {
  const ConvStep& c = spec.convs[index];
  const TensorSpec& in = tensor(c.input);
  const TensorSpec& out = tensor(c.output);
  std::vector<Term>& ts = termsFor(index, n);
  if (in.type == IntType::i16) splitInt16(reinterpret_cast<const int16_t*>(data(c.input)), n * in.size(), splitHigh.as<int8_t>(), splitLow.as<uint8_t>());
  const int64_t elements = n * out.size();
  if (ts.size() > 1) std::memset(acc.as(), 0, static_cast<size_t>(elements) * 4);
  for (Term& t : ts) {
    execute(t.prim, t.pd, {{DNNL_ARG_SRC, t.src}, {DNNL_ARG_WEIGHTS, t.weights}, {DNNL_ARG_DST, t.dst}});
    if (ts.size() > 1) accumulateShifted(acc.as<int32_t>(), term.as<int32_t>(), elements, t.shift);
  }

  ShortcutAdd shortcut;
  if (c.shortcut) {
    const TensorSpec& sc = tensor(c.shortcut->input);
    shortcut = {data(c.shortcut->input), sc.type, sc.height, sc.width, sc.channels, c.shortcut->stride, c.shortcut->offset,
        c.shortcut->mult, c.shortcut->shift};
  }
  const int64_t pixels = n * out.pixels();
  const int64_t blocks = (pixels + kBlockPixels - 1) / kBlockPixels;
  int32_t* accData = acc.as<int32_t>();
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; b++) {
    const PixelRange r{b * kBlockPixels, std::min(pixels, (b + 1) * kBlockPixels), c.outChannels, out.height, out.width};
    int32_t* v = accData + r.begin * r.channels;
    const int64_t count = (r.end - r.begin) * r.channels;
    if (c.epilogue == EpilogueKind::activation) {
      requantizeActivate(v, r.end - r.begin, r.channels, c.requant, c.activation, data(c.output), out.type, r.begin * r.channels);
      continue;
    }
    if (c.epilogue == EpilogueKind::residual) {
      residual(v, r, c.requant, c.shortcut ? &shortcut : nullptr, c.residualLo, c.residualHi, data(c.output), out.type);
      continue;
    }
    requantize(v, r, c.requant);  // logits
    narrow(v, count, data(c.output), out.type, r.begin * r.channels);
  }
}

// ---- the other ops -------------------------------------------------------------------------------

void IntModel::Impl::runInput(const InputStep& s, const uint8_t* images, int64_t n) {
  const TensorSpec& t = tensor(s.output);
  const int64_t bytes = static_cast<int64_t>(bytesOf(t.type));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) {
    inputTable(images + i * t.size(), t.channels, t.pixels(), s.lut.data(), data(s.output) + i * t.size() * bytes, t.type);
  }
}

void IntModel::Impl::runQuantize(const QuantizeStep& s, int64_t n) {
  const TensorSpec& in = tensor(s.input);
  const TensorSpec& out = tensor(s.output);
  const int64_t pixels = n * in.pixels();
  const int64_t blocks = (pixels + kBlockPixels - 1) / kBlockPixels;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; b++) {
    const PixelRange r{b * kBlockPixels, std::min(pixels, (b + 1) * kBlockPixels), in.channels, in.height, in.width};
    int32_t* v = scratch[static_cast<size_t>(omp_get_thread_num())].as<int32_t>();
    const int64_t count = (r.end - r.begin) * r.channels;
    widen(data(s.input), in.type, r.begin * r.channels, count, v);
    requantizeActivate(v, r.end - r.begin, r.channels, s.requant, s.activation, data(s.output), out.type, r.begin * r.channels);
  }
}

void IntModel::Impl::runPool(const PoolStep& s, int64_t n) {
  const TensorSpec& in = tensor(s.input);
  const TensorSpec& out = tensor(s.output);
  const int64_t inBytes = in.size() * static_cast<int64_t>(bytesOf(in.type)), outBytes = out.size() * static_cast<int64_t>(bytesOf(out.type));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) pool(data(s.input) + i * inBytes, in.type, in.height, in.width, in.channels, s.window, s.max, data(s.output) + i * outBytes, out.type);
}

void IntModel::Impl::runAdd(const AddStep& s, int64_t n) {
  const AddTerm a{data(s.a.input), tensor(s.a.input).type, s.a.mult, s.a.shift}, b{data(s.b.input), tensor(s.b.input).type, s.b.mult, s.b.shift};
  const TensorSpec& out = tensor(s.output);
  const int64_t elements = n * out.size(), block = kBlockPixels * out.channels, blocks = (elements + block - 1) / block;
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < blocks; k++) add(a, b, k * block, std::min(block, elements - k * block), s.lo, s.hi, data(s.output), out.type);
}

void IntModel::Impl::run(const Step& step, const uint8_t* images, int64_t n) {
  switch (step.kind) {
    case Step::Kind::input:
      return runInput(spec.inputs[step.index], images, n);
    case Step::Kind::conv:
      return runConv(step.index, n);
    case Step::Kind::quantize:
      return runQuantize(spec.quantizes[step.index], n);
    case Step::Kind::pool:
      return runPool(spec.pools[step.index], n);
    case Step::Kind::add:
      return runAdd(spec.adds[step.index], n);
  }
}

void IntModel::infer(const uint8_t* images, int64_t count, int32_t* logits) {
  Impl& m = *impl_;
  const int64_t size = imageBytes();
  const int64_t classes = this->classes();
  const size_t blockBytes = static_cast<size_t>(kBlockPixels * m.maxChannels()) * 4;
  while (m.scratch.size() < static_cast<size_t>(omp_get_max_threads())) m.scratch.emplace_back(blockBytes);
  for (int64_t start = 0; start < count; start += m.batch) {
    const int64_t n = std::min(m.batch, count - start);
    // A short batch runs padded with blank images to a power of two, so that at most log2(batch) + 1
    // sets of primitives are ever made, whatever counts the caller passes.
    int64_t padded = 1;
    while (padded < n) padded *= 2;
    padded = std::min(padded, m.batch);
    const uint8_t* chunk = images + start * size;
    if (padded > n) {
      if (!m.staging.as()) m.staging = Buffer(static_cast<size_t>(m.batch * size));
      std::memcpy(m.staging.as(), chunk, static_cast<size_t>(n * size));
      std::memset(m.staging.as<char>() + n * size, 0, static_cast<size_t>((padded - n) * size));
      chunk = m.staging.as<uint8_t>();
    }
    for (const Step& step : m.spec.steps) m.run(step, chunk, padded);
    std::memcpy(logits + start * classes, m.data(m.spec.output), static_cast<size_t>(n * classes) * 4);
  }
}

std::vector<std::string> IntModel::describe() {
  std::vector<std::string> lines;
  for (size_t i = 0; i < impl_->spec.convs.size(); i++) {
    std::string line = impl_->spec.convs[i].name + ":";
    for (const Term& t : impl_->termsFor(i, impl_->batch)) line += std::string(" ") + t.pd.impl_info_str() + (t.shift ? " <<" + std::to_string(t.shift) : "");
    lines.push_back(line);
  }
  return lines;
}

}  // namespace tq::int8

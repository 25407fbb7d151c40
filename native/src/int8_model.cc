#include "int8_model.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
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
 * Whether oneDNN's int8 convolutions are exact here. On x86 without VNNI, its int8 kernels add
 * pairs of u8*s8 products in int16 with saturation (vpmaddubsw); with VNNI (or AMX) the products go
 * straight into int32. Elsewhere (aarch64) the int8 kernels accumulate in int32.
 */
bool int8ConvolutionsExact() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  return __builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni");
#else
  return true;
#endif
}

/**
 * Whether convolutions run as float32 of the same integers: where int8 ones are not exact, or where
 * TINYQUANT_HOST_INT8=float asks for it (so that tests cover this path on every CPU).
 */
bool floatConvolutions() {
  const char* forced = std::getenv("TINYQUANT_HOST_INT8");
  return !int8ConvolutionsExact() || (forced != nullptr && std::strcmp(forced, "float") == 0);
}

/**
 * Where int8 convolutions are not exact, each term runs as a float32 direct convolution of the
 * same integers instead: every partial sum is an integer no larger in magnitude than the term's
 * bound, so while the bound stays below 2^24 every sum is exact in float32, in any order (direct
 * convolution only: Winograd's transforms are not integer).
 */
constexpr double kFloatExactBound = 16777216.0;  // 2^24

/** Integer weights as signed 8-bit pieces: w = sum of piece * 2^shift (one piece when they fit int8). */
struct WeightPiece {
  std::vector<int8_t> values;
  int shift;
};

/**
 * The weights of `conv` as pieces: low parts of `bits` bits (0 .. 2^bits - 1, at shifts 0, bits,
 * 2 bits, ...) up to a signed top part of `bits` + 1 bits; one piece when the weights fit that.
 */
std::vector<WeightPiece> weightPieces(const ConvStep& conv, int bits) {
  const int32_t top = 1 << bits, mask = top - 1;
  std::vector<WeightPiece> pieces;
  std::vector<int32_t> rest(conv.weights.begin(), conv.weights.end());
  for (int shift = 0;; shift += bits) {
    const auto [lo, hi] = std::minmax_element(rest.begin(), rest.end());
    WeightPiece piece{std::vector<int8_t>(rest.size()), shift};
    if (*lo >= -top && *hi < top) {
      std::copy(rest.begin(), rest.end(), piece.values.begin());
      pieces.push_back(std::move(piece));
      return pieces;
    }
    for (size_t i = 0; i < rest.size(); i++) {
      piece.values[i] = static_cast<int8_t>(rest[i] & mask);
      rest[i] >>= bits;  // arithmetic: rest = high * 2^bits + low
    }
    pieces.push_back(std::move(piece));
  }
}

/** One oneDNN convolution of a source piece with a weight piece, its result weighted by 2^shift. */
struct Term {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  dnnl::memory src, weights, dst;
  int shift;
  /** In float mode (int8ConvolutionsExact() false): the integers the float source is made from. */
  const void* source;
  IntType sourceType;
};

/** The largest |value| of an 8-bit source type. */
double sourceMagnitude(IntType t) { return t == IntType::u8 ? 255.0 : 128.0; }

/** The largest sum of |w| over one output channel's weights: the accumulator bound per unit of input. */
double weightBound(const WeightPiece& piece, int64_t outChannels) {
  const size_t per = piece.values.size() / static_cast<size_t>(outChannels);
  double most = 0;
  for (size_t o = 0; o < static_cast<size_t>(outChannels); o++) {
    double sum = 0;
    for (size_t k = o * per; k < (o + 1) * per; k++) sum += std::abs(static_cast<double>(piece.values[k]));
    most = std::max(most, sum);
  }
  return most;
}

/** The largest accumulator a float term of `piece` can reach on inputs of `source` magnitude. */
double termBound(const WeightPiece& piece, int64_t outChannels, double source) { return source * weightBound(piece, outChannels); }

/**
 * The weight pieces of a float-mode conv: the fewest whose terms stay float-exact on inputs of
 * magnitude `source` (narrower low parts lower the bound), or none when even 1-bit parts do not.
 */
std::vector<WeightPiece> floatExactPieces(const ConvStep& conv, double source) {
  for (int bits : {7, 4, 2, 1}) {
    std::vector<WeightPiece> pieces = weightPieces(conv, bits);
    const bool exact = std::all_of(pieces.begin(), pieces.end(), [&](const WeightPiece& p) { return termBound(p, conv.outChannels, source) < kFloatExactBound; });
    if (exact) return pieces;
  }
  return {};
}

/** 8-bit integers as floats. */
void toFloat(const void* x, IntType t, int64_t n, float* out) {
  if (t == IntType::u8) {
    const auto* v = static_cast<const uint8_t*>(x);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = static_cast<float>(v[i]);
  } else {
    const auto* v = static_cast<const int8_t*>(x);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = static_cast<float>(v[i]);
  }
}

/** Float sums known to be exact integers, as int32. */
void floatSumsToInt(const float* x, int64_t n, int32_t* out) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) out[i] = static_cast<int32_t>(x[i]);
}

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
  /** Convolutions as float32 of the same integers (see kFloatExactBound), with their buffers. */
  bool floatTerms = floatConvolutions();
  Buffer floatSrc, floatDst, floatWeights;

  Impl(ModelSpec s, int64_t b) : spec(std::move(s)), batch(b) {}

  const TensorSpec& tensor(int64_t id) const { return spec.tensors[static_cast<size_t>(id)]; }
  char* data(int64_t id) const { return tensors[static_cast<size_t>(id)].as<char>(); }
  int64_t maxChannels() const {
    int64_t c = 1;
    for (const TensorSpec& t : spec.tensors) c = std::max(c, t.channels);
    return c;
  }

  void check() const;
  std::vector<WeightPiece> piecesFor(const ConvStep& c) const;
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
    weights.push_back(piecesFor(c));
    if (tensor(c.input).type == IntType::i16) split = std::max(split, tensor(c.input).size());
    multiTerm = multiTerm || weights.back().size() > 1 || tensor(c.input).type == IntType::i16;
  }
  acc = Buffer(static_cast<size_t>(batch * accElements) * 4);
  if (multiTerm) term = Buffer(acc.bytes());
  if (floatTerms) {
    int64_t inElements = 0;
    for (const ConvStep& c : spec.convs) inElements = std::max(inElements, tensor(c.input).size());
    floatSrc = Buffer(static_cast<size_t>(batch * inElements) * 4);
    floatDst = Buffer(acc.bytes());
  }
  if (split > 0) {
    splitHigh = Buffer(static_cast<size_t>(batch * split));
    splitLow = Buffer(static_cast<size_t>(batch * split));
  }
}

/** The weight pieces of conv `c`; in float mode the fewest that stay exact, else an error naming the layer. */
std::vector<WeightPiece> IntModel::Impl::piecesFor(const ConvStep& c) const {
  if (!floatTerms) return weightPieces(c, 7);
  const IntType in = tensor(c.input).type;
  // An int16 input runs as an int8 high part and a uint8 low part (termsFor).
  std::vector<WeightPiece> pieces = floatExactPieces(c, in == IntType::i16 ? 255.0 : sourceMagnitude(in));
  if (pieces.empty()) {
    fail(kOp, c.name, ": this CPU has no VNNI instructions, so convolutions run in float32, exact only while every sum stays below 2^24, "
        "which this layer's sums can pass even with its weights split into bits (use the TypeScript integer engine)");
  }
  return pieces;
}

IntModel::IntModel(ModelSpec spec, int64_t batch) : impl_(std::make_unique<Impl>(std::move(spec), batch)) {
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
  // Grouped weights as [groups, out / groups, in / groups, KH, KW]: the same bytes as OIHW.
  const memory::dims weightDims = c.groups == 1 ? memory::dims{c.outChannels, c.inChannels, w.kernelH, w.kernelW}
                                                : memory::dims{c.groups, c.outChannels / c.groups, c.inChannels / c.groups, w.kernelH, w.kernelW};
  const memory::data_type weightType = floatTerms ? memory::data_type::f32 : memory::data_type::s8;
  const memory::desc plainWeights(weightDims, weightType, c.groups == 1 ? memory::format_tag::oihw : memory::format_tag::goihw);
  const memory::desc anyWeights(weightDims, weightType, memory::format_tag::any);
  const memory::data_type accType = floatTerms ? memory::data_type::f32 : memory::data_type::s32;
  const memory::desc dstMd({images, c.outChannels, out.height, out.width}, accType, memory::format_tag::nhwc);
  void* dstData = floatTerms ? floatDst.as() : direct ? acc.as() : term.as();
  std::vector<Term> made;
  for (const Source& s : sources) {
    const memory::data_type srcType = floatTerms ? memory::data_type::f32 : dnnlType(s.type);
    const memory::desc srcMd({images, c.inChannels, in.height, in.width}, srcType, memory::format_tag::nhwc);
    for (const WeightPiece& piece : weights[index]) {
      auto pd = makeConvPd(srcMd, anyWeights, dstMd, strides, pad);
      dnnl::memory packed(pd.weights_desc(), cpuEngine());
      std::vector<float> floatWeights;
      if (floatTerms) floatWeights.assign(piece.values.begin(), piece.values.end());
      void* plainData = floatTerms ? static_cast<void*>(floatWeights.data()) : const_cast<int8_t*>(piece.values.data());
      dnnl::memory plain(plainWeights, cpuEngine(), plainData);
      dnnl::reorder(plain, packed).execute(cpuStream(), plain, packed);
      cpuStream().wait();
      dnnl::memory src(srcMd, cpuEngine(), floatTerms ? floatSrc.as() : s.data);
      dnnl::memory dst(dstMd, cpuEngine(), dstData);
      made.push_back(Term{pd, dnnl::convolution_forward(pd), src, packed, dst, s.shift + piece.shift, s.data, s.type});
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
  const void* converted = nullptr;
  for (Term& t : ts) {
    if (floatTerms && t.source != converted) {
      toFloat(t.source, t.sourceType, n * in.size(), floatSrc.as<float>());
      converted = t.source;
    }
    execute(t.prim, t.pd, {{DNNL_ARG_SRC, t.src}, {DNNL_ARG_WEIGHTS, t.weights}, {DNNL_ARG_DST, t.dst}});
    if (floatTerms) floatSumsToInt(floatDst.as<float>(), elements, ts.size() > 1 ? term.as<int32_t>() : acc.as<int32_t>());
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

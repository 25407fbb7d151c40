// Reads the plain-data model spec that src/export/host/native-spec.ts builds, and exposes
// IntModel to JavaScript. Errors name the op and the field.
#include "int8_binding.hpp"

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "binding.hpp"
#include "int8_model.hpp"
#include "int8_simulate.hpp"
#include "layout.hpp"
#include "runtime.hpp"

namespace tq::binding {
namespace {

using namespace tq::int8;

std::mutex* sharedMutex = nullptr;

/** Typed fields of one JavaScript object; every error names `where` and the field. */
class Fields {
 public:
  Fields(const Napi::Value& value, std::string where) : where_(std::move(where)) {
    if (!value.IsObject()) throw OpError("IntModel: " + where_ + " must be an object");
    obj_ = value.As<Napi::Object>();
  }

  int64_t integer(const char* key, int64_t lo = INT32_MIN, int64_t hi = INT32_MAX) const {
    const Napi::Value v = obj_.Get(key);
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi) && d == static_cast<double>(static_cast<int64_t>(d)))) {
      bad(key, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    return static_cast<int64_t>(d);
  }

  bool flag(const char* key) const {
    const Napi::Value v = obj_.Get(key);
    if (!v.IsBoolean()) bad(key, "a boolean");
    return v.As<Napi::Boolean>().Value();
  }

  std::string text(const char* key) const {
    const Napi::Value v = obj_.Get(key);
    if (!v.IsString()) bad(key, "a string");
    return v.As<Napi::String>().Utf8Value();
  }

  bool has(const char* key) const {
    const Napi::Value v = obj_.Get(key);
    return !v.IsNull() && !v.IsUndefined();
  }

  /** A [height, width] pair of integers in [lo, hi]. */
  std::pair<int64_t, int64_t> pair(const char* key, int64_t lo, int64_t hi) const {
    const Napi::Value v = obj_.Get(key);
    const auto item = [&](uint32_t i) {
      const Napi::Value e = v.As<Napi::Array>().Get(i);
      const double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : NAN;
      if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi) && d == std::floor(d))) bad(key, "a pair of integers in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
      return static_cast<int64_t>(d);
    };
    if (!v.IsArray() || v.As<Napi::Array>().Length() != 2) bad(key, "a [height, width] pair");
    return {item(0), item(1)};
  }

  Fields object(const char* key) const { return Fields(obj_.Get(key), where_ + "." + key); }

  template <class T, napi_typedarray_type Kind>
  std::vector<T> array(const char* key) const {
    const Napi::Value v = obj_.Get(key);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != Kind) bad(key, Kind == napi_int16_array ? "an Int16Array" : "an Int32Array");
    const auto a = v.As<Napi::TypedArrayOf<T>>();
    return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
  }
  std::vector<int32_t> int32s(const char* key) const { return array<int32_t, napi_int32_array>(key); }

  Napi::Array list(const char* key) const {
    const Napi::Value v = obj_.Get(key);
    if (!v.IsArray()) bad(key, "an array");
    return v.As<Napi::Array>();
  }

 private:
  [[noreturn]] void bad(const char* key, const std::string& expected) const {
    throw OpError("IntModel: " + where_ + "." + key + " must be " + expected);
  }
  Napi::Object obj_;
  std::string where_;
};

ActivationRule readRule(const Fields& f) {
  ActivationRule r;
  r.relu = f.flag("relu");
  r.zeroPoint = static_cast<int32_t>(f.integer("zeroPoint"));
  r.useThresholds = f.has("thresholds");
  if (r.useThresholds) {
    r.thresholds = f.int32s("thresholds");
    r.values = f.int32s("values");
    for (int32_t v : r.values) {
      if (v < -128 || v > 255) throw OpError("IntModel: activation values must be 8-bit integers");
    }
  } else {
    r.fracBits = static_cast<int32_t>(f.integer("fracBits", 0, 30));
    r.minCode = static_cast<int32_t>(f.integer("minCode", -128, 255));
    r.maxCode = static_cast<int32_t>(f.integer("maxCode", -128, 255));
  }
  return r;
}

Requant readRequant(const Fields& f) { return Requant(f.int32s("mult"), f.int32s("shift"), f.int32s("bias")); }

/** kernel, stride and padding of a conv or pooling op. */
Window readWindow(const Fields& f) {
  Window w;
  std::tie(w.kernelH, w.kernelW) = f.pair("kernel", 1, 1 << 16);
  std::tie(w.strideH, w.strideW) = f.pair("stride", 1, 1 << 16);
  std::tie(w.padH, w.padW) = f.pair("padding", 0, 1 << 16);
  return w;
}

AddInputSpec readAddInput(const Fields& f) {
  return {f.integer("input"), static_cast<int32_t>(f.integer("mult")), static_cast<int32_t>(f.integer("shift", 0, 62))};
}

ConvStep readConv(const Fields& f) {
  ConvStep c;
  c.name = f.text("name");
  c.input = f.integer("input");
  c.output = f.integer("output");
  c.inChannels = f.integer("inChannels", 1);
  c.outChannels = f.integer("outChannels", 1);
  c.groups = f.integer("groups", 1);
  c.window = readWindow(f);
  c.weights = f.int32s("weights");
  c.requant = readRequant(f);
  const std::string epilogue = f.text("epilogue");
  if (epilogue == "activation") {
    c.epilogue = EpilogueKind::activation;
    c.activation = readRule(f.object("activation"));
  } else if (epilogue == "residual") {
    c.epilogue = EpilogueKind::residual;
    c.residualBits = static_cast<int>(f.integer("residualBits", 8, 16));
    c.residualLo = static_cast<int32_t>(f.integer("residualLo"));
    c.residualHi = static_cast<int32_t>(f.integer("residualHi"));
    if (f.has("shortcut")) {
      const Fields s = f.object("shortcut");
      c.shortcut = ShortcutSpec{s.integer("input"), s.integer("stride", 1), s.integer("channelOffset", 0), static_cast<int32_t>(s.integer("mult")),
          static_cast<int32_t>(s.integer("shift", 0, 62))};
    }
  } else if (epilogue == "logits") {
    c.epilogue = EpilogueKind::logits;
  } else {
    throw OpError("IntModel: " + c.name + ": unknown epilogue \"" + epilogue + "\"");
  }
  return c;
}

ModelSpec readSpec(const Napi::Value& value) {
  const Fields root(value, "spec");
  ModelSpec spec;
  const std::vector<int32_t> tensors = root.int32s("tensors");
  if (tensors.size() % 4 != 0) throw OpError("IntModel: spec.tensors must hold [type, channels, height, width] per tensor");
  for (size_t i = 0; i < tensors.size(); i += 4) {
    if (tensors[i] < 0 || tensors[i] > 3 || tensors[i + 1] < 1 || tensors[i + 2] < 1 || tensors[i + 3] < 1) {
      throw OpError("IntModel: spec.tensors entry " + std::to_string(i / 4) + " is not a valid type and shape");
    }
    spec.tensors.push_back({static_cast<IntType>(tensors[i]), tensors[i + 1], tensors[i + 2], tensors[i + 3]});
  }
  spec.output = root.integer("output");
  const Napi::Array ops = root.list("ops");
  for (uint32_t i = 0; i < ops.Length(); i++) {
    const Fields f(ops.Get(i), "spec.ops[" + std::to_string(i) + "]");
    const std::string kind = f.text("kind");
    if (kind == "input") {
      spec.steps.push_back({Step::Kind::input, spec.inputs.size()});
      spec.inputs.push_back({f.integer("output"), f.array<int16_t, napi_int16_array>("lut")});
    } else if (kind == "conv") {
      spec.steps.push_back({Step::Kind::conv, spec.convs.size()});
      spec.convs.push_back(readConv(f));
    } else if (kind == "quantize") {
      spec.steps.push_back({Step::Kind::quantize, spec.quantizes.size()});
      spec.quantizes.push_back({f.text("name"), f.integer("input"), f.integer("output"), readRequant(f), readRule(f.object("activation"))});
    } else if (kind == "sumpool" || kind == "maxpool") {
      spec.steps.push_back({Step::Kind::pool, spec.pools.size()});
      spec.pools.push_back({f.text("name"), f.integer("input"), f.integer("output"), kind == "maxpool", readWindow(f)});
    } else if (kind == "add") {
      spec.steps.push_back({Step::Kind::add, spec.adds.size()});
      spec.adds.push_back({f.text("name"), readAddInput(f.object("a")), readAddInput(f.object("b")), f.integer("output"), static_cast<int>(f.integer("bits", 8, 16)),
          static_cast<int32_t>(f.integer("lo")), static_cast<int32_t>(f.integer("hi"))});
    } else {
      throw OpError("IntModel: spec.ops[" + std::to_string(i) + "].kind \"" + kind + "\" is not input, conv, quantize, sumpool, maxpool or add");
    }
  }
  return spec;
}

class IntModelObject : public Napi::ObjectWrap<IntModelObject> {
 public:
  /** new IntModel(spec, threads, batch) */
  explicit IntModelObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<IntModelObject>(info) {
    guarded(info, [&] {
      if (info.Length() != 3) throw OpError("IntModel: expected (spec, threads, batch)");
      const int64_t threads = Napi::Value(info[1]).IsNumber() ? info[1].As<Napi::Number>().Int64Value() : -1;
      const int64_t batch = Napi::Value(info[2]).IsNumber() ? info[2].As<Napi::Number>().Int64Value() : -1;
      if (threads < 0 || threads > 4096) throw OpError("IntModel: threads must be an integer in [0, 4096] (0: all cores)");
      threads_ = threads > 0 ? static_cast<int>(threads) : defaultThreads();
      useThreads(threads_);
      ModelSpec spec = readSpec(info[0]);
      model_ = std::make_unique<IntModel>(std::move(spec), batch);
      return info.Env().Undefined();
    });
  }

  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "IntModel",
        {InstanceMethod<&IntModelObject::infer>("infer"), InstanceMethod<&IntModelObject::describe>("describe"),
            InstanceAccessor<&IntModelObject::threads>("threads")});
  }

 private:
  /** Run `body` under the addon's op lock with this model's thread count; C++ errors become JavaScript errors. */
  template <class Body>
  Napi::Value guarded(const Napi::CallbackInfo& info, Body body) {
    try {
      const std::lock_guard<std::mutex> lock(*sharedMutex);
      if (threads_ > 0) useThreads(threads_);
      return body();
    } catch (...) {
      throwAsJsError(info.Env(), "IntModel");
    }
  }

  /** infer(images: Uint8Array, count) -> Int32Array of count x classes logits. */
  Napi::Value infer(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      if (info.Length() != 2 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array || !info[1].IsNumber()) {
        throw OpError("IntModel.infer: expected (images: Uint8Array, count: number)");
      }
      const auto images = info[0].As<Napi::Uint8Array>();
      const int64_t count = info[1].As<Napi::Number>().Int64Value();
      if (count < 0 || static_cast<int64_t>(images.ElementLength()) != count * model_->imageBytes()) {
        throw OpError("IntModel.infer: " + std::to_string(count) + " images need " + std::to_string(count * model_->imageBytes()) +
            " bytes, got " + std::to_string(images.ElementLength()));
      }
      Napi::Int32Array logits = Napi::Int32Array::New(info.Env(), static_cast<size_t>(count * model_->classes()));
      model_->infer(images.Data(), count, logits.Data());
      return logits;
    });
  }

  Napi::Value describe(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      const std::vector<std::string> lines = model_->describe();
      Napi::Array arr = Napi::Array::New(info.Env(), lines.size());
      for (uint32_t i = 0; i < lines.size(); i++) arr.Set(i, lines[i]);
      return arr;
    });
  }

  Napi::Value threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), threads_); }

  int threads_ = 0;
  std::unique_ptr<IntModel> model_;
};

/** A typed array argument of the expected kind, else an error naming the method and argument. */
template <class T, napi_typedarray_type Kind>
Napi::TypedArrayOf<T> typedArg(const Napi::CallbackInfo& info, size_t i, const char* where, const char* expected) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != Kind) throw OpError(std::string(where) + ": argument " + std::to_string(i) + " must be " + expected);
  return info[i].As<Napi::TypedArrayOf<T>>();
}

double numberArg(const Napi::CallbackInfo& info, size_t i, const char* where) {
  if (!info[i].IsNumber()) throw OpError(std::string(where) + ": argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

/** The images of tensor `t` in `data` (NCHW), whole images or an error naming `where`. */
FloatImages imagesOf(float* data, int64_t length, const TensorSpec& t, const std::string& where) {
  if (length % t.size() != 0) throw OpError(where + ": " + std::to_string(length) + " values are not whole images of " + std::to_string(t.size()));
  return {data, length / t.size(), t.channels, t.height, t.width};
}

/**
 * The images of tensor `t` in a native buffer, read in its own layout: plain, or channel-blocked
 * with the tensor's channels in dimension 1. Any other layout (a flattened map in blocks) is read
 * from a plain copy made in `copy`.
 */
FloatImages bufferImages(const Tensor& x, const TensorSpec& t, const std::string& where, std::optional<Tensor>& copy) {
  const Shape& s = x.shape();
  FloatImages v = imagesOf(x.data(), x.numel(), t, where);
  if (isPlain(x.desc())) return v;
  const bool channelsInDim1 = s.size() == 4 ? s[1] == t.channels && s[2] == t.height && s[3] == t.width : s.size() == 2 && s[1] == t.channels;
  const int block = channelBlock(x.desc());
  if (block > 1 && channelsInDim1) {
    v.block = block;
    v.paddedChannels = x.physicalSize() / (v.images * t.pixels());
    return v;
  }
  copy.emplace(reordered(x, plainDesc(s)));
  return imagesOf(copy->data(), x.numel(), t, where);
}

/**
 * The exact evaluation of a simulated deployment (int8_simulate.hpp) for the ops of one lowered
 * model, looked up by name: `new IntSimulation(spec)`, then conv(...) and quantize(...) on NCHW
 * Float32Arrays, or convBuffer(...) and quantizeBuffer(...) on the native backend's own buffers
 * (no copy out of its layout and back).
 */
class IntSimulationObject : public Napi::ObjectWrap<IntSimulationObject> {
 public:
  explicit IntSimulationObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<IntSimulationObject>(info) {
    guarded(info, [&] {
      if (info.Length() != 1) throw OpError("IntSimulation: expected (spec)");
      spec_ = readSpec(info[0]);
      return info.Env().Undefined();
    });
  }

  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "IntSimulation",
        {InstanceMethod<&IntSimulationObject::conv>("conv"), InstanceMethod<&IntSimulationObject::quantize>("quantize"),
            InstanceMethod<&IntSimulationObject::convBuffer>("convBuffer"), InstanceMethod<&IntSimulationObject::quantizeBuffer>("quantizeBuffer")});
  }

 private:
  template <class Body>
  static Napi::Value guarded(const Napi::CallbackInfo& info, Body body) {
    try {
      const std::lock_guard<std::mutex> lock(*sharedMutex);
      return body();
    } catch (...) {
      throwAsJsError(info.Env(), "IntSimulation");
    }
  }

  template <class Step>
  static const Step& byName(const std::vector<Step>& steps, const std::string& name, const char* where) {
    for (const Step& s : steps) {
      if (s.name == name) return s;
    }
    throw OpError(std::string(where) + ": the lowered model has no such op \"" + name + "\"");
  }

  const TensorSpec& tensor(int64_t id) const { return spec_.tensors.at(static_cast<size_t>(id)); }

  /** The conv op named by argument 0 and its per-channel M and B (arguments 2 and 3). */
  std::tuple<const ConvStep&, Napi::Float64Array, Napi::Float64Array> convArgs(const Napi::CallbackInfo& info, const char* where) const {
    if (info.Length() != 7 || !info[0].IsString()) throw OpError(std::string(where) + ": expected (name, conv, M, B, unit, shortcut, shortcutScale)");
    const ConvStep& op = byName(spec_.convs, info[0].As<Napi::String>().Utf8Value(), where);
    const auto M = typedArg<double, napi_float64_array>(info, 2, where, "a Float64Array");
    const auto B = typedArg<double, napi_float64_array>(info, 3, where, "a Float64Array");
    const int64_t channels = tensor(op.output).channels;
    if (static_cast<int64_t>(M.ElementLength()) != channels || static_cast<int64_t>(B.ElementLength()) != channels) throw OpError(op.name + ": M and B need one entry per output channel");
    return {op, M, B};
  }

  static void requireShortcut(const ConvStep& op, const FloatImages& conv, const FloatImages& shortcut) {
    if (!op.shortcut || shortcut.images != conv.images) throw OpError(op.name + ": the shortcut values do not match the op");
  }

  /** conv(name, conv: Float32Array, M: Float64Array, B: Float64Array, unit, shortcut: Float32Array | null, shortcutScale) -> Float32Array */
  Napi::Value conv(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      constexpr const char* where = "IntSimulation.conv";
      const auto [op, M, B] = convArgs(info, where);
      auto conv = typedArg<float, napi_float32_array>(info, 1, where, "a Float32Array");
      const TensorSpec& t = tensor(op.output);
      const FloatImages in = imagesOf(conv.Data(), static_cast<int64_t>(conv.ElementLength()), t, op.name);
      std::optional<FloatImages> shortcut;
      if (!info[5].IsNull()) {
        auto sc = typedArg<float, napi_float32_array>(info, 5, where, "a Float32Array or null");
        shortcut = imagesOf(sc.Data(), static_cast<int64_t>(sc.ElementLength()), t, op.name);
        requireShortcut(op, in, *shortcut);
      }
      Napi::Float32Array out = Napi::Float32Array::New(info.Env(), conv.ElementLength());
      const FloatImages outImages = imagesOf(out.Data(), static_cast<int64_t>(out.ElementLength()), t, op.name);
      simulateConv(op, in, M.Data(), B.Data(), shortcut ? &*shortcut : nullptr, numberArg(info, 6, where), numberArg(info, 4, where), outImages, scratch_);
      return out;
    });
  }

  /**
   * convBuffer(name, conv: NativeBuffer, M, B, unit, shortcut: NativeBuffer | null, shortcutScale) -> conv:
   * conv's values replaced in place, in its own layout, by the op's stored values (real units).
   */
  Napi::Value convBuffer(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      constexpr const char* where = "IntSimulation.convBuffer";
      const auto [op, M, B] = convArgs(info, where);
      const Args a(info, where, 7);
      const Tensor& conv = a.tensor(1, "conv");
      const TensorSpec& t = tensor(op.output);
      std::optional<Tensor> convCopy, shortcutCopy;
      const FloatImages values = bufferImages(conv, t, op.name, convCopy);
      std::optional<FloatImages> shortcut;
      if (const Tensor* sc = a.optionalTensor(5, "shortcut")) {
        shortcut = bufferImages(*sc, t, op.name, shortcutCopy);
        requireShortcut(op, values, *shortcut);
      }
      simulateConv(op, values, M.Data(), B.Data(), shortcut ? &*shortcut : nullptr, a.number(6, "shortcutScale"), a.number(4, "unit"), values, scratch_);
      if (convCopy) reorder(convCopy->mem(), conv.mem());
      return info[1];
    });
  }

  /** quantize(name, x: Float32Array, step, unit) -> Float32Array */
  Napi::Value quantize(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      constexpr const char* where = "IntSimulation.quantize";
      if (info.Length() != 4 || !info[0].IsString()) throw OpError(std::string(where) + ": expected (name, x, step, unit)");
      const QuantizeStep& op = byName(spec_.quantizes, info[0].As<Napi::String>().Utf8Value(), where);
      auto x = typedArg<float, napi_float32_array>(info, 1, where, "a Float32Array");
      Napi::Float32Array out = Napi::Float32Array::New(info.Env(), x.ElementLength());
      const TensorSpec& t = tensor(op.input);
      const auto n = static_cast<int64_t>(x.ElementLength());
      simulateQuantize(op, imagesOf(x.Data(), n, t, op.name), numberArg(info, 2, where), numberArg(info, 3, where), imagesOf(out.Data(), n, t, op.name), scratch_);
      return out;
    });
  }

  /** quantizeBuffer(name, x: NativeBuffer, step, unit) -> NativeBuffer: the codes, a new buffer in x's layout. */
  Napi::Value quantizeBuffer(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      constexpr const char* where = "IntSimulation.quantizeBuffer";
      const Args a(info, where, 4);
      if (!info[0].IsString()) throw OpError(std::string(where) + ": expected (name, x, step, unit)");
      const QuantizeStep& op = byName(spec_.quantizes, info[0].As<Napi::String>().Utf8Value(), where);
      const Tensor& x = a.tensor(1, "x");
      const TensorSpec& t = tensor(op.input);
      std::optional<Tensor> copy;
      const FloatImages in = bufferImages(x, t, op.name, copy);
      Tensor y(x.shape(), copy ? copy->desc() : x.desc());
      FloatImages out = in;
      out.data = y.data();
      simulateQuantize(op, in, a.number(2, "step"), a.number(3, "unit"), out, scratch_);
      return TensorHandle::create(info.Env(), std::move(y));
    });
  }

  ModelSpec spec_;
  std::vector<SimulationScratch> scratch_;
};

}  // namespace

Napi::Function defineIntModel(Napi::Env env, std::mutex& opMutex) {
  sharedMutex = &opMutex;
  return IntModelObject::define(env);
}

Napi::Function defineIntSimulation(Napi::Env env, std::mutex& opMutex) {
  sharedMutex = &opMutex;
  return IntSimulationObject::define(env);
}

}  // namespace tq::binding

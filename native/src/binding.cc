#include "binding.hpp"

#include <cmath>

namespace tq::binding {

// Random 128-bit tags identifying the addon's objects.
const napi_type_tag TensorHandle::kTag = {0x6f1c2d7a9e4b4c15ull, 0xa3d8e2b17c5f6091ull};
const napi_type_tag StateHandle::kTag = {0x2b7e151628aed2a6ull, 0xabf7158809cf4f3cull};

void TensorHandle::describe(Napi::Object self) {
  const Shape& shape = payload()->shape();
  Napi::Array arr = Napi::Array::New(self.Env(), shape.size());
  for (uint32_t i = 0; i < shape.size(); i++) arr.Set(i, Napi::Number::New(self.Env(), static_cast<double>(shape[i])));
  arr.Freeze();
  self.DefineProperty(Napi::PropertyDescriptor::Value("shape", arr, napi_enumerable));
}

namespace {

std::string describeValue(const Napi::Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsUndefined()) return "undefined";
  if (v.IsNumber()) return "number " + v.ToString().Utf8Value();
  if (v.IsBoolean()) return "boolean";
  if (v.IsString()) return "string";
  if (v.IsArray()) return "array";
  if (v.IsTypedArray()) return "typed array";
  if (v.IsFunction()) return "function";
  return "object";
}

}  // namespace

Args::Args(const Napi::CallbackInfo& info, const char* op, size_t count) : info_(info), op_(op) {
  if (info.Length() != count) {
    throw Napi::TypeError::New(info.Env(), std::string(op) + ": expected " + std::to_string(count) + " arguments, got " +
        std::to_string(info.Length()));
  }
}

void Args::typeError(const char* name, const std::string& expected, const Napi::Value& got) const {
  throw Napi::TypeError::New(env(), std::string(op_) + ": " + name + " must be " + expected + ", got " + describeValue(got));
}

TensorHandle& Args::tensorHandle(size_t i, const char* name) const {
  TensorHandle* h = TensorHandle::from(info_[i]);
  if (!h) typeError(name, "a native-backend buffer", info_[i]);
  return *h;
}

Tensor& Args::tensor(size_t i, const char* name) const {
  Tensor* t = tensorHandle(i, name).payload();
  if (!t) throw Napi::Error::New(env(), std::string(op_) + ": " + name + " was used after it was freed");
  return *t;
}

Tensor* Args::optionalTensor(size_t i, const char* name) const {
  if (info_[i].IsNull() || info_[i].IsUndefined()) return nullptr;
  return &tensor(i, name);
}

StateHandle& Args::stateHandle(size_t i, const char* name) const {
  StateHandle* h = StateHandle::from(info_[i]);
  if (!h) typeError(name, "a native-backend batch-norm state", info_[i]);
  return *h;
}

double Args::number(size_t i, const char* name) const {
  if (!info_[i].IsNumber()) typeError(name, "a number", info_[i]);
  const double v = info_[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v)) typeError(name, "a finite number", info_[i]);
  return v;
}

int64_t Args::integer(size_t i, const char* name) const {
  const double v = number(i, name);
  constexpr double kSafe = 9007199254740991.0;
  if (v != std::floor(v) || std::fabs(v) > kSafe) typeError(name, "an integer", info_[i]);
  return static_cast<int64_t>(v);
}

bool Args::boolean(size_t i, const char* name) const {
  if (!info_[i].IsBoolean()) typeError(name, "a boolean", info_[i]);
  return info_[i].As<Napi::Boolean>().Value();
}

Shape Args::shape(size_t i, const char* name) const {
  if (!info_[i].IsArray()) typeError(name, "an array of dimensions", info_[i]);
  const Napi::Array arr = info_[i].As<Napi::Array>();
  Shape s(arr.Length());
  constexpr double kMaxDim = 2147483647.0;
  for (uint32_t k = 0; k < arr.Length(); k++) {
    const Napi::Value d = arr.Get(k);
    const double v = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1.0;
    if (!(v >= 0 && v <= kMaxDim && v == std::floor(v))) typeError(name, "an array of non-negative integers", info_[i]);
    s[k] = static_cast<int64_t>(v);
  }
  return s;
}

Napi::Float32Array Args::float32Array(size_t i, const char* name) const {
  if (!info_[i].IsTypedArray() || info_[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    typeError(name, "a Float32Array", info_[i]);
  }
  return info_[i].As<Napi::Float32Array>();
}

Napi::Int32Array Args::int32Array(size_t i, const char* name) const {
  if (!info_[i].IsTypedArray() || info_[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    typeError(name, "an Int32Array", info_[i]);
  }
  return info_[i].As<Napi::Int32Array>();
}

kernels::QuantSpec Args::quantSpec(size_t i, const char* name) const {
  if (!info_[i].IsObject()) typeError(name, "a QuantSpec object", info_[i]);
  const Napi::Object o = info_[i].As<Napi::Object>();
  const std::string prefix = std::string(name) + ".";
  auto field = [&](const char* key) { return o.Get(key); };
  auto fieldError = [&](const char* key, const char* expected) {
    typeError((prefix + key).c_str(), expected, field(key));
  };
  auto num = [&](const char* key) {
    const Napi::Value v = field(key);
    if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) fieldError(key, "a finite number");
    return v.As<Napi::Number>().DoubleValue();
  };
  // The clipping bounds may be infinite (no clipping on that side).
  auto bound = [&](const char* key) {
    const Napi::Value v = field(key);
    if (!v.IsNumber() || std::isnan(v.As<Napi::Number>().DoubleValue())) fieldError(key, "a number");
    return v.As<Napi::Number>().DoubleValue();
  };
  auto flag = [&](const char* key) {
    const Napi::Value v = field(key);
    if (!v.IsBoolean()) fieldError(key, "a boolean");
    return v.As<Napi::Boolean>().Value();
  };
  auto floats = [&](const char* key) {
    const Napi::Value v = field(key);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) fieldError(key, "a Float32Array");
    const Napi::Float32Array a = v.As<Napi::Float32Array>();
    return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
  };
  kernels::QuantSpec spec;
  const double channels = num("channels");
  if (channels < 1 || channels != std::floor(channels) || channels > 2147483647.0) fieldError("channels", "a positive integer");
  spec.channels = static_cast<int64_t>(channels);
  spec.scale = floats("scale");
  spec.offset = floats("offset");
  spec.outScale = floats("outScale");
  spec.outOffset = floats("outOffset");
  spec.lo = bound("lo");
  spec.hi = bound("hi");
  spec.symmetric = flag("symmetric");
  if (!field("levels").IsNull()) spec.levels = floats("levels");
  spec.steps = num("steps");
  spec.loInclusive = flag("loInclusive");
  spec.hiInclusive = flag("hiInclusive");
  spec.passClipped = flag("passClipped");
  spec.delta = num("delta");
  spec.onlyClippedSums = !field("onlyClippedSums").IsUndefined() && flag("onlyClippedSums");
  return spec;
}

}  // namespace tq::binding

// Node-API side: JavaScript objects that own native tensors and batch-norm states, and the
// argument reader that validates everything coming from JavaScript.
#pragma once

#include <napi.h>

#include <memory>
#include <string>
#include <utility>

#include "ops.hpp"

namespace tq::binding {

/**
 * Call inside a catch block: rethrows the exception being handled as a JavaScript error whose
 * message starts with `where` (the op or class), so every native failure names what failed.
 */
[[noreturn]] inline void throwAsJsError(Napi::Env env, const std::string& where) {
  try {
    throw;
  } catch (const Napi::Error&) {
    throw;
  } catch (const dnnl::error& e) {
    throw Napi::Error::New(env, where + ": oneDNN error: " + e.what());
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, where + ": out of memory");
  } catch (const std::exception& e) {
    const std::string message = e.what();
    throw Napi::Error::New(env, message.rfind(where + ":", 0) == 0 ? message : where + ": " + message);
  } catch (...) {
    throw Napi::Error::New(env, where + ": unknown native error");
  }
}

/** Per-environment data: the classes of the handle objects. */
struct AddonData {
  Napi::FunctionReference tensorClass;
  Napi::FunctionReference stateClass;
};

/**
 * A JavaScript object owning one C++ payload. Only the addon creates them (the constructor takes
 * the payload parked by `create`); they carry a type tag so that no other object, however it is
 * dressed up, is ever unwrapped as one. `release` frees the payload deterministically; the
 * destructor (run by the garbage collector) is only a safety net.
 */
template <class Derived, class Payload>
class Handle : public Napi::ObjectWrap<Derived> {
 public:
  explicit Handle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Derived>(info) {
    if (!parked()) {
      throw Napi::TypeError::New(info.Env(), std::string(Derived::kClassName) + " objects are created by the native backend only");
    }
    payload_ = std::move(parked());
    Napi::Object self = info.This().As<Napi::Object>();
    self.TypeTag(&Derived::kTag);
    static_cast<Derived*>(this)->describe(self);
  }

  static Napi::Function define(Napi::Env env) {
    return Napi::ObjectWrap<Derived>::DefineClass(env, Derived::kClassName,
        {Napi::ObjectWrap<Derived>::InstanceValue("backend", Napi::String::New(env, "native"), napi_enumerable)});
  }

  static Napi::Object create(Napi::Env env, Payload&& payload) {
    parked() = std::make_unique<Payload>(std::move(payload));
    Napi::Object obj = Derived::classRef(*env.GetInstanceData<AddonData>()).New({});
    parked().reset();
    return obj;
  }

  /** The handle behind a JavaScript value, or null when it is not one of ours. */
  static Derived* from(const Napi::Value& value) {
    if (!value.IsObject()) return nullptr;
    Napi::Object obj = value.As<Napi::Object>();
    if (!obj.CheckTypeTag(&Derived::kTag)) return nullptr;
    return Derived::Unwrap(obj);
  }

  Payload* payload() const { return payload_.get(); }
  void release() { payload_.reset(); }

 private:
  static std::unique_ptr<Payload>& parked() {
    static std::unique_ptr<Payload> slot;
    return slot;
  }

  std::unique_ptr<Payload> payload_;
};

class TensorHandle : public Handle<TensorHandle, Tensor> {
 public:
  using Handle::Handle;
  static constexpr const char* kClassName = "NativeBuffer";
  static const napi_type_tag kTag;
  static Napi::FunctionReference& classRef(AddonData& d) { return d.tensorClass; }
  /** Own, frozen `shape` property. */
  void describe(Napi::Object self);
};

class StateHandle : public Handle<StateHandle, ops::BatchNormState> {
 public:
  using Handle::Handle;
  static constexpr const char* kClassName = "NativeBatchNormSaved";
  static const napi_type_tag kTag;
  static Napi::FunctionReference& classRef(AddonData& d) { return d.stateClass; }
  void describe(Napi::Object) {}
};

/** Reads and validates the arguments of one op call; errors name the op and the argument. */
class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op, size_t count);

  Tensor& tensor(size_t i, const char* name) const;
  /** null or undefined -> nullptr. */
  Tensor* optionalTensor(size_t i, const char* name) const;
  TensorHandle& tensorHandle(size_t i, const char* name) const;
  StateHandle& stateHandle(size_t i, const char* name) const;
  double number(size_t i, const char* name) const;
  int64_t integer(size_t i, const char* name) const;
  bool boolean(size_t i, const char* name) const;
  Shape shape(size_t i, const char* name) const;
  Napi::Float32Array float32Array(size_t i, const char* name) const;
  Napi::Int32Array int32Array(size_t i, const char* name) const;
  kernels::QuantSpec quantSpec(size_t i, const char* name) const;

  Napi::Env env() const { return info_.Env(); }

 private:
  [[noreturn]] void typeError(const char* name, const std::string& expected, const Napi::Value& got) const;
  const Napi::CallbackInfo& info_;
  const char* op_;
};

}  // namespace tq::binding

// Entry point of the addon: the Context class (one per backend instance, holding its thread
// count) whose methods are the backend ops, plus a few module-level diagnostics.
#include <mutex>
#include <string>

#include "binding.hpp"
#include "int8_binding.hpp"
#include "layout.hpp"

namespace tq::binding {
namespace {

std::mutex& opMutex() {
  static std::mutex mutex;
  return mutex;
}

Napi::Value wrap(Napi::Env env, Tensor&& t) { return TensorHandle::create(env, std::move(t)); }

Napi::Value wrapOptional(Napi::Env env, std::optional<Tensor>&& t) {
  return t ? wrap(env, std::move(*t)) : env.Null();
}

template <class... Values>
Napi::Array tuple(Napi::Env env, Values&&... values) {
  Napi::Array arr = Napi::Array::New(env, sizeof...(values));
  uint32_t i = 0;
  (arr.Set(i++, std::forward<Values>(values)), ...);
  return arr;
}

Napi::Float64Array float64Array(Napi::Env env, const std::vector<double>& values) {
  Napi::Float64Array arr = Napi::Float64Array::New(env, values.size());
  std::copy(values.begin(), values.end(), arr.Data());
  return arr;
}

ops::ConvParams convParams(const Args& a, size_t first) {
  return {a.integer(first, "strideH"), a.integer(first + 1, "strideW"), a.integer(first + 2, "padH"),
      a.integer(first + 3, "padW"), a.integer(first + 4, "groups")};
}

ops::PoolParams poolParams(const Args& a, size_t first) {
  return {a.integer(first, "kernelH"), a.integer(first + 1, "kernelW"), a.integer(first + 2, "strideH"),
      a.integer(first + 3, "strideW"), a.integer(first + 4, "padH"), a.integer(first + 5, "padW")};
}

ops::BatchNormParams batchNormParams(const Args& a, size_t first) {
  return {static_cast<float>(a.number(first, "eps")), static_cast<float>(a.number(first + 1, "momentum")),
      a.boolean(first + 2, "relu")};
}

class Context : public Napi::ObjectWrap<Context> {
 public:
  explicit Context(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Context>(info) {
    const Args a(info, "Context", 1);
    const int64_t threads = a.integer(0, "threads");
    if (threads < 0 || threads > 4096) throw Napi::RangeError::New(info.Env(), "Context: threads must be in [0, 4096]");
    threads_ = threads > 0 ? static_cast<int>(threads) : defaultThreads();
  }

  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "Context",
        {
            InstanceAccessor<&Context::threads>("threads"),
            InstanceMethod<&Context::upload>("upload"),
            InstanceMethod<&Context::download>("download"),
            InstanceMethod<&Context::zeros>("zeros"),
            InstanceMethod<&Context::clone>("clone"),
            InstanceMethod<&Context::free>("free"),
            InstanceMethod<&Context::freeSaved>("freeSaved"),
            InstanceMethod<&Context::reshape>("reshape"),
            InstanceMethod<&Context::add>("add"),
            InstanceMethod<&Context::addRelu>("addRelu"),
            InstanceMethod<&Context::affine>("affine"),
            InstanceMethod<&Context::mul>("mul"),
            InstanceMethod<&Context::relu>("relu"),
            InstanceMethod<&Context::reluBackward>("reluBackward"),
            InstanceMethod<&Context::clippedRelu>("clippedRelu"),
            InstanceMethod<&Context::clippedReluBackward>("clippedReluBackward"),
            InstanceMethod<&Context::tanh>("tanh"),
            InstanceMethod<&Context::tanhBackward>("tanhBackward"),
            InstanceMethod<&Context::axpyInPlace>("axpyInPlace"),
            InstanceMethod<&Context::dot>("dot"),
            InstanceMethod<&Context::stats>("stats"),
            InstanceMethod<&Context::countNonFinite>("countNonFinite"),
            InstanceMethod<&Context::conv2d>("conv2d"),
            InstanceMethod<&Context::conv2dBackwardData>("conv2dBackwardData"),
            InstanceMethod<&Context::conv2dBackwardWeights>("conv2dBackwardWeights"),
            InstanceMethod<&Context::batchNormTrain>("batchNormTrain"),
            InstanceMethod<&Context::batchNormInfer>("batchNormInfer"),
            InstanceMethod<&Context::batchNormBackward>("batchNormBackward"),
            InstanceMethod<&Context::batchNormQuantizeTrain>("batchNormQuantizeTrain"),
            InstanceMethod<&Context::batchNormQuantizeBackward>("batchNormQuantizeBackward"),
            InstanceMethod<&Context::avgPool2d>("avgPool2d"),
            InstanceMethod<&Context::avgPool2dBackward>("avgPool2dBackward"),
            InstanceMethod<&Context::maxPool2d>("maxPool2d"),
            InstanceMethod<&Context::maxPool2dBackward>("maxPool2dBackward"),
            InstanceMethod<&Context::globalAvgPool>("globalAvgPool"),
            InstanceMethod<&Context::globalAvgPoolBackward>("globalAvgPoolBackward"),
            InstanceMethod<&Context::linear>("linear"),
            InstanceMethod<&Context::linearBackwardData>("linearBackwardData"),
            InstanceMethod<&Context::linearBackwardWeights>("linearBackwardWeights"),
            InstanceMethod<&Context::shortcutPad>("shortcutPad"),
            InstanceMethod<&Context::shortcutPadBackward>("shortcutPadBackward"),
            InstanceMethod<&Context::softmaxCrossEntropy>("softmaxCrossEntropy"),
            InstanceMethod<&Context::softmaxCrossEntropyBackward>("softmaxCrossEntropyBackward"),
            InstanceMethod<&Context::sgdStep>("sgdStep"),
            InstanceMethod<&Context::adamStep>("adamStep"),
            InstanceMethod<&Context::quantize>("quantize"),
            InstanceMethod<&Context::addReluQuantize>("addReluQuantize"),
            InstanceMethod<&Context::quantizeBackward>("quantizeBackward"),
        });
  }

 private:
  /**
   * Run one op: validate the argument count, switch OpenMP to this context's thread count, and
   * turn every C++ exception into a JavaScript error naming the op.
   */
  template <class Body>
  Napi::Value run(const Napi::CallbackInfo& info, const char* op, size_t argc, Body body) {
    try {
      const Args a(info, op, argc);
      // One op at a time in the process: worker threads may load the addon too, and the caches,
      // the scratchpad and the OpenMP thread count are shared.
      const std::lock_guard<std::mutex> lock(opMutex());
      useThreads(threads_);
      return body(a);
    } catch (...) {
      throwAsJsError(info.Env(), op);
    }
  }

  Napi::Value threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), threads_); }

  // ---- memory ---------------------------------------------------------------------------------

  Napi::Value upload(const Napi::CallbackInfo& info) {
    return run(info, "upload", 2, [](const Args& a) {
      const Napi::Float32Array data = a.float32Array(0, "data");
      return wrap(a.env(), ops::upload(data.Data(), static_cast<int64_t>(data.ElementLength()), a.shape(1, "shape")));
    });
  }

  Napi::Value download(const Napi::CallbackInfo& info) {
    return run(info, "download", 1, [](const Args& a) {
      const Tensor& x = a.tensor(0, "x");
      Napi::Float32Array out = Napi::Float32Array::New(a.env(), static_cast<size_t>(x.numel()));
      ops::download(x, out.Data());
      return out;
    });
  }

  Napi::Value zeros(const Napi::CallbackInfo& info) {
    return run(info, "zeros", 1, [](const Args& a) { return wrap(a.env(), ops::zeros(a.shape(0, "shape"))); });
  }

  Napi::Value clone(const Napi::CallbackInfo& info) {
    return run(info, "clone", 1, [](const Args& a) { return wrap(a.env(), ops::clone(a.tensor(0, "x"))); });
  }

  Napi::Value free(const Napi::CallbackInfo& info) {
    return run(info, "free", 1, [](const Args& a) {
      TensorHandle& h = a.tensorHandle(0, "x");
      if (!h.payload()) throw OpError("free: buffer was already freed");
      h.release();
      return a.env().Undefined();
    });
  }

  Napi::Value freeSaved(const Napi::CallbackInfo& info) {
    return run(info, "freeSaved", 1, [](const Args& a) {
      StateHandle& h = a.stateHandle(0, "saved");
      if (!h.payload()) throw OpError("freeSaved: state was already freed");
      h.release();
      return a.env().Undefined();
    });
  }

  Napi::Value reshape(const Napi::CallbackInfo& info) {
    return run(info, "reshape", 2, [](const Args& a) {
      return wrap(a.env(), ops::reshape(a.tensor(0, "x"), a.shape(1, "shape")));
    });
  }

  // ---- elementwise and reductions ----------------------------------------------------------------

  template <Tensor (*Op)(const Tensor&, const Tensor&)>
  Napi::Value binaryOp(const Napi::CallbackInfo& info, const char* op, const char* nameA, const char* nameB) {
    return run(info, op, 2, [&](const Args& a) {
      const Tensor& first = a.tensor(0, nameA);
      return wrap(a.env(), Op(first, a.tensor(1, nameB)));
    });
  }

  template <Tensor (*Op)(const Tensor&)>
  Napi::Value unaryOp(const Napi::CallbackInfo& info, const char* op) {
    return run(info, op, 1, [&](const Args& a) { return wrap(a.env(), Op(a.tensor(0, "x"))); });
  }

  Napi::Value add(const Napi::CallbackInfo& info) { return binaryOp<ops::add>(info, "add", "a", "b"); }
  Napi::Value addRelu(const Napi::CallbackInfo& info) { return binaryOp<ops::addRelu>(info, "addRelu", "a", "b"); }
  Napi::Value mul(const Napi::CallbackInfo& info) { return binaryOp<ops::mul>(info, "mul", "a", "b"); }
  Napi::Value relu(const Napi::CallbackInfo& info) { return unaryOp<ops::relu>(info, "relu"); }
  Napi::Value tanh(const Napi::CallbackInfo& info) { return unaryOp<ops::tanh>(info, "tanh"); }
  Napi::Value reluBackward(const Napi::CallbackInfo& info) {
    return binaryOp<ops::reluBackward>(info, "reluBackward", "gy", "y");
  }
  Napi::Value clippedRelu(const Napi::CallbackInfo& info) {
    return run(info, "clippedRelu", 2, [](const Args& a) {
      return wrap(a.env(), ops::clippedRelu(a.tensor(0, "x"), static_cast<float>(a.number(1, "ceiling"))));
    });
  }
  Napi::Value clippedReluBackward(const Napi::CallbackInfo& info) {
    return run(info, "clippedReluBackward", 3, [](const Args& a) {
      const Tensor& gy = a.tensor(0, "gy");
      return wrap(a.env(), ops::clippedReluBackward(gy, a.tensor(1, "y"), static_cast<float>(a.number(2, "ceiling"))));
    });
  }
  Napi::Value tanhBackward(const Napi::CallbackInfo& info) {
    return binaryOp<ops::tanhBackward>(info, "tanhBackward", "gy", "y");
  }

  Napi::Value affine(const Napi::CallbackInfo& info) {
    return run(info, "affine", 3, [](const Args& a) {
      return wrap(a.env(), ops::affine(a.tensor(0, "x"), static_cast<float>(a.number(1, "alpha")),
                               static_cast<float>(a.number(2, "beta"))));
    });
  }

  Napi::Value axpyInPlace(const Napi::CallbackInfo& info) {
    return run(info, "axpyInPlace", 3, [](const Args& a) {
      ops::axpyInPlace(a.tensor(0, "dst"), a.tensor(1, "src"), static_cast<float>(a.number(2, "alpha")));
      return a.env().Undefined();
    });
  }

  Napi::Value dot(const Napi::CallbackInfo& info) {
    return run(info, "dot", 2, [](const Args& a) {
      return Napi::Number::New(a.env(), ops::dot(a.tensor(0, "a"), a.tensor(1, "b")));
    });
  }

  Napi::Value stats(const Napi::CallbackInfo& info) {
    return run(info, "stats", 2, [](const Args& a) {
      return float64Array(a.env(), ops::stats(a.tensor(0, "x"), a.integer(1, "channels")));
    });
  }

  Napi::Value countNonFinite(const Napi::CallbackInfo& info) {
    return run(info, "countNonFinite", 1, [](const Args& a) {
      return Napi::Number::New(a.env(), static_cast<double>(ops::countNonFinite(a.tensor(0, "x"))));
    });
  }

  // ---- convolution ---------------------------------------------------------------------------

  Napi::Value conv2d(const Napi::CallbackInfo& info) {
    return run(info, "conv2d", 8, [](const Args& a) {
      return wrap(a.env(), ops::conv2d(a.tensor(0, "x"), a.tensor(1, "w"), a.optionalTensor(2, "bias"), convParams(a, 3)));
    });
  }

  Napi::Value conv2dBackwardData(const Napi::CallbackInfo& info) {
    return run(info, "conv2dBackwardData", 8, [](const Args& a) {
      return wrap(a.env(), ops::conv2dBackwardData(a.tensor(0, "gy"), a.tensor(1, "w"), a.shape(2, "xShape"), convParams(a, 3)));
    });
  }

  Napi::Value conv2dBackwardWeights(const Napi::CallbackInfo& info) {
    return run(info, "conv2dBackwardWeights", 9, [](const Args& a) {
      auto g = ops::conv2dBackwardWeights(a.tensor(0, "gy"), a.tensor(1, "x"), a.shape(2, "wShape"),
          a.boolean(3, "withBias"), convParams(a, 4));
      return tuple(a.env(), wrap(a.env(), std::move(g.gw)), wrapOptional(a.env(), std::move(g.gb)));
    });
  }

  // ---- batch normalization ---------------------------------------------------------------------

  Napi::Value batchNormTrain(const Napi::CallbackInfo& info) {
    return run(info, "batchNormTrain", 8, [](const Args& a) {
      auto r = ops::batchNormTrain(a.tensor(0, "x"), a.tensor(1, "gamma"), a.tensor(2, "beta"),
          a.tensor(3, "runningMean"), a.tensor(4, "runningVar"), batchNormParams(a, 5));
      return tuple(a.env(), wrap(a.env(), std::move(r.y)), StateHandle::create(a.env(), std::move(r.state)));
    });
  }

  Napi::Value batchNormInfer(const Napi::CallbackInfo& info) {
    return run(info, "batchNormInfer", 8, [](const Args& a) {
      return wrap(a.env(), ops::batchNormInfer(a.tensor(0, "x"), a.tensor(1, "gamma"), a.tensor(2, "beta"),
                               a.tensor(3, "runningMean"), a.tensor(4, "runningVar"), batchNormParams(a, 5)));
    });
  }

  Napi::Value batchNormBackward(const Napi::CallbackInfo& info) {
    return run(info, "batchNormBackward", 7, [](const Args& a) {
      const ops::BatchNormState* state = a.stateHandle(3, "saved").payload();
      if (!state) throw OpError("batchNormBackward: saved was used after it was freed");
      auto g = ops::batchNormBackward(a.tensor(0, "gy"), a.tensor(1, "x"), a.tensor(2, "gamma"), *state, batchNormParams(a, 4));
      return tuple(a.env(), wrap(a.env(), std::move(g.gx)), wrap(a.env(), std::move(g.gGamma)), wrap(a.env(), std::move(g.gBeta)));
    });
  }

  Napi::Value batchNormQuantizeTrain(const Napi::CallbackInfo& info) {
    return run(info, "batchNormQuantizeTrain", 9, [](const Args& a) {
      auto r = ops::batchNormQuantizeTrain(a.tensor(0, "x"), a.tensor(1, "gamma"), a.tensor(2, "beta"),
          a.tensor(3, "runningMean"), a.tensor(4, "runningVar"), batchNormParams(a, 5), a.quantSpec(8, "spec"));
      return tuple(a.env(), wrap(a.env(), std::move(r.y)), StateHandle::create(a.env(), std::move(r.state)));
    });
  }

  Napi::Value batchNormQuantizeBackward(const Napi::CallbackInfo& info) {
    return run(info, "batchNormQuantizeBackward", 9, [](const Args& a) {
      const ops::BatchNormState* state = a.stateHandle(4, "saved").payload();
      if (!state) throw OpError("batchNormQuantizeBackward: saved was used after it was freed");
      auto g = ops::batchNormQuantizeBackward(a.tensor(0, "gq"), a.tensor(1, "x"), a.tensor(2, "gamma"), a.tensor(3, "beta"),
          *state, batchNormParams(a, 5), a.quantSpec(8, "spec"));
      return tuple(a.env(), wrap(a.env(), std::move(g.grads.gx)), wrap(a.env(), std::move(g.grads.gGamma)),
          wrap(a.env(), std::move(g.grads.gBeta)), float64Array(a.env(), g.sums));
    });
  }

  // ---- pooling ------------------------------------------------------------------------------

  Napi::Value avgPool2d(const Napi::CallbackInfo& info) {
    return run(info, "avgPool2d", 7, [](const Args& a) {
      return wrap(a.env(), ops::avgPool2d(a.tensor(0, "x"), poolParams(a, 1)));
    });
  }

  Napi::Value avgPool2dBackward(const Napi::CallbackInfo& info) {
    return run(info, "avgPool2dBackward", 8, [](const Args& a) {
      return wrap(a.env(), ops::avgPool2dBackward(a.tensor(0, "gy"), a.shape(1, "xShape"), poolParams(a, 2)));
    });
  }

  Napi::Value maxPool2d(const Napi::CallbackInfo& info) {
    return run(info, "maxPool2d", 7, [](const Args& a) {
      return wrap(a.env(), ops::maxPool2d(a.tensor(0, "x"), poolParams(a, 1)));
    });
  }

  Napi::Value maxPool2dBackward(const Napi::CallbackInfo& info) {
    return run(info, "maxPool2dBackward", 8, [](const Args& a) {
      const Tensor& gy = a.tensor(0, "gy");
      return wrap(a.env(), ops::maxPool2dBackward(gy, a.tensor(1, "x"), poolParams(a, 2)));
    });
  }

  Napi::Value globalAvgPool(const Napi::CallbackInfo& info) {
    return unaryOp<ops::globalAvgPool>(info, "globalAvgPool");
  }

  Napi::Value globalAvgPoolBackward(const Napi::CallbackInfo& info) {
    return run(info, "globalAvgPoolBackward", 2, [](const Args& a) {
      return wrap(a.env(), ops::globalAvgPoolBackward(a.tensor(0, "gy"), a.shape(1, "xShape")));
    });
  }

  // ---- fully connected -------------------------------------------------------------------------

  Napi::Value linear(const Napi::CallbackInfo& info) {
    return run(info, "linear", 3, [](const Args& a) {
      return wrap(a.env(), ops::linear(a.tensor(0, "x"), a.tensor(1, "w"), a.optionalTensor(2, "bias")));
    });
  }

  Napi::Value linearBackwardData(const Napi::CallbackInfo& info) {
    return binaryOp<ops::linearBackwardData>(info, "linearBackwardData", "gy", "w");
  }

  Napi::Value linearBackwardWeights(const Napi::CallbackInfo& info) {
    return run(info, "linearBackwardWeights", 3, [](const Args& a) {
      auto g = ops::linearBackwardWeights(a.tensor(0, "gy"), a.tensor(1, "x"), a.boolean(2, "withBias"));
      return tuple(a.env(), wrap(a.env(), std::move(g.gw)), wrapOptional(a.env(), std::move(g.gb)));
    });
  }

  // ---- shortcut and loss ---------------------------------------------------------------------

  Napi::Value shortcutPad(const Napi::CallbackInfo& info) {
    return run(info, "shortcutPad", 4, [](const Args& a) {
      return wrap(a.env(), ops::shortcutPad(a.tensor(0, "x"), a.integer(1, "stride"), a.integer(2, "padBefore"),
                               a.integer(3, "padAfter")));
    });
  }

  Napi::Value shortcutPadBackward(const Napi::CallbackInfo& info) {
    return run(info, "shortcutPadBackward", 4, [](const Args& a) {
      return wrap(a.env(), ops::shortcutPadBackward(a.tensor(0, "gy"), a.shape(1, "xShape"), a.integer(2, "stride"),
                               a.integer(3, "padBefore")));
    });
  }

  Napi::Value softmaxCrossEntropy(const Napi::CallbackInfo& info) {
    return run(info, "softmaxCrossEntropy", 3, [](const Args& a) {
      const Napi::Int32Array labels = a.int32Array(1, "labels");
      auto r = ops::softmaxCrossEntropy(a.tensor(0, "logits"), labels.Data(), static_cast<int64_t>(labels.ElementLength()),
          a.number(2, "smoothing"));
      return tuple(a.env(), Napi::Number::New(a.env(), r.loss), wrap(a.env(), std::move(r.probs)),
          Napi::Number::New(a.env(), static_cast<double>(r.correct)));
    });
  }

  Napi::Value softmaxCrossEntropyBackward(const Napi::CallbackInfo& info) {
    return run(info, "softmaxCrossEntropyBackward", 4, [](const Args& a) {
      const Napi::Int32Array labels = a.int32Array(1, "labels");
      return wrap(a.env(), ops::softmaxCrossEntropyBackward(a.tensor(0, "probs"), labels.Data(),
                               static_cast<int64_t>(labels.ElementLength()), a.number(2, "smoothing"), a.number(3, "scale")));
    });
  }

  // ---- optimizers and quantization ---------------------------------------------------------------

  Napi::Value sgdStep(const Napi::CallbackInfo& info) {
    return run(info, "sgdStep", 8, [](const Args& a) {
      const kernels::SgdParams p{static_cast<float>(a.number(3, "lr")), static_cast<float>(a.number(4, "momentum")),
          static_cast<float>(a.number(5, "dampening")), static_cast<float>(a.number(6, "weightDecay")),
          a.boolean(7, "nesterov")};
      ops::sgdStep(a.tensor(0, "param"), a.tensor(1, "grad"), a.optionalTensor(2, "momentumBuf"), p);
      return a.env().Undefined();
    });
  }

  Napi::Value adamStep(const Napi::CallbackInfo& info) {
    return run(info, "adamStep", 11, [](const Args& a) {
      const kernels::AdamParams p{static_cast<float>(a.number(4, "lr")), static_cast<float>(a.number(5, "beta1")),
          static_cast<float>(a.number(6, "beta2")), static_cast<float>(a.number(7, "eps")),
          static_cast<float>(a.number(8, "weightDecay")), a.boolean(9, "decoupled"), a.integer(10, "step")};
      ops::adamStep(a.tensor(0, "param"), a.tensor(1, "grad"), a.tensor(2, "m"), a.tensor(3, "v"), p);
      return a.env().Undefined();
    });
  }

  Napi::Value quantize(const Napi::CallbackInfo& info) {
    return run(info, "quantize", 2, [](const Args& a) {
      return wrap(a.env(), ops::quantize(a.tensor(0, "x"), a.quantSpec(1, "spec")));
    });
  }

  Napi::Value addReluQuantize(const Napi::CallbackInfo& info) {
    return run(info, "addReluQuantize", 3, [](const Args& a) {
      auto r = ops::addReluQuantize(a.tensor(0, "a"), a.tensor(1, "b"), a.quantSpec(2, "spec"));
      return tuple(a.env(), wrap(a.env(), std::move(r.y)), wrap(a.env(), std::move(r.q)));
    });
  }

  Napi::Value quantizeBackward(const Napi::CallbackInfo& info) {
    return run(info, "quantizeBackward", 4, [&info](const Args& a) {
      Tensor* into = a.optionalTensor(3, "accumulate");
      auto g = ops::quantizeBackward(a.tensor(0, "x"), a.tensor(1, "gy"), a.quantSpec(2, "spec"), into);
      // Accumulated: gx is the buffer passed in, returned as the same JavaScript object.
      const Napi::Value gx = into ? info[3] : wrap(a.env(), std::move(*g.gx));
      return tuple(a.env(), gx, float64Array(a.env(), g.sums));
    });
  }

  int threads_;
};

Napi::Value liveBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(MemoryPool::instance().liveBytes()));
}

Napi::Value layoutOf(const Napi::CallbackInfo& info) {
  const Args a(info, "layoutOf", 1);
  return Napi::String::New(info.Env(), layoutName(a.tensor(0, "x").desc()));
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData(data);
  data->tensorClass = Napi::Persistent(TensorHandle::define(env));
  data->stateClass = Napi::Persistent(StateHandle::define(env));
  const dnnl_version_t* v = dnnl::version();
  exports.Set("Context", Context::define(env));
  exports.Set("liveBytes", Napi::Function::New(env, liveBytes, "liveBytes"));
  exports.Set("layoutOf", Napi::Function::New(env, layoutOf, "layoutOf"));
  exports.Set("IntModel", defineIntModel(env, opMutex()));
  exports.Set("IntSimulation", defineIntSimulation(env, opMutex()));
  exports.Set("onednnVersion", Napi::String::New(env, std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch)));
  exports.Set("defaultThreads", Napi::Number::New(env, defaultThreads()));
  return exports;
}

}  // namespace
}  // namespace tq::binding

static Napi::Object initAddon(Napi::Env env, Napi::Object exports) { return tq::binding::init(env, exports); }

NODE_API_MODULE(tinyquant, initAddon)

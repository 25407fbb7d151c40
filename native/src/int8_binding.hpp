// Node-API class of the host int8 path (int8_model.hpp): `new IntModel(spec, threads, batch)`.
#pragma once

#include <napi.h>

#include <mutex>

namespace tq::binding {

/** The IntModel class; its calls hold `opMutex`, the lock every op of the addon runs under. */
Napi::Function defineIntModel(Napi::Env env, std::mutex& opMutex);

}  // namespace tq::binding

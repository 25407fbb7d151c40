// Node-API classes of the host int8 path: `new IntModel(spec, threads, batch)` (int8_model.hpp) and
// `new IntSimulation(spec)` (int8_simulate.hpp).
#pragma once

#include <napi.h>

#include <mutex>

namespace tq::binding {

/** The IntModel class; its calls hold `opMutex`, the lock every op of the addon runs under. */
Napi::Function defineIntModel(Napi::Env env, std::mutex& opMutex);

/** The IntSimulation class, under the same lock. */
Napi::Function defineIntSimulation(Napi::Env env, std::mutex& opMutex);

}  // namespace tq::binding

// Logging goes through spdlog; this header fixes the one logger everyone uses.
#pragma once

#include <spdlog/spdlog.h>

namespace kestrel::log {
using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::trace;
using spdlog::warn;
}  // namespace kestrel::log

// One named spdlog logger per subsystem ("host", "vm", "cli", ...), all to stderr.
#pragma once

#include <spdlog/logger.h>

#include <memory>
#include <string>

namespace forky {

std::shared_ptr<spdlog::logger> logger(const std::string& name);

// Level for every forky logger, existing and future ("warn" by default).
void set_log_level(spdlog::level::level_enum level);

} // namespace forky

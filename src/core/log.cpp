#include "log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>

namespace forky {

namespace {
std::mutex log_mutex;
spdlog::level::level_enum log_level = spdlog::level::warn;
} // namespace

std::shared_ptr<spdlog::logger> logger(const std::string& name) {
    std::lock_guard lock(log_mutex);
    if (auto existing = spdlog::get(name))
        return existing;
    auto created = spdlog::stderr_color_mt(name);
    created->set_pattern("forky[%n] %l: %v");
    created->set_level(log_level);
    return created;
}

void set_log_level(spdlog::level::level_enum level) {
    std::lock_guard lock(log_mutex);
    log_level = level;
    spdlog::set_level(level);
}

} // namespace forky

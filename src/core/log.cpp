#include "log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <utility>

namespace forky {

namespace {
std::mutex log_mutex;
spdlog::level::level_enum log_level = spdlog::level::warn;
constexpr const char* pattern = "forky[%n] %l: %v";

thread_local WarningCapture* capturing = nullptr;
thread_local std::vector<std::string>* captured = nullptr;

// Hands warnings to this thread's WarningCapture, when there is one.
class CaptureSink : public spdlog::sinks::base_sink<std::mutex> {
protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        if (captured == nullptr || msg.level < spdlog::level::warn)
            return;
        spdlog::memory_buf_t out;
        formatter_->format(msg, out);
        std::string line(out.data(), out.size());
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
            line.pop_back();
        captured->push_back(std::move(line));
    }
    void flush_() override {}
};

std::shared_ptr<CaptureSink> capture_sink() {
    static auto sink = [] {
        auto s = std::make_shared<CaptureSink>();
        s->set_pattern(pattern);
        return s;
    }();
    return sink;
}
} // namespace

WarningCapture::WarningCapture() : outer_(capturing) {
    capturing = this;
    captured = &lines_;
}

WarningCapture::~WarningCapture() {
    capturing = outer_;
    captured = outer_ ? &outer_->lines_ : nullptr;
}

std::vector<std::string> WarningCapture::take() {
    return std::exchange(lines_, {});
}

std::shared_ptr<spdlog::logger> logger(const std::string& name) {
    std::lock_guard lock(log_mutex);
    if (auto existing = spdlog::get(name))
        return existing;
    auto created = spdlog::stderr_color_mt(name);
    created->sinks().push_back(capture_sink());
    created->set_pattern(pattern);
    created->set_level(log_level);
    return created;
}

void set_log_level(spdlog::level::level_enum level) {
    std::lock_guard lock(log_mutex);
    log_level = level;
    spdlog::set_level(level);
}

} // namespace forky

// One named spdlog logger per subsystem ("host", "vm", "cli", ...), all to stderr.
#pragma once

#include <spdlog/logger.h>

#include <memory>
#include <string>
#include <vector>

namespace forky {

std::shared_ptr<spdlog::logger> logger(const std::string& name);

// Level for every forky logger, existing and future ("warn" by default).
void set_log_level(spdlog::level::level_enum level);

// While one lives, the warnings (and errors) logged on this thread are also kept, each as
// stderr shows it ("forky[vm] warning: ..."): forkyd hands its caller the warnings of
// its call, which the CLI prints as if it had said them itself.
class WarningCapture {
public:
    WarningCapture();
    ~WarningCapture();
    WarningCapture(const WarningCapture&) = delete;
    WarningCapture& operator=(const WarningCapture&) = delete;
    std::vector<std::string> take();

private:
    std::vector<std::string> lines_;
    WarningCapture* outer_;
};

} // namespace forky

#include "fault.hpp"

#include "errors.hpp"
#include "log.hpp"

#include <chrono>
#include <cstdlib>
#include <string>

namespace forky {

void fault_point(const char* step, unsigned index, const CancelToken& cancel) {
    static const auto first = std::chrono::steady_clock::now();
    logger("fault")->debug(
        "step {}{} at {:.0f} ms", step, index ? ":" + std::to_string(index) : std::string(),
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - first)
            .count());
    auto matches = [&](const char* var) {
        const char* v = std::getenv(var);
        if (v == nullptr)
            return false;
        std::string want = v;
        std::string here = step;
        return want == here || (index != 0 && want == here + ":" + std::to_string(index));
    };
    if (matches("FORKY_FAULT_SLEEP")) {
        long seconds = 60;
        if (const char* s = std::getenv("FORKY_FAULT_SLEEP_S"))
            seconds = std::strtol(s, nullptr, 10);
        logger("fault")->warn("FORKY_FAULT_SLEEP: sleeping {} s at step '{}'", seconds, step);
        cancel.sleep_for(std::chrono::seconds(seconds), std::string("Step '") + step + "'");
    }
    if (matches("FORKY_FAULT"))
        throw Error(std::string("Injected fault at step '") + step + "' (FORKY_FAULT)");
}

} // namespace forky

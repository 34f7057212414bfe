#include "fault.hpp"

#include "errors.hpp"
#include "log.hpp"

#include <cstdlib>

namespace forky {

namespace {
bool matches(const std::string& want, const char* step, unsigned index) {
    const std::string here = step;
    return !want.empty() &&
           (want == here || (index != 0 && want == here + ":" + std::to_string(index)));
}
} // namespace

void Faults::at(const char* step, unsigned index, const CancelToken& cancel) const {
    static const auto first = std::chrono::steady_clock::now();
    logger("fault")->debug(
        "step {}{} at {:.0f} ms", step, index ? ":" + std::to_string(index) : std::string(),
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - first)
            .count());
    if (matches(sleep, step, index)) {
        logger("fault")->warn("FORKY_FAULT_SLEEP: sleeping {} s at step '{}'", sleep_for.count(),
                              step);
        cancel.sleep_for(sleep_for, std::string("Step '") + step + "'");
    }
    if (matches(fail, step, index))
        throw Error(std::string("Injected fault at step '") + step + "' (FORKY_FAULT)");
}

Faults faults_from_environment() {
    Faults f;
    if (const char* v = std::getenv("FORKY_FAULT"))
        f.fail = v;
    if (const char* v = std::getenv("FORKY_FAULT_SLEEP"))
        f.sleep = v;
    if (const char* v = std::getenv("FORKY_FAULT_SLEEP_S"))
        f.sleep_for = std::chrono::seconds(std::strtol(v, nullptr, 10));
    return f;
}

} // namespace forky

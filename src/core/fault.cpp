#include "fault.hpp"

#include "errors.hpp"
#include "log.hpp"

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

} // namespace forky

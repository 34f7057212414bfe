#include "cancel.hpp"

#include "errors.hpp"

#include <thread>

namespace forky {

void CancelToken::check(const std::string& what) const {
    if (requested())
        throw InterruptedError(what + " interrupted; undoing what it had done");
}

void CancelToken::sleep_for(std::chrono::milliseconds d, const std::string& what) const {
    const auto until = std::chrono::steady_clock::now() + d;
    for (;;) {
        check(what);
        const auto now = std::chrono::steady_clock::now();
        if (now >= until)
            return;
        std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
            until - now, std::chrono::milliseconds(20)));
    }
}

} // namespace forky

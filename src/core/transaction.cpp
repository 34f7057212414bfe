#include "transaction.hpp"

#include "log.hpp"

namespace forky {

void Transaction::rollback() noexcept {
    while (!undos_.empty()) {
        auto [what, undo] = std::move(undos_.back());
        undos_.pop_back();
        try {
            logger("txn")->info("Rolling back: {}", what);
            undo();
        } catch (const std::exception& e) {
            logger("txn")->error("Rollback step '{}' failed: {}", what, e.what());
        } catch (...) {
            logger("txn")->error("Rollback step '{}' failed", what);
        }
    }
}

} // namespace forky

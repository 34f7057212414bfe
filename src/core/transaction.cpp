#include "transaction.hpp"

#include "log.hpp"

namespace forky {

void Transaction::rollback() noexcept {
    bool failed = false;
    if (!undos_.empty() && before_rollback_) {
        try {
            before_rollback_();
        } catch (...) {
            logger("txn")->error("Preparing the rollback failed");
        }
    }
    while (!undos_.empty()) {
        auto [what, undo] = std::move(undos_.back());
        undos_.pop_back();
        try {
            logger("txn")->info("Rolling back: {}", what);
            undo();
        } catch (const std::exception& e) {
            logger("txn")->error("Rollback step '{}' failed: {}", what, e.what());
            failed = true;
        } catch (...) {
            logger("txn")->error("Rollback step '{}' failed", what);
            failed = true;
        }
    }
    if (failed && on_failed_rollback_) {
        try {
            on_failed_rollback_();
        } catch (...) {
            logger("txn")->error("Handling a failed rollback failed");
        }
    }
}

} // namespace forky

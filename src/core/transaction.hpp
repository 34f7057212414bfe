// A change to the world as a transaction (incus shared/revert): each step that changes
// something registers its undo; unless commit() is reached the undos run in reverse.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace forky {

class Transaction {
public:
    Transaction() = default;
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction() { rollback(); }

    // `what` names the undo in the log should it fail ("delete volume 'x'").
    void on_rollback(std::string what, std::function<void()> undo) {
        undos_.emplace_back(std::move(what), std::move(undo));
    }
    void commit() { undos_.clear(); }

    // Called once before the undos run (e.g. to reconnect to libvirt: the failure that
    // caused the rollback may have been a lost connection).
    void before_rollback(std::function<void()> hook) { before_rollback_ = std::move(hook); }

    // Called once after a rollback in which some undo failed, e.g. to keep a journal for
    // `forky gc` rather than drop it.
    void if_rollback_fails(std::function<void()> hook) { on_failed_rollback_ = std::move(hook); }

    // Runs the undos, newest first. An undo that fails is logged and the rest still run:
    // the first error already travels as the exception that caused the rollback.
    void rollback() noexcept;

private:
    std::vector<std::pair<std::string, std::function<void()>>> undos_;
    std::function<void()> before_rollback_;
    std::function<void()> on_failed_rollback_;
};

} // namespace forky

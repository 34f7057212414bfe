// Cancellation: the CLI's Ctrl-C (or forkyd's SIGTERM, or its caller hanging up) sets a
// flag; the core looks at it between steps and in every wait, and throws
// InterruptedError, so each operation's transaction undoes what it had done.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

namespace forky {

class CancelToken {
public:
    CancelToken() = default; // never cancelled
    // `flag` outlives every copy of the token (a process-wide flag set by a signal).
    explicit CancelToken(const std::atomic<bool>* flag) : flag_(flag) {}
    // Also cancelled when `asked` says so (forkyd: the caller hung up).
    CancelToken(const std::atomic<bool>* flag, std::function<bool()> asked)
        : flag_(flag), asked_(std::move(asked)) {}

    bool requested() const { return (flag_ != nullptr && flag_->load()) || (asked_ && asked_()); }
    // Throws InterruptedError "<what> interrupted; undoing what it had done".
    void check(const std::string& what) const;
    // Sleeps `d`, waking early to throw when cancelled.
    void sleep_for(std::chrono::milliseconds d, const std::string& what) const;

private:
    const std::atomic<bool>* flag_ = nullptr;
    std::function<bool()> asked_;
};

} // namespace forky

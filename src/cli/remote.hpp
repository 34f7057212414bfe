// forky --server URI: the commands served by forkyd's API instead of libvirt. Each answer
// comes back as the structure the core would have returned, printed by the same code; an
// error as the error the core would have thrown (forkyd sends its exit code along), so the
// output and exit codes are the same both ways. Only this file's .cpp sees gRPC.
#pragma once

#include "forky.hpp"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace forky::cli {

class Remote {
public:
    // `server`: unix:///PATH, or tcp://ADDR:PORT (TLS when FORKY_SERVER_CA names the CA;
    // FORKY_SERVER_CERT and FORKY_SERVER_KEY for a client certificate). Ctrl-C (`cancel`)
    // cancels the call in flight; forkyd then rolls the operation back.
    Remote(std::string server, CancelToken cancel);
    ~Remote();
    const std::string& server() const { return server_; }

    std::vector<VmInfo> list();
    // `spec_path` absolute, in one of forkyd's spec_dirs.
    VmInfo up(const std::string& spec_path, const std::string& name, bool start);
    // Of `o`: count, cold, keep_paused, children_paused, prefix, lock_wait.
    ForkResult fork(const std::string& source, const ForkOptions& o);
    SnapshotResult snapshot(const std::string& vm, const std::string& name,
                            std::chrono::milliseconds lock_wait);
    RevertResult revert(const std::string& vm, const std::string& snapshot, bool discard,
                        std::chrono::milliseconds lock_wait);
    RemoveResult remove(const std::string& vm, bool force);
    RemoveSnapshotResult remove_snapshot(const std::string& ref);
    RecursiveRemoveResult remove_recursive(const std::string& vm);
    bool stop(const std::string& vm, const StopOptions& o); // false: it was not running
    bool pin(const std::string& vm, bool pinned);           // false: it already was so
    LineageTree tree(const std::string& root);
    GcResult gc(bool dry_run);
    std::vector<HostReport> hosts();
    GpuInventory gpus();
    MemoryStats stats();
    // The console log from the start; with `follow`, until the VM goes or Ctrl-C
    // (InterruptedError). `sink` gets each chunk, and whether the log started anew.
    void console(const std::string& vm, bool follow,
                 const std::function<void(const std::string& data, bool restarted)>& sink);

private:
    struct Impl;
    std::string server_;
    CancelToken cancel_;
    std::unique_ptr<Impl> impl_;
};

} // namespace forky::cli

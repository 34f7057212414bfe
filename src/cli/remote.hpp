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

// What forkyd answers where it may serve a fleet (its hosts named as in its inventory;
// "default" when it serves one host).
struct RemoteListing {
    std::vector<std::pair<std::string, VmInfo>> vms; // (host, VM)
    bool fleet = false;
    std::vector<std::string> unreachable; // "'NAME': why"
    unsigned hosts = 1;
};
struct RemoteUp {
    VmInfo vm;
    std::string host;
    bool fleet = false;
};
struct RemoteFork {
    ForkResult result;
    std::string parent_host;
    std::vector<std::string> placement; // with spread: the placement's reasons
};
struct RemoteRecursiveRemove {
    RecursiveRemoveResult result;
    std::vector<std::pair<std::string, std::string>> elsewhere; // (host, VM) removed there
};
struct RemoteGc {
    bool fleet = false;
    GcResult result; // one host
    struct PerHost {
        std::string host;
        GcResult result;
        std::string error; // not collected, and why
    };
    std::vector<PerHost> hosts; // a fleet
};

class Remote {
public:
    // `server`: unix:///PATH, or tcp://ADDR:PORT (TLS when FORKY_SERVER_CA names the CA;
    // FORKY_SERVER_CERT and FORKY_SERVER_KEY for a client certificate). Ctrl-C (`cancel`)
    // cancels the call in flight; forkyd then rolls the operation back.
    Remote(std::string server, CancelToken cancel);
    ~Remote();
    const std::string& server() const { return server_; }

    RemoteListing list();
    // `spec_path` absolute, in one of forkyd's spec_dirs; `host`: one of its fleet's.
    RemoteUp up(const std::string& spec_path, const std::string& name, bool start,
                const std::string& host);
    // Of `o`: count, cold, keep_paused, children_paused, prefix, lock_wait. `host` and
    // `spread` place the children on forkyd's fleet.
    RemoteFork fork(const std::string& source, const ForkOptions& o, const std::string& host,
                    bool spread);
    SnapshotResult snapshot(const std::string& vm, const std::string& name,
                            std::chrono::milliseconds lock_wait);
    RevertResult revert(const std::string& vm, const std::string& snapshot, bool discard,
                        std::chrono::milliseconds lock_wait);
    RemoveResult remove(const std::string& vm, bool force);
    RemoveSnapshotResult remove_snapshot(const std::string& ref);
    RemoteRecursiveRemove remove_recursive(const std::string& vm);
    bool stop(const std::string& vm, const StopOptions& o); // false: it was not running
    bool pin(const std::string& vm, bool pinned);           // false: it already was so
    LineageTree tree(const std::string& root);
    RemoteGc gc(bool dry_run, const std::string& host);
    std::vector<HostReport> hosts();
    GpuInventory gpus(const std::string& host);
    MemoryStats stats(const std::string& host);
    // Warm pools (forkyd's policies, placement and refills).
    RefillResult pool_create(const WarmPool& pool);
    std::vector<WarmPoolView> pool_list(std::vector<std::string>* unreachable);
    RefillResult pool_resize(const std::string& name, unsigned size);
    PoolRemoved pool_remove(const std::string& name);
    RefillResult pool_refill(const std::string& name);
    // `name` non-empty: restored under it (acquire --name); `wait` for an empty pool.
    Acquired acquire(const std::string& pool, const std::string& name, unsigned wait_s);
    std::string release(const std::string& vm); // the pool that had handed it out
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

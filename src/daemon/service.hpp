// The forky.v1.Forky service: each call runs the core operation the CLI runs, on a libvirt
// connection of its own (a Host is used by one thread at a time: it caches its pool and
// libvirt's calls on one connection serialise anyway), so concurrent calls are safe and a
// libvirtd restart costs only the calls in flight. Errors map to gRPC status codes in one
// place (to_status), with the CLI's message and its exit code in the trailing metadata.
#pragma once

#include "daemon_config.hpp"
#include "events.hpp"
#include "forky/v1/forky.grpc.pb.h"

#include "config.hpp"
#include "errors.hpp"
#include "fleet.hpp"
#include "host.hpp"
#include "hosts.hpp"
#include "ksm.hpp"
#include "operation.hpp"

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace forky::daemon {

// The gRPC status for one of forky's errors, and the exit code the CLI would give.
grpc::Status to_status(const Error& e);
grpc::StatusCode status_code(ExitCode code);

class ForkyService final : public forky::v1::Forky::Service {
public:
    ForkyService(DaemonConfig config, Config settings, EventHub& events,
                 const std::atomic<bool>& stopping);

    grpc::Status Up(grpc::ServerContext*, const v1::UpRequest*, v1::UpResponse*) override;
    grpc::Status List(grpc::ServerContext*, const v1::ListRequest*, v1::ListResponse*) override;
    grpc::Status Fork(grpc::ServerContext*, const v1::ForkRequest*, v1::ForkResponse*) override;
    grpc::Status Snapshot(grpc::ServerContext*, const v1::SnapshotRequest*,
                          v1::SnapshotResponse*) override;
    grpc::Status Revert(grpc::ServerContext*, const v1::RevertRequest*,
                        v1::RevertResponse*) override;
    grpc::Status Remove(grpc::ServerContext*, const v1::RemoveRequest*,
                        v1::RemoveResponse*) override;
    grpc::Status Tree(grpc::ServerContext*, const v1::TreeRequest*, v1::TreeResponse*) override;
    grpc::Status Gc(grpc::ServerContext*, const v1::GcRequest*, v1::GcResponse*) override;
    grpc::Status Hosts(grpc::ServerContext*, const v1::HostsRequest*, v1::HostsResponse*) override;
    grpc::Status Gpus(grpc::ServerContext*, const v1::GpusRequest*, v1::GpusResponse*) override;
    grpc::Status Stop(grpc::ServerContext*, const v1::StopRequest*, v1::StopResponse*) override;
    grpc::Status Pin(grpc::ServerContext*, const v1::PinRequest*, v1::PinResponse*) override;
    grpc::Status PoolCreate(grpc::ServerContext*, const v1::PoolCreateRequest*,
                            v1::PoolRefillResponse*) override;
    grpc::Status PoolList(grpc::ServerContext*, const v1::PoolListRequest*,
                          v1::PoolListResponse*) override;
    grpc::Status PoolResize(grpc::ServerContext*, const v1::PoolResizeRequest*,
                            v1::PoolRefillResponse*) override;
    grpc::Status PoolRemove(grpc::ServerContext*, const v1::PoolRemoveRequest*,
                            v1::PoolRemoveResponse*) override;
    grpc::Status PoolRefill(grpc::ServerContext*, const v1::PoolRefillRequest*,
                            v1::PoolRefillResponse*) override;
    grpc::Status Acquire(grpc::ServerContext*, const v1::AcquireRequest*,
                         v1::AcquireResponse*) override;
    grpc::Status Release(grpc::ServerContext*, const v1::ReleaseRequest*,
                         v1::ReleaseResponse*) override;
    grpc::Status Stats(grpc::ServerContext*, const v1::StatsRequest*, v1::StatsResponse*) override;
    grpc::Status Console(grpc::ServerContext*, const v1::ConsoleRequest*,
                         grpc::ServerWriter<v1::ConsoleChunk>*) override;
    grpc::Status Events(grpc::ServerContext*, const v1::EventsRequest*,
                        grpc::ServerWriter<v1::Event>*) override;

    // The hosts it serves (connect:'s alone, or hosts:'s inventory), connected afresh.
    Fleet fleet() const;
    HostOptions host_options(const HostEntry& e) const;
    const Inventory& inventory() const { return inventory_; }

    // One round of the TTL reaper: every VM past its TTL and not pinned is removed (with
    // what only it used), on every host served; returns their names.
    std::vector<std::string> reap();
    // One round of the warm pools: those policies/pools.yaml declares are made or brought
    // to what it says, then every pool of the fleet is refilled to its size.
    void keep_pools();
    // An acquire asked for a refill: the housekeeping thread runs keep_pools() now.
    bool refill_soon() const { return refill_soon_; }

    // KSM on and tuned while forked VMs run, the settings it found back when none does
    // (ksm.manage, a local hypervisor only); restore_ksm() when forkyd stops.
    void tune_ksm();
    void restore_ksm();

    // Cancels every Console and Events stream in flight (SIGTERM).
    void cancel_streams();

private:
    // Runs `body` on a fresh connection; forky's errors become the status.
    grpc::Status serve(grpc::ServerContext* ctx, const char* call,
                       const std::function<void(Fleet&)>& body);
    // SIGTERM or the caller hanging up cancels (`call` null: SIGTERM only).
    OpContext op_context(grpc::ServerContext* call = nullptr) const;
    // Registers a stream's context while it runs.
    struct StreamScope {
        ForkyService& s;
        grpc::ServerContext* ctx;
        StreamScope(ForkyService& s, grpc::ServerContext* ctx);
        ~StreamScope();
    };
    std::mutex streams_m_;
    std::set<grpc::ServerContext*> streams_;
    std::vector<std::string> reap_host(Host& host);
    const PlacementPolicy& placement() const;
    // The reaper's warnings, each said once per VM (not every round).
    void warn_once(const std::string& vm, const std::string& message);
    std::map<std::string, std::string> warned_;
    std::set<std::string> ups_; // names of VMs an Up is making now (under streams_m_)

    DaemonConfig config_;
    Config settings_;
    EventHub& events_;
    const std::atomic<bool>& stopping_;
    std::atomic<bool> refill_soon_{false};
    // What a warm pool's refill forks with: `ctx`, the quota and TTL policies.
    ForkOptions pool_fork_options(OpContext ctx, std::chrono::milliseconds wait) const;
    Inventory inventory_;
    PlacementPolicy placement_;
    std::optional<KsmTuner> ksm_;
    std::atomic<bool> ksm_tuned_{false};
};

} // namespace forky::daemon

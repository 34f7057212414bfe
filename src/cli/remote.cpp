#include "remote.hpp"

#include "convert.hpp"
#include "forky/v1/forky.grpc.pb.h"
#include "yaml_reader.hpp"

#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>

namespace forky::cli {

namespace v1 = forky::v1;

namespace {

std::string read_pem(const char* env) {
    const char* file = std::getenv(env);
    if (file == nullptr || *file == '\0')
        return {};
    return read_small_file(file, 1 << 20);
}

// Cancels `ctx` when Ctrl-C is pressed, while it lives (looking every 50 ms; its end
// wakes it at once, so a call's round trip does not wait for the next look).
class CancelWatch {
public:
    CancelWatch(grpc::ClientContext& ctx, const CancelToken& cancel)
        : thread_([this, &ctx, cancel] {
              std::unique_lock lock(m_);
              while (!done_) {
                  if (cancel.requested()) {
                      ctx.TryCancel();
                      return;
                  }
                  cv_.wait_for(lock, std::chrono::milliseconds(50));
              }
          }) {}
    CancelWatch(const CancelWatch&) = delete;
    CancelWatch& operator=(const CancelWatch&) = delete;
    ~CancelWatch() {
        {
            std::lock_guard lock(m_);
            done_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    bool done_ = false;
    std::thread thread_;
};

// Whole seconds (the CLI's options are whole seconds already; 0 stays 0).
std::uint32_t seconds(std::chrono::milliseconds d) {
    return static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(d).count());
}

template <typename Field>
std::vector<std::string> all(const Field& field) {
    return {field.begin(), field.end()};
}

// "VM@NAME" back into a fork point's vm and name (label() gives it again).
ForkPoint point_of(const std::string& label) {
    ForkPoint p;
    if (auto ref = parse_point_ref(label)) {
        p.vm = ref->vm;
        p.name = ref->name;
    } else {
        p.name = label;
    }
    return p;
}

} // namespace

struct Remote::Impl {
    std::unique_ptr<v1::Forky::Stub> stub;

    // The error for a failed call: forkyd's own (its exit code in the trailing metadata),
    // else one saying forkyd could not be reached.
    [[noreturn]] static void fail(const Remote& r, const char* what, const grpc::Status& status,
                                  const grpc::ClientContext& ctx) {
        const auto& trailers = ctx.GetServerTrailingMetadata();
        if (auto it = trailers.find(api::exit_code_key); it != trailers.end()) {
            const std::string code(it->second.data(), it->second.size());
            api::throw_error(std::atoi(code.c_str()), status.error_message());
        }
        if (status.error_code() == grpc::StatusCode::CANCELLED && r.cancel_.requested())
            throw InterruptedError(std::string(what) +
                                   " interrupted; forkyd undoes what it had done");
        if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED)
            throw UsageError("forkyd at '" + r.server_ + "' does not serve " + what +
                             " (an older forkyd?): " + status.error_message());
        throw LibvirtError("Cannot reach forkyd at '" + r.server_ + "' for " + what + ": " +
                               status.error_message(),
                           0, 0);
    }

    // One call (or a server stream read to its end): `call` issues it and returns its
    // status; Ctrl-C cancels it.
    template <typename F>
    void call(const Remote& r, const char* what, F&& call) {
        grpc::ClientContext ctx;
        grpc::Status status;
        {
            CancelWatch watch(ctx, r.cancel_);
            status = call(*stub, ctx);
        }
        // forkyd's warnings, where forky would have said them: on stderr, before the rest.
        const auto& trailers = ctx.GetServerTrailingMetadata();
        const auto [from, to] = trailers.equal_range(api::warning_key);
        for (auto it = from; it != to; ++it)
            std::cerr << std::string(it->second.data(), it->second.size()) << '\n';
        if (!status.ok())
            fail(r, what, status, ctx);
    }
};

Remote::Remote(std::string server, CancelToken cancel)
    : server_(std::move(server)), cancel_(std::move(cancel)), impl_(std::make_unique<Impl>()) {
    // forky says what went wrong itself; gRPC's own log lines would only repeat it.
    gpr_set_log_function([](gpr_log_func_args*) {});
    const auto bad = [&](const std::string& why) {
        return UsageError("--server " + forky::quoted(server_) + ": " + why +
                          " (forkyd's address: unix:///run/forky/forkyd.sock or "
                          "tcp://ADDR:PORT)");
    };
    std::string target;
    std::shared_ptr<grpc::ChannelCredentials> creds;
    if (server_.rfind("unix://", 0) == 0 && server_.size() > 8 && server_[7] == '/') {
        if (server_.size() - 7 > 107)
            throw bad("a socket's path has at most 107 bytes");
        target = "unix:" + server_.substr(7);
        creds = grpc::InsecureChannelCredentials();
    } else if (server_.rfind("tcp://", 0) == 0 && server_.size() > 6) {
        target = server_.substr(6);
        const auto colon = target.rfind(':');
        const std::string host = colon == std::string::npos ? "" : target.substr(0, colon);
        const std::string port = colon == std::string::npos ? "" : target.substr(colon + 1);
        if (host.empty() || port.empty() || port.size() > 5 ||
            port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) == 0 ||
            std::stoul(port) > 65535)
            throw bad("expected tcp://ADDR:PORT, PORT between 1 and 65535");
        // A name or IPv4 address, or an IPv6 address in brackets: nothing else.
        const bool v6 = host.size() > 2 && host.front() == '[' && host.back() == ']';
        const std::string inner = v6 ? host.substr(1, host.size() - 2) : host;
        const char* allowed = v6 ? "0123456789abcdefABCDEF:." : nullptr;
        const bool ok = v6 ? inner.find_first_not_of(allowed) == std::string::npos
                           : inner.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                                                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") ==
                                 std::string::npos;
        if (!ok)
            throw bad("'" + host + "' is not an address (an IPv6 address goes in brackets)");
        if (std::getenv("FORKY_SERVER_CA") != nullptr) {
            grpc::SslCredentialsOptions ssl;
            ssl.pem_root_certs = read_pem("FORKY_SERVER_CA");
            ssl.pem_cert_chain = read_pem("FORKY_SERVER_CERT");
            ssl.pem_private_key = read_pem("FORKY_SERVER_KEY");
            creds = grpc::SslCredentials(ssl);
        } else {
            creds = grpc::InsecureChannelCredentials(); // forkyd allows it on loopback only
        }
    } else {
        throw bad("not an address forkyd listens on");
    }
    impl_->stub = v1::Forky::NewStub(grpc::CreateChannel(target, creds));
}

Remote::~Remote() = default;

RemoteListing Remote::list() {
    v1::ListResponse out;
    impl_->call(*this, "ls", [&](auto& s, auto& c) { return s.List(&c, {}, &out); });
    RemoteListing l;
    for (const auto& vm : out.vms())
        l.vms.emplace_back(vm.host(), api::vm_from(vm));
    l.fleet = out.fleet();
    l.unreachable = all(out.unreachable());
    l.hosts = out.hosts();
    return l;
}

RemoteUp Remote::up(const std::string& spec_path, const std::string& name, bool start,
                    const std::string& host) {
    v1::UpRequest req;
    req.set_spec_path(spec_path);
    req.set_name(name);
    req.set_no_start(!start);
    req.set_host(host);
    v1::UpResponse out;
    impl_->call(*this, "up", [&](auto& s, auto& c) { return s.Up(&c, req, &out); });
    return {api::vm_from(out.vm()), out.vm().host(), out.fleet()};
}

RemoteFork Remote::fork(const std::string& source, const ForkOptions& o, const std::string& host,
                        bool spread) {
    v1::ForkRequest req;
    req.set_source(source);
    req.set_count(o.count);
    req.set_cold(o.cold);
    req.set_keep_paused(o.keep_paused);
    req.set_children_paused(o.children_paused);
    req.set_prefix(o.prefix);
    req.set_wait_s(seconds(o.lock_wait));
    req.set_host(host);
    req.set_spread(spread);
    v1::ForkResponse out;
    impl_->call(*this, "fork", [&](auto& s, auto& c) { return s.Fork(&c, req, &out); });
    return {api::fork_from(out), out.parent_host(), all(out.placement())};
}

SnapshotResult Remote::snapshot(const std::string& vm, const std::string& name,
                                std::chrono::milliseconds lock_wait) {
    v1::SnapshotRequest req;
    req.set_vm(vm);
    req.set_name(name);
    req.set_wait_s(seconds(lock_wait));
    v1::SnapshotResponse out;
    impl_->call(*this, "snapshot", [&](auto& s, auto& c) { return s.Snapshot(&c, req, &out); });
    SnapshotResult r;
    r.point = point_of(out.snapshot());
    r.point.id = out.id();
    r.point.memory_image = out.memory_image();
    if (out.has_paused_ms())
        r.paused_ms = out.paused_ms();
    r.ms = static_cast<double>(out.ms());
    return r;
}

RevertResult Remote::revert(const std::string& vm, const std::string& snapshot, bool discard,
                            std::chrono::milliseconds lock_wait) {
    v1::RevertRequest req;
    req.set_target(vm + "@" + snapshot);
    req.set_discard(discard);
    req.set_wait_s(seconds(lock_wait));
    v1::RevertResponse out;
    impl_->call(*this, "revert", [&](auto& s, auto& c) { return s.Revert(&c, req, &out); });
    RevertResult r;
    r.to = point_of(out.reverted_to());
    if (!out.kept().empty())
        r.kept = point_of(out.kept());
    r.clock_not_set = all(out.clock_not_set());
    r.ms = static_cast<double>(out.ms());
    return r;
}

RemoveResult Remote::remove(const std::string& vm, bool force) {
    v1::RemoveRequest req;
    req.set_vm(vm);
    req.set_force(force);
    v1::RemoveResponse out;
    impl_->call(*this, "rm", [&](auto& s, auto& c) { return s.Remove(&c, req, &out); });
    return {all(out.deleted_volumes()), all(out.kept_volumes())};
}

RemoveSnapshotResult Remote::remove_snapshot(const std::string& ref) {
    v1::RemoveRequest req;
    req.set_vm(ref);
    v1::RemoveResponse out;
    impl_->call(*this, "rm", [&](auto& s, auto& c) { return s.Remove(&c, req, &out); });
    return {all(out.deleted_volumes())};
}

RemoteRecursiveRemove Remote::remove_recursive(const std::string& vm) {
    v1::RemoveRequest req;
    req.set_vm(vm);
    req.set_recursive(true);
    v1::RemoveResponse out;
    impl_->call(*this, "rm", [&](auto& s, auto& c) { return s.Remove(&c, req, &out); });
    RemoteRecursiveRemove r;
    r.result = {all(out.removed_vms()), all(out.removed_snapshots()), all(out.deleted_volumes())};
    for (const auto& e : out.removed_elsewhere())
        r.elsewhere.emplace_back(e.host(), e.vm());
    return r;
}

bool Remote::stop(const std::string& vm, const StopOptions& o) {
    v1::StopRequest req;
    req.set_vm(vm);
    req.set_force(o.force);
    req.set_timeout_s(seconds(o.timeout));
    req.set_wait_s(seconds(o.lock_wait));
    v1::StopResponse out;
    impl_->call(*this, "stop", [&](auto& s, auto& c) { return s.Stop(&c, req, &out); });
    return out.was_running();
}

bool Remote::pin(const std::string& vm, bool pinned) {
    v1::PinRequest req;
    req.set_vm(vm);
    req.set_pinned(pinned);
    v1::PinResponse out;
    impl_->call(*this, pinned ? "pin" : "unpin",
                [&](auto& s, auto& c) { return s.Pin(&c, req, &out); });
    return out.changed();
}

LineageTree Remote::tree(const std::string& root) {
    v1::TreeRequest req;
    req.set_root(root);
    v1::TreeResponse out;
    impl_->call(*this, "tree", [&](auto& s, auto& c) { return s.Tree(&c, req, &out); });
    return api::tree_from(out);
}

RemoteGc Remote::gc(bool dry_run, const std::string& host) {
    v1::GcRequest req;
    req.set_dry_run(dry_run);
    req.set_host(host);
    v1::GcResponse out;
    impl_->call(*this, "gc", [&](auto& s, auto& c) { return s.Gc(&c, req, &out); });
    RemoteGc r;
    r.fleet = out.fleet();
    r.result = api::gc_from(out);
    for (const auto& h : out.hosts())
        r.hosts.push_back({h.host(), api::gc_from(h.result()), h.error()});
    return r;
}

std::vector<HostReport> Remote::hosts() {
    v1::HostsResponse out;
    impl_->call(*this, "hosts", [&](auto& s, auto& c) { return s.Hosts(&c, {}, &out); });
    std::vector<HostReport> reports;
    for (const auto& h : out.hosts())
        reports.push_back(api::host_from(h));
    return reports;
}

GpuInventory Remote::gpus(const std::string& host) {
    v1::GpusRequest req;
    req.set_host(host);
    v1::GpusResponse out;
    impl_->call(*this, "gpus", [&](auto& s, auto& c) { return s.Gpus(&c, req, &out); });
    return api::gpus_from(out);
}

MemoryStats Remote::stats(const std::string& host) {
    v1::StatsRequest req;
    req.set_host(host);
    v1::StatsResponse out;
    impl_->call(*this, "stats", [&](auto& s, auto& c) { return s.Stats(&c, req, &out); });
    return api::stats_from(out);
}

RefillResult Remote::pool_create(const WarmPool& pool) {
    v1::PoolCreateRequest req;
    api::fill(*req.mutable_pool(), pool);
    v1::PoolRefillResponse out;
    impl_->call(*this, "pool create",
                [&](auto& s, auto& c) { return s.PoolCreate(&c, req, &out); });
    return api::refill_from(out);
}

std::vector<WarmPoolView> Remote::pool_list(std::vector<std::string>* unreachable) {
    v1::PoolListResponse out;
    impl_->call(*this, "pool ls", [&](auto& s, auto& c) { return s.PoolList(&c, {}, &out); });
    std::vector<WarmPoolView> pools;
    for (const auto& v : out.pools())
        pools.push_back(api::pool_view_from(v));
    for (const auto& u : out.unreachable())
        unreachable->push_back(u);
    return pools;
}

RefillResult Remote::pool_resize(const std::string& name, unsigned size) {
    v1::PoolResizeRequest req;
    req.set_name(name);
    req.set_size(size);
    v1::PoolRefillResponse out;
    impl_->call(*this, "pool resize",
                [&](auto& s, auto& c) { return s.PoolResize(&c, req, &out); });
    return api::refill_from(out);
}

PoolRemoved Remote::pool_remove(const std::string& name) {
    v1::PoolRemoveRequest req;
    req.set_name(name);
    v1::PoolRemoveResponse out;
    impl_->call(*this, "pool rm", [&](auto& s, auto& c) { return s.PoolRemove(&c, req, &out); });
    return {out.removed(), out.ready(), out.declared()};
}

RefillResult Remote::pool_refill(const std::string& name) {
    v1::PoolRefillRequest req;
    req.set_name(name);
    v1::PoolRefillResponse out;
    impl_->call(*this, "pool refill",
                [&](auto& s, auto& c) { return s.PoolRefill(&c, req, &out); });
    return api::refill_from(out);
}

Acquired Remote::acquire(const std::string& pool, const std::string& name, unsigned wait_s) {
    v1::AcquireRequest req;
    req.set_pool(pool);
    req.set_name(name);
    req.set_wait_s(wait_s);
    v1::AcquireResponse out;
    impl_->call(*this, "acquire", [&](auto& s, auto& c) { return s.Acquire(&c, req, &out); });
    return api::acquired_from(out);
}

std::string Remote::release(const std::string& vm) {
    v1::ReleaseRequest req;
    req.set_vm(vm);
    v1::ReleaseResponse out;
    impl_->call(*this, "release", [&](auto& s, auto& c) { return s.Release(&c, req, &out); });
    return out.pool();
}

void Remote::console(const std::string& vm, bool follow,
                     const std::function<void(const std::string&, bool)>& sink) {
    v1::ConsoleRequest req;
    req.set_vm(vm);
    req.set_follow(follow);
    impl_->call(*this, "logs", [&](auto& s, auto& c) {
        auto reader = s.Console(&c, req);
        v1::ConsoleChunk chunk;
        std::uint64_t expected = 0;
        while (reader->Read(&chunk)) {
            sink(chunk.data(), chunk.offset() < expected);
            expected = chunk.offset() + chunk.data().size();
        }
        return reader->Finish();
    });
}

} // namespace forky::cli

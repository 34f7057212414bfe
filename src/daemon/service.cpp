#include "service.hpp"

#include "fork.hpp"
#include "gc.hpp"
#include "gpus.hpp"
#include "history.hpp"
#include "hosts.hpp"
#include "images.hpp"
#include "log.hpp"
#include "names.hpp"
#include "policies.hpp"
#include "safe_path.hpp"
#include "spec.hpp"
#include "tree.hpp"
#include "units.hpp"
#include "vm.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <thread>

namespace forky::daemon {

namespace v1 = forky::v1;

grpc::StatusCode status_code(ExitCode code) {
    switch (code) {
    case ExitCode::ok:
        return grpc::StatusCode::OK;
    case ExitCode::usage:
    case ExitCode::spec:
        return grpc::StatusCode::INVALID_ARGUMENT;
    case ExitCode::not_found:
        return grpc::StatusCode::NOT_FOUND;
    case ExitCode::conflict:
        return grpc::StatusCode::FAILED_PRECONDITION;
    case ExitCode::libvirt:
        return grpc::StatusCode::UNAVAILABLE;
    case ExitCode::storage:
        return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case ExitCode::interrupted:
        return grpc::StatusCode::CANCELLED;
    case ExitCode::internal:
        break;
    }
    return grpc::StatusCode::INTERNAL;
}

grpc::Status to_status(const Error& e) {
    return grpc::Status(status_code(e.code()), e.what());
}

ForkyService::ForkyService(DaemonConfig config, Config settings, EventHub& events,
                           const std::atomic<bool>& stopping)
    : config_(std::move(config)), settings_(std::move(settings)), events_(events),
      stopping_(stopping) {}

HostOptions ForkyService::host_options() const {
    HostOptions h;
    h.uri = config_.connect;
    h.pool = config_.pool;
    if (!config_.pool_dir.empty())
        h.pool_dir = config_.pool_dir;
    return h;
}

OpContext ForkyService::op_context() const {
    OpContext ctx;
    ctx.cancel = CancelToken(&stopping_); // SIGTERM: in-flight operations roll back
    return ctx;
}

grpc::Status ForkyService::serve(grpc::ServerContext* ctx, const char* call,
                                 const std::function<void(Host&)>& body) {
    auto log = logger("forkyd");
    const std::string peer = ctx->peer();
    try {
        if (stopping_)
            throw InterruptedError("forkyd is stopping");
        Host host(host_options());
        body(host);
        log->info("{} from {}: ok", call, peer);
        ctx->AddTrailingMetadata("forky-exit-code", "0");
        return grpc::Status::OK;
    } catch (const Error& e) {
        log->info("{} from {}: {} (exit {})", call, peer, e.what(), static_cast<int>(e.code()));
        ctx->AddTrailingMetadata("forky-exit-code", std::to_string(static_cast<int>(e.code())));
        return to_status(e);
    } catch (const std::exception& e) {
        log->error("{} from {}: {}", call, peer, e.what());
        ctx->AddTrailingMetadata("forky-exit-code", "1");
        return grpc::Status(grpc::StatusCode::INTERNAL, e.what());
    }
}

namespace {

void fill(v1::Vm& out, const VmInfo& vm) {
    out.set_name(vm.name);
    out.set_uuid(vm.uuid);
    out.set_state(to_string(vm.state));
    out.set_accel(vm.domain_type == "kvm" ? "kvm" : "tcg");
    out.set_memory_bytes(vm.memory_bytes);
    out.set_vcpus(vm.vcpus);
    out.set_genid(vm.genid);
    out.set_generation(vm.lineage.generation);
    out.set_parent(vm.lineage.parent);
    out.set_fork_point(vm.lineage.fork_point);
    out.set_created_at(vm.lineage.created_at);
    out.set_pool(vm.lineage.pool);
    for (const auto& p : vm.lineage.ports) {
        auto* port = out.add_ports();
        port->set_guest(p.guest);
        port->set_host(p.host);
    }
    for (const auto& v : vm.lineage.volumes) {
        auto* vol = out.add_volumes();
        vol->set_role(v.role);
        vol->set_target(v.target);
        vol->set_name(v.name);
    }
    out.set_host("default");
    out.set_parent_host(vm.lineage.parent_host);
}

template <typename Field>
void add_all(Field* field, const std::vector<std::string>& items) {
    for (const auto& i : items)
        field->Add(std::string(i));
}

} // namespace

grpc::Status ForkyService::Up(grpc::ServerContext* ctx, const v1::UpRequest* req,
                              v1::UpResponse* out) {
    return serve(ctx, "Up", [&](Host& host) {
        const std::filesystem::path spec_path = req->spec_path();
        if (spec_path.empty() || !spec_path.is_absolute())
            throw UsageError("Up needs spec_path: the absolute path of a spec file on forkyd's "
                             "host, in one of its spec_dirs");
        // Only specs where the administrator keeps them: forkyd reads as root, and never
        // a file a caller merely names (its error messages would quote it).
        const PathWalk walk = walk_path(spec_path);
        bool allowed = false;
        for (const auto& dir : config_.spec_dirs) {
            const PathWalk d = walk_path(dir);
            allowed = allowed || (d.exists && is_under(walk.resolved, d.resolved));
        }
        if (!allowed)
            throw UsageError("'" + spec_path.string() + "' is not in one of forkyd's spec_dirs (" +
                             config_.source_dirs() + ")");
        if (walk.problem)
            throw SpecError("Spec '" + spec_path.string() + "' is not safe: " + *walk.problem);
        host.pool(); // made when forkyd started
        // Read where the walk led: relative paths in it are the real file's folder's.
        const DomainSpec spec = load_spec(walk.resolved);
        UpOptions o;
        o.name = req->name();
        o.start = !req->no_start();
        o.image_dirs = settings_.image_dirs;
        o.ctx = op_context();
        const std::string name = vm_up(host, spec, o);
        fill(*out->mutable_vm(), vm_info(host, name));
    });
}

grpc::Status ForkyService::List(grpc::ServerContext* ctx, const v1::ListRequest*,
                                v1::ListResponse* out) {
    return serve(ctx, "List", [&](Host& host) {
        for (const auto& vm : vm_list(host))
            fill(*out->add_vms(), vm);
    });
}

grpc::Status ForkyService::Fork(grpc::ServerContext* ctx, const v1::ForkRequest* req,
                                v1::ForkResponse* out) {
    return serve(ctx, "Fork", [&](Host& host) {
        ForkOptions o;
        o.count = req->count() == 0 ? 1 : req->count();
        o.cold = req->cold();
        o.keep_paused = req->keep_paused();
        o.children_paused = req->children_paused();
        o.prefix = req->prefix();
        o.lock_wait = std::chrono::seconds(req->wait_s() == 0 ? 120 : req->wait_s());
        o.ctx = op_context();
        o.host_name = "default";
        o.load_gpu_policy = [this] {
            const std::filesystem::path policy = config_.policies / "gpu.yaml";
            std::error_code ec;
            return std::filesystem::exists(policy, ec) || ec ? load_gpu_policy(policy)
                                                             : GpuPolicy{};
        };
        o.quotas = load_quota_policy(config_.policies);
        o.children_ttl = load_ttl_policy(config_.policies).children;
        const ForkResult r = vm_fork(host, req->source(), o);
        out->set_parent(r.parent);
        out->set_fork_point(r.fork_point);
        add_all(out->mutable_children(), r.children);
        add_all(out->mutable_child_hosts(), r.child_hosts);
        if (r.parent_downtime_ms)
            out->set_parent_downtime_ms(*r.parent_downtime_ms);
        out->set_parent_left_paused(r.parent_left_paused);
        out->set_snapshot_ms(static_cast<std::uint64_t>(r.snapshot_ms));
        out->set_children_ms(static_cast<std::uint64_t>(r.children_ms));
        out->set_total_ms(static_cast<std::uint64_t>(r.total_ms));
        out->set_memory_image_bytes(r.memory_image_bytes);
        add_all(out->mutable_clock_not_set(), r.clock_not_set);
    });
}

grpc::Status ForkyService::Snapshot(grpc::ServerContext* ctx, const v1::SnapshotRequest* req,
                                    v1::SnapshotResponse* out) {
    return serve(ctx, "Snapshot", [&](Host& host) {
        HistoryOptions o;
        o.ctx = op_context();
        const SnapshotResult r = vm_snapshot(host, req->vm(), req->name(), o);
        out->set_snapshot(r.point.label());
        if (r.paused_ms)
            out->set_paused_ms(*r.paused_ms);
        out->set_ms(static_cast<std::uint64_t>(r.ms));
    });
}

grpc::Status ForkyService::Revert(grpc::ServerContext* ctx, const v1::RevertRequest* req,
                                  v1::RevertResponse* out) {
    return serve(ctx, "Revert", [&](Host& host) {
        const auto ref = parse_point_ref(req->target());
        if (!ref)
            throw UsageError("Revert needs VM@SNAP, not '" + req->target() + "'");
        RevertOptions o;
        o.ctx = op_context();
        o.discard = req->discard();
        const RevertResult r = vm_revert(host, ref->vm, ref->name, o);
        out->set_reverted_to(r.to.label());
        if (r.kept)
            out->set_kept(r.kept->label());
        out->set_ms(static_cast<std::uint64_t>(r.ms));
    });
}

grpc::Status ForkyService::Remove(grpc::ServerContext* ctx, const v1::RemoveRequest* req,
                                  v1::RemoveResponse* out) {
    return serve(ctx, "Remove", [&](Host& host) {
        require_valid_name(req->vm());
        const RemoveResult r = vm_remove(host, req->vm(), req->force(), op_context().cancel);
        add_all(out->mutable_deleted_volumes(), r.deleted);
        add_all(out->mutable_kept_volumes(), r.kept);
    });
}

grpc::Status ForkyService::Tree(grpc::ServerContext* ctx, const v1::TreeRequest* req,
                                v1::TreeResponse* out) {
    return serve(ctx, "Tree", [&](Host& host) {
        const LineageTree t = lineage_tree(host, req->root());
        for (const auto& n : t.nodes) {
            auto* node = out->add_nodes();
            node->set_kind(to_string(n.kind));
            node->set_id(n.id);
            node->set_name(n.name);
            node->set_parent(n.parent);
            if (n.kind != TreeNode::Kind::fork_point)
                node->set_state(to_string(n.state));
            node->set_generation(n.generation);
            if (n.kind == TreeNode::Kind::fork_point)
                node->set_point_kind(to_string(n.point_kind));
            node->set_created_at(n.created_at);
            node->set_disk_bytes(n.disk_bytes);
            node->set_host(n.host);
            node->set_copy(n.copy);
        }
        add_all(out->mutable_problems(), t.problems);
    });
}

grpc::Status ForkyService::Gc(grpc::ServerContext* ctx, const v1::GcRequest* req,
                              v1::GcResponse* out) {
    return serve(ctx, "Gc", [&](Host& host) {
        host.pool();
        GcOptions o;
        o.dry_run = req->dry_run();
        const GcResult r = collect_garbage(host, o);
        add_all(out->mutable_removed_domains(), r.removed_domains);
        add_all(out->mutable_resumed_domains(), r.resumed_domains);
        add_all(out->mutable_deleted_volumes(), r.deleted_volumes);
        add_all(out->mutable_released_locks(), r.released_locks);
        add_all(out->mutable_busy(), r.busy);
        add_all(out->mutable_refused(), r.refused);
        add_all(out->mutable_problems(), r.problems);
        add_all(out->mutable_reattached_gpus(), r.reattached_gpus);
        add_all(out->mutable_removed_mdevs(), r.removed_mdevs);
    });
}

grpc::Status ForkyService::Hosts(grpc::ServerContext* ctx, const v1::HostsRequest*,
                                 v1::HostsResponse* out) {
    return serve(ctx, "Hosts", [&](Host&) {
        Inventory inv;
        HostEntry self;
        self.name = "default";
        self.uri = config_.connect;
        self.pool = config_.pool;
        inv.hosts.push_back(self);
        for (const auto& r : survey_hosts(inv, std::chrono::seconds(15), op_context().cancel)) {
            auto* h = out->add_hosts();
            h->set_name(r.entry.name);
            h->set_uri(r.entry.uri);
            h->set_pool(r.entry.pool);
            h->set_reachable(r.reachable);
            h->set_problem(r.problem);
            h->set_hostname(r.hostname);
            h->set_libvirt_version(r.libvirt_version);
            h->set_qemu_version(r.qemu_version);
            h->set_cpus(r.cpus);
            h->set_memory_bytes(r.memory_bytes);
            h->set_memory_free_bytes(r.memory_free_bytes);
            h->set_forky_vms(r.forky_vms);
            h->set_forky_vms_running(r.forky_vms_running);
            h->set_fork_points(r.fork_points);
            h->set_pool_exists(r.pool_exists);
            h->set_pool_free_bytes(r.pool_free_bytes);
        }
    });
}

grpc::Status ForkyService::Gpus(grpc::ServerContext* ctx, const v1::GpusRequest*,
                                v1::GpusResponse* out) {
    return serve(ctx, "Gpus", [&](Host& host) {
        for (const auto& g : list_gpus(host)) {
            auto* o = out->add_gpus();
            o->set_address(g.address);
            o->set_device(g.device);
            o->set_pci_class(g.pci_class);
            o->set_vendor_id(g.vendor_id);
            o->set_vendor(g.vendor);
            o->set_product_id(g.product_id);
            o->set_product(g.product);
            o->set_driver(g.driver);
            if (g.iommu_group)
                o->set_iommu_group(*g.iommu_group);
            add_all(o->mutable_iommu_group_others(), g.group_members);
            if (g.numa_node)
                o->set_numa_node(*g.numa_node);
            for (const auto& m : g.mdev_types) {
                auto* t = o->add_mdev_types();
                t->set_type(m.id);
                t->set_name(m.name);
                t->set_available(m.available);
            }
            add_all(o->mutable_held_by(), g.held_by);
        }
    });
}

ForkyService::StreamScope::StreamScope(ForkyService& s, grpc::ServerContext* ctx) : s(s), ctx(ctx) {
    std::lock_guard lock(s.streams_m_);
    s.streams_.insert(ctx);
    if (s.stopping_)
        ctx->TryCancel();
}

ForkyService::StreamScope::~StreamScope() {
    std::lock_guard lock(s.streams_m_);
    s.streams_.erase(ctx);
}

void ForkyService::cancel_streams() {
    std::lock_guard lock(streams_m_);
    for (auto* ctx : streams_)
        ctx->TryCancel();
}

grpc::Status ForkyService::Console(grpc::ServerContext* ctx, const v1::ConsoleRequest* req,
                                   grpc::ServerWriter<v1::ConsoleChunk>* writer) {
    StreamScope scope(*this, ctx);
    return serve(ctx, "Console", [&](Host& host) {
        require_valid_name(req->vm());
        std::uint64_t offset = req->offset();
        bool seen = false;
        for (;;) {
            VolumeChunk chunk;
            try {
                chunk = vm_console(host, req->vm(), offset);
            } catch (const NotFoundError&) {
                if (seen && req->follow())
                    return; // removed while followed: the stream ends
                throw;
            }
            seen = true;
            if (chunk.restarted)
                offset = 0;
            if (!chunk.data.empty()) {
                v1::ConsoleChunk c;
                c.set_offset(chunk.restarted ? 0 : offset);
                c.set_data(chunk.data);
                if (!writer->Write(c))
                    return; // the client went
            }
            offset = chunk.next_offset;
            if (!req->follow())
                return;
            for (int i = 0; i < 5; ++i) {
                if (ctx->IsCancelled() || stopping_)
                    return;
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
        }
    });
}

grpc::Status ForkyService::Events(grpc::ServerContext* ctx, const v1::EventsRequest*,
                                  grpc::ServerWriter<v1::Event>* writer) {
    StreamScope scope(*this, ctx);
    auto sub = events_.subscribe();
    // Headers now, so a client knows it is subscribed before any event comes.
    writer->SendInitialMetadata();
    while (!ctx->IsCancelled() && !stopping_) {
        std::unique_lock lock(sub->m);
        sub->cv.wait_for(lock, std::chrono::milliseconds(200),
                         [&] { return !sub->queue.empty() || sub->closed; });
        if (sub->closed)
            break;
        while (!sub->queue.empty()) {
            v1::Event e = std::move(sub->queue.front());
            sub->queue.pop_front();
            lock.unlock();
            if (!writer->Write(e)) {
                events_.unsubscribe(sub);
                return grpc::Status::OK;
            }
            lock.lock();
        }
    }
    events_.unsubscribe(sub);
    return grpc::Status::OK;
}

std::vector<std::string> ForkyService::reap() {
    auto log = logger("forkyd");
    std::vector<std::string> reaped;
    Host host(host_options());
    std::vector<VmInfo> expired;
    for (auto& vm : vm_list(host)) {
        const std::int64_t now = std::time(nullptr);
        if (auto left = ttl_left(vm.lineage, now); left && *left <= 0)
            expired.push_back(std::move(vm));
        else if (vm.lineage.ttl && !vm.lineage.pinned && !left)
            warn_once(vm.name, "VM '" + vm.name + "' has a TTL but no valid creation time (" +
                                   forky::quoted(vm.lineage.created_at) + "): not reaped");
    }
    // Children before their parents: the deepest generation first.
    std::sort(expired.begin(), expired.end(), [](const VmInfo& a, const VmInfo& b) {
        return a.lineage.generation > b.lineage.generation;
    });
    for (const auto& vm : expired) {
        if (stopping_)
            break;
        // Under the VM's lock, expired still and not pinned meanwhile; a VM another
        // operation holds now is left for a later round.
        auto still = [](const Lineage& l) {
            auto left = ttl_left(l, std::time(nullptr));
            return left && *left <= 0;
        };
        try {
            if (vm_remove_if(host, vm.name, still, std::chrono::milliseconds(0),
                             CancelToken(&stopping_))) {
                log->warn("Reaped VM '{}': its TTL of {} ran out", vm.name,
                          format_duration(vm.lineage.ttl->count()));
                reaped.push_back(vm.name);
            }
        } catch (const NotFoundError&) {
            // removed meanwhile
        } catch (const InterruptedError&) {
            break; // stopping
        } catch (const ConflictError& e) {
            warn_once(vm.name, "Not reaping VM '" + vm.name + "' now: " + e.what());
        } catch (const Error& e) {
            warn_once(vm.name, "Could not reap VM '" + vm.name + "': " + e.what());
        }
    }
    return reaped;
}

void ForkyService::warn_once(const std::string& vm, const std::string& message) {
    std::lock_guard lock(streams_m_);
    if (warned_[vm] == message)
        return;
    warned_[vm] = message;
    logger("forkyd")->warn("{}", message);
}

} // namespace forky::daemon

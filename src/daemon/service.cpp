#include "service.hpp"

#include "convert.hpp"

#include "fault.hpp"
#include "fork.hpp"
#include "gc.hpp"
#include "gpus.hpp"
#include "history.hpp"
#include "hosts.hpp"
#include "images.hpp"
#include "log.hpp"
#include "names.hpp"
#include "placement.hpp"
#include "policies.hpp"
#include "safe_path.hpp"
#include "spec.hpp"
#include "tree.hpp"
#include "units.hpp"
#include "vm.hpp"
#include "warm_pool.hpp"

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
      stopping_(stopping) {
    if (!config_.hosts.empty()) {
        inventory_ = load_inventory(config_.hosts, /*required=*/true);
    } else {
        inventory_ = one_host_inventory(config_.connect, config_.pool);
    }
    placement_ = load_placement_policy(config_.placement);
    bool local = false;
    for (const auto& h : inventory_.hosts)
        local = local || is_local_uri(h.uri);
    if (config_.ksm_manage && local)
        ksm_.emplace(KsmSettings{1, config_.ksm_pages_to_scan, config_.ksm_sleep_ms});
}

HostOptions ForkyService::host_options(const HostEntry& e) const {
    HostOptions h;
    h.uri = e.uri;
    h.pool = e.pool;
    if (!config_.pool_dir.empty())
        h.pool_dir = config_.pool_dir;
    return h;
}

Fleet ForkyService::fleet() const {
    return Fleet(inventory_, [this](const HostEntry& e) { return host_options(e); });
}

const PlacementPolicy& ForkyService::placement() const {
    return placement_;
}

void ForkyService::tune_ksm() {
    if (!ksm_)
        return;
    // Forked VMs running on this machine's hypervisors (KSM is this machine's).
    Fleet hosts = fleet();
    unsigned forks = 0;
    for (const auto& h : inventory_.hosts) {
        if (!is_local_uri(h.uri))
            continue;
        for (const auto& vm : vm_list(hosts.host(h.name)))
            if (!vm.lineage.parent.empty() &&
                (vm.state == VmState::running || vm.state == VmState::paused))
                ++forks;
    }
    if (auto said = ksm_->update(forks))
        logger("forkyd")->info("{}", *said);
    ksm_tuned_ = ksm_->active();
}

void ForkyService::restore_ksm() {
    if (!ksm_)
        return;
    if (auto said = ksm_->restore())
        logger("forkyd")->info("{}", *said);
    ksm_tuned_ = false;
}

OpContext ForkyService::op_context(grpc::ServerContext* call) const {
    OpContext ctx;
    // SIGTERM, or the caller hanging up (Ctrl-C on forky --server): the operation rolls back.
    ctx.cancel = call == nullptr ? CancelToken(&stopping_)
                                 : CancelToken(&stopping_, [call] { return call->IsCancelled(); });
    ctx.faults = faults_from_environment(); // the test seam
    return ctx;
}

grpc::Status ForkyService::serve(grpc::ServerContext* ctx, const char* call,
                                 const std::function<void(Fleet&)>& body) {
    auto log = logger("forkyd");
    const std::string peer = ctx->peer();
    // The core's warnings during the call go to the caller too (forky prints them).
    WarningCapture warnings;
    const auto answer = [&](int code) {
        for (const auto& w : warnings.take())
            ctx->AddTrailingMetadata(api::warning_key, w);
        ctx->AddTrailingMetadata(api::exit_code_key, std::to_string(code));
    };
    try {
        if (stopping_)
            throw InterruptedError("forkyd is stopping");
        Fleet hosts = fleet(); // connections of this call's own
        body(hosts);
        log->info("{} from {}: ok", call, peer);
        answer(0);
        return grpc::Status::OK;
    } catch (const Error& e) {
        log->info("{} from {}: {} (exit {})", call, peer, e.what(), static_cast<int>(e.code()));
        answer(static_cast<int>(e.code()));
        return to_status(e);
    } catch (const std::exception& e) {
        log->error("{} from {}: {}", call, peer, e.what());
        answer(1);
        return grpc::Status(grpc::StatusCode::INTERNAL, e.what());
    }
}

grpc::Status ForkyService::Up(grpc::ServerContext* ctx, const v1::UpRequest* req,
                              v1::UpResponse* out) {
    return serve(ctx, "Up", [&](Fleet& fleet) {
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
        // Read where the walk led: relative paths in it are the real file's folder's.
        const DomainSpec spec = load_spec(walk.resolved);
        UpOptions o;
        o.name = req->name();
        o.start = !req->no_start();
        o.image_dirs = settings_.image_dirs;
        o.ctx = op_context(ctx);
        // Two Ups of one name at once would both find it free on the other hosts: this
        // forkyd lets one of them on at a time.
        const std::string wanted = o.name.empty() ? spec.name : o.name;
        {
            std::lock_guard lock(streams_m_);
            if (!ups_.insert(wanted).second)
                throw ConflictError("Another Up of a VM named '" + wanted +
                                    "' is under way; pick another name");
        }
        struct Done {
            ForkyService& s;
            std::string name;
            ~Done() {
                std::lock_guard lock(s.streams_m_);
                s.ups_.erase(name);
            }
        } done{*this, wanted};
        // With a fleet: the host asked for, else the placement policy's pick; the spec's
        // files travel there.
        std::string host_name = fleet.inventory().hosts.front().name;
        if (fleet.many()) {
            host_name =
                fleet.place_up(placement(), wanted, spec.memory_bytes, req->host(), o.ctx.cancel);
            o.upload = true;
        } else if (!req->host().empty()) {
            fleet.require_host(req->host()); // UsageError: no inventory
        }
        Host& host = fleet.host(host_name);
        host.pool(); // made when forkyd started
        const std::string name = vm_up(host, spec, o);
        api::fill(*out->mutable_vm(), vm_info(host, name), host_name);
        out->set_fleet(fleet.many());
    });
}

grpc::Status ForkyService::List(grpc::ServerContext* ctx, const v1::ListRequest*,
                                v1::ListResponse* out) {
    return serve(ctx, "List", [&](Fleet& fleet) {
        out->set_fleet(fleet.many());
        out->set_hosts(static_cast<std::uint32_t>(fleet.inventory().hosts.size()));
        for (const auto& h : fleet.inventory().hosts) {
            try {
                for (const auto& vm : vm_list(fleet.host(h.name)))
                    api::fill(*out->add_vms(), vm, h.name);
            } catch (const InterruptedError&) {
                throw;
            } catch (const Error& e) {
                if (!fleet.many())
                    throw;
                out->add_unreachable("'" + h.name + "': " + e.what());
            }
        }
    });
}

grpc::Status ForkyService::Fork(grpc::ServerContext* ctx, const v1::ForkRequest* req,
                                v1::ForkResponse* out) {
    return serve(ctx, "Fork", [&](Fleet& fleet) {
        ForkOptions o;
        o.count = req->count();
        o.cold = req->cold();
        o.keep_paused = req->keep_paused();
        o.children_paused = req->children_paused();
        o.prefix = req->prefix();
        o.lock_wait = std::chrono::seconds(req->has_wait_s() ? req->wait_s() : 120);
        o.ctx = op_context(ctx);
        const std::optional<PointRef> ref = parse_point_ref(req->source());
        Host& host = fleet.host_of(ref ? ref->vm : req->source(), &o.host_name);
        if (!req->host().empty() || req->spread())
            for (const auto& why :
                 fleet.place_children(placement(), req->source(), o.count, req->host(),
                                      req->spread(), host, o.host_name, o, o.ctx.cancel))
                out->add_placement(why);
        o.names_elsewhere = fleet.names_elsewhere(o.host_name);
        o.load_gpu_policy = [this] {
            const std::filesystem::path policy = config_.policies / "gpu.yaml";
            std::error_code ec;
            return std::filesystem::exists(policy, ec) || ec ? load_gpu_policy(policy)
                                                             : GpuPolicy{};
        };
        load_fork_policies(o, config_.policies);
        api::fill(*out, vm_fork(host, req->source(), o));
        out->set_parent_host(o.host_name);
    });
}

grpc::Status ForkyService::Snapshot(grpc::ServerContext* ctx, const v1::SnapshotRequest* req,
                                    v1::SnapshotResponse* out) {
    return serve(ctx, "Snapshot", [&](Fleet& fleet) {
        HistoryOptions o;
        o.ctx = op_context(ctx);
        o.lock_wait = std::chrono::seconds(req->has_wait_s() ? req->wait_s() : 120);
        const SnapshotResult r = vm_snapshot(fleet.host_of(req->vm()), req->vm(), req->name(), o);
        out->set_snapshot(r.point.label());
        out->set_id(r.point.id);
        out->set_memory_image(r.point.memory_image);
        if (r.paused_ms)
            out->set_paused_ms(*r.paused_ms);
        out->set_ms(static_cast<std::uint64_t>(r.ms));
    });
}

grpc::Status ForkyService::Revert(grpc::ServerContext* ctx, const v1::RevertRequest* req,
                                  v1::RevertResponse* out) {
    return serve(ctx, "Revert", [&](Fleet& fleet) {
        const auto ref = parse_point_ref(req->target());
        if (!ref)
            throw UsageError("Revert needs VM@SNAP, not '" + req->target() + "'");
        RevertOptions o;
        o.ctx = op_context(ctx);
        o.discard = req->discard();
        o.lock_wait = std::chrono::seconds(req->has_wait_s() ? req->wait_s() : 120);
        const RevertResult r = vm_revert(fleet.host_of(ref->vm), ref->vm, ref->name, o);
        out->set_reverted_to(r.to.label());
        if (r.kept)
            out->set_kept(r.kept->label());
        out->set_ms(static_cast<std::uint64_t>(r.ms));
        for (const auto& c : r.clock_not_set)
            out->add_clock_not_set(c);
    });
}

grpc::Status ForkyService::Remove(grpc::ServerContext* ctx, const v1::RemoveRequest* req,
                                  v1::RemoveResponse* out) {
    return serve(ctx, "Remove", [&](Fleet& fleet) {
        const auto add = [](auto* field, const std::vector<std::string>& items) {
            for (const auto& i : items)
                field->Add(std::string(i));
        };
        if (parse_point_ref(req->vm())) {
            if (req->recursive())
                throw UsageError("--recursive removes a VM and its family, not a snapshot ('" +
                                 req->vm() + "')");
            HistoryOptions o;
            o.ctx = op_context(ctx);
            add(out->mutable_deleted_volumes(),
                vm_remove_snapshot(fleet.host_of(req->vm().substr(0, req->vm().find('@'))),
                                   req->vm(), o)
                    .deleted);
            return;
        }
        require_valid_name(req->vm());
        if (req->recursive()) {
            HistoryOptions o;
            o.ctx = op_context(ctx);
            std::string host_name;
            Host& host = fleet.host_of(req->vm(), &host_name);
            // Its family on other hosts first (each with its own family there).
            for (const auto& [h, child] : fleet.children_elsewhere(host_name, req->vm()))
                for (const auto& vm : vm_remove_recursive(fleet.host(h), child, o).removed_vms) {
                    auto* e = out->add_removed_elsewhere();
                    e->set_host(h);
                    e->set_vm(vm);
                }
            const RecursiveRemoveResult r = vm_remove_recursive(host, req->vm(), o);
            add(out->mutable_removed_vms(), r.removed_vms);
            add(out->mutable_removed_snapshots(), r.removed_points);
            add(out->mutable_deleted_volumes(), r.deleted);
            return;
        }
        const RemoveResult r =
            vm_remove(fleet.host_of(req->vm()), req->vm(), req->force(), op_context(ctx).cancel);
        add(out->mutable_deleted_volumes(), r.deleted);
        add(out->mutable_kept_volumes(), r.kept);
    });
}

grpc::Status ForkyService::Tree(grpc::ServerContext* ctx, const v1::TreeRequest* req,
                                v1::TreeResponse* out) {
    return serve(ctx, "Tree", [&](Fleet& fleet) {
        if (!fleet.many()) {
            api::fill(*out, lineage_tree(fleet.host("default"), req->root()));
            return;
        }
        std::vector<std::pair<std::string, Host*>> hosts;
        std::vector<std::string> problems;
        for (const auto& h : fleet.inventory().hosts) {
            try {
                Host& host = fleet.host(h.name);
                host.pool(); // answers
                hosts.emplace_back(h.name, &host);
            } catch (const InterruptedError&) {
                throw;
            } catch (const Error& e) {
                problems.push_back("host '" + h.name + "' did not answer: " + e.what());
            }
        }
        LineageTree t = fleet_lineage_tree(hosts, req->root());
        problems.insert(problems.end(), t.problems.begin(), t.problems.end());
        t.problems = std::move(problems);
        api::fill(*out, t);
    });
}

grpc::Status ForkyService::Gc(grpc::ServerContext* ctx, const v1::GcRequest* req,
                              v1::GcResponse* out) {
    return serve(ctx, "Gc", [&](Fleet& fleet) {
        GcOptions o;
        o.dry_run = req->dry_run();
        if (!fleet.many()) {
            if (!req->host().empty())
                fleet.require_host(req->host()); // UsageError: no inventory
            Host& host = fleet.host("default");
            host.pool();
            api::fill(*out, collect_garbage(host, o));
            return;
        }
        // Across the fleet, host after host (or the one asked for).
        out->set_fleet(true);
        std::vector<std::string> names;
        if (!req->host().empty())
            names.push_back(fleet.require_host(req->host()));
        else
            for (const auto& h : fleet.inventory().hosts)
                names.push_back(h.name);
        for (const auto& name : names) {
            auto* h = out->add_hosts();
            h->set_host(name);
            try {
                api::fill(*h->mutable_result(), collect_garbage(fleet.host(name), o));
            } catch (const InterruptedError&) {
                throw;
            } catch (const Error& e) {
                h->set_error(e.what());
            }
        }
    });
}

grpc::Status ForkyService::Hosts(grpc::ServerContext* ctx, const v1::HostsRequest*,
                                 v1::HostsResponse* out) {
    return serve(ctx, "Hosts", [&](Fleet& fleet) {
        for (const auto& r :
             survey_hosts(fleet.inventory(), std::chrono::seconds(15), op_context(ctx).cancel))
            api::fill(*out->add_hosts(), r);
    });
}

grpc::Status ForkyService::Gpus(grpc::ServerContext* ctx, const v1::GpusRequest* req,
                                v1::GpusResponse* out) {
    return serve(ctx, "Gpus", [&](Fleet& fleet) {
        api::fill(*out, read_inventory(fleet.host(fleet.host_or_first(req->host()))));
    });
}

grpc::Status ForkyService::Stop(grpc::ServerContext* ctx, const v1::StopRequest* req,
                                v1::StopResponse* out) {
    return serve(ctx, "Stop", [&](Fleet& fleet) {
        require_valid_name(req->vm());
        StopOptions o;
        o.force = req->force();
        o.timeout = std::chrono::seconds(req->has_timeout_s() ? req->timeout_s() : 10);
        o.lock_wait = std::chrono::seconds(req->has_wait_s() ? req->wait_s() : 120);
        o.cancel = op_context(ctx).cancel;
        out->set_was_running(vm_stop(fleet.host_of(req->vm()), req->vm(), o));
    });
}

grpc::Status ForkyService::Pin(grpc::ServerContext* ctx, const v1::PinRequest* req,
                               v1::PinResponse* out) {
    return serve(ctx, "Pin", [&](Fleet& fleet) {
        require_valid_name(req->vm());
        out->set_changed(
            vm_pin(fleet.host_of(req->vm()), req->vm(), req->pinned(), op_context(ctx).cancel));
    });
}

ForkOptions ForkyService::pool_fork_options(OpContext ctx, std::chrono::milliseconds wait) const {
    ForkOptions o;
    o.ctx = std::move(ctx);
    o.lock_wait = wait;
    load_fork_policies(o, config_.policies);
    return o;
}

grpc::Status ForkyService::PoolCreate(grpc::ServerContext* ctx, const v1::PoolCreateRequest* req,
                                      v1::PoolRefillResponse* out) {
    return serve(ctx, "PoolCreate", [&](Fleet& fleet) {
        WarmPool pool = api::warm_pool_from(req->pool());
        pool.created_at = utc_now_rfc3339();
        pool.declared = false;
        api::fill(*out,
                  warm_pool_make(fleet, pool, placement(),
                                 pool_fork_options(op_context(ctx), std::chrono::minutes(10))));
    });
}

grpc::Status ForkyService::PoolList(grpc::ServerContext* ctx, const v1::PoolListRequest*,
                                    v1::PoolListResponse* out) {
    return serve(ctx, "PoolList", [&](Fleet& fleet) {
        std::vector<std::string> unreachable;
        for (const auto& v : list_warm_pools(fleet, /*with_memory=*/true, &unreachable))
            api::fill(*out->add_pools(), v);
        for (const auto& u : unreachable)
            out->add_unreachable(u);
    });
}

grpc::Status ForkyService::PoolResize(grpc::ServerContext* ctx, const v1::PoolResizeRequest* req,
                                      v1::PoolRefillResponse* out) {
    return serve(ctx, "PoolResize", [&](Fleet& fleet) {
        api::fill(*out,
                  warm_pool_resize(fleet, req->name(), req->size(), placement(),
                                   pool_fork_options(op_context(ctx), std::chrono::minutes(10))));
    });
}

grpc::Status ForkyService::PoolRemove(grpc::ServerContext* ctx, const v1::PoolRemoveRequest* req,
                                      v1::PoolRemoveResponse* out) {
    return serve(ctx, "PoolRemove", [&](Fleet& fleet) {
        const PoolRemoved r = warm_pool_remove(fleet, req->name(), op_context(ctx).cancel);
        out->set_removed(static_cast<std::uint32_t>(r.removed));
        out->set_ready(static_cast<std::uint32_t>(r.ready));
        out->set_declared(r.declared);
    });
}

grpc::Status ForkyService::PoolRefill(grpc::ServerContext* ctx, const v1::PoolRefillRequest* req,
                                      v1::PoolRefillResponse* out) {
    return serve(ctx, "PoolRefill", [&](Fleet& fleet) {
        api::fill(*out,
                  warm_pool_refill(fleet, req->name(), placement(),
                                   pool_fork_options(op_context(ctx), std::chrono::minutes(10))));
    });
}

grpc::Status ForkyService::Acquire(grpc::ServerContext* ctx, const v1::AcquireRequest* req,
                                   v1::AcquireResponse* out) {
    return serve(ctx, "Acquire", [&](Fleet& fleet) {
        if (!req->name().empty()) {
            api::fill(*out, warm_pool_acquire_as(
                                fleet, req->pool(), req->name(),
                                pool_fork_options(op_context(ctx), std::chrono::seconds(120))));
            return;
        }
        const auto wait = std::chrono::seconds(std::min(req->wait_s(), 3600u));
        // The housekeeping thread refills (at once), not this call; and while a caller
        // waits for an empty pool.
        api::fill(*out, warm_pool_acquire(fleet, req->pool(), wait, op_context(ctx).cancel,
                                          [this] { refill_soon_ = true; }));
        refill_soon_ = true;
    });
}

grpc::Status ForkyService::Release(grpc::ServerContext* ctx, const v1::ReleaseRequest* req,
                                   v1::ReleaseResponse* out) {
    return serve(ctx, "Release", [&](Fleet& fleet) {
        require_valid_name(req->vm());
        out->set_pool(warm_pool_release(fleet, req->vm(), op_context(ctx).cancel));
    });
}

grpc::Status ForkyService::Stats(grpc::ServerContext* ctx, const v1::StatsRequest* req,
                                 v1::StatsResponse* out) {
    return serve(ctx, "Stats", [&](Fleet& fleet) {
        MemoryStats s = host_memory_stats(fleet.host(fleet.host_or_first(req->host())));
        s.tuned_by_forkyd = ksm_tuned_.load();
        api::fill(*out, s);
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
    // Not cancelled by SIGTERM like Events: it ends itself within 250 ms, saying why.
    return serve(ctx, "Console", [&](Fleet& fleet) {
        require_valid_name(req->vm());
        Host& host = fleet.host_of(req->vm());
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
                if (ctx->IsCancelled())
                    return;
                if (stopping_)
                    throw LibvirtError("forkyd is stopping: the console of '" + req->vm() +
                                           "' is no longer followed",
                                       0, 0);
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
    std::vector<std::string> reaped;
    Fleet hosts = fleet();
    for (const auto& h : inventory_.hosts) {
        if (stopping_)
            break;
        try {
            for (auto& vm : reap_host(hosts.host(h.name)))
                reaped.push_back(std::move(vm));
        } catch (const InterruptedError&) {
            break;
        } catch (const Error& e) {
            warn_once("host " + h.name,
                      "The reaper could not go through host '" + h.name + "': " + e.what());
        }
    }
    return reaped;
}

std::vector<std::string> ForkyService::reap_host(Host& host) {
    auto log = logger("forkyd");
    std::vector<std::string> reaped;
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

void ForkyService::keep_pools() {
    refill_soon_ = false;
    auto log = logger("forkyd");
    Fleet hosts = fleet();
    std::vector<WarmPool> declared;
    try {
        declared = load_pools_policy(config_.policies);
    } catch (const Error& e) {
        warn_once("pools.yaml", std::string("The pool policy is not used: ") + e.what());
    }
    const CancelToken cancel(&stopping_);
    for (const auto& want : declared) {
        if (stopping_)
            return;
        try {
            std::string at;
            Host* host = nullptr;
            try {
                host = &hosts.host_of(parse_point_ref(want.source)->vm, &at);
            } catch (const NotFoundError& e) {
                warn_once("pool " + want.name, "Warm pool '" + want.name + "' of " +
                                                   forky::quoted(want.source) +
                                                   " waits for its snapshot: " + e.what());
                continue;
            }
            if (!host->find_volume(warm_pool_record_name(want.name))) {
                WarmPool p = want;
                p.created_at = utc_now_rfc3339();
                warm_pool_create(*host, p, cancel);
                log->info("Made warm pool '{}' of '{}' ({} children), as pools.yaml declares",
                          want.name, want.source, want.size);
                continue;
            }
            WarmPool have = read_warm_pool(*host, want.name);
            WarmPool next = want;
            next.created_at = have.created_at;
            if (!(next == have)) {
                warm_pool_update(*host, next, cancel);
                log->info("Warm pool '{}' set to {} children, as pools.yaml declares", want.name,
                          want.size);
            }
        } catch (const InterruptedError&) {
            return;
        } catch (const Error& e) {
            warn_once("pool " + want.name,
                      "Warm pool '" + want.name + "' of pools.yaml: " + e.what());
        }
    }
    std::vector<std::string> unreachable;
    for (const auto& view : list_warm_pools(hosts, /*with_memory=*/false, &unreachable)) {
        if (stopping_)
            return;
        if (view.ready.size() == view.pool.size)
            continue;
        try {
            // Another refill running: the next round.
            RefillResult r =
                warm_pool_refill(hosts, view.pool.name, placement_,
                                 pool_fork_options(op_context(nullptr), std::chrono::seconds(0)));
            if (!r.made.empty() || !r.removed.empty())
                log->info("Warm pool '{}': {} made, {} removed ({} were ready)", view.pool.name,
                          r.made.size(), r.removed.size(), r.ready_before);
        } catch (const InterruptedError&) {
            return;
        } catch (const Error& e) {
            warn_once("pool " + view.pool.name,
                      "Could not refill warm pool '" + view.pool.name + "': " + e.what());
        }
    }
}

void ForkyService::warn_once(const std::string& vm, const std::string& message) {
    std::lock_guard lock(streams_m_);
    if (warned_[vm] == message)
        return;
    warned_[vm] = message;
    logger("forkyd")->warn("{}", message);
}

} // namespace forky::daemon

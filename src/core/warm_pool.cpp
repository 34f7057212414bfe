#include "warm_pool.hpp"

#include "ksm.hpp"
#include "config.hpp"
#include "engine.hpp"
#include "errors.hpp"
#include "fleet.hpp"
#include "fork.hpp"
#include "handles.hpp"
#include "log.hpp"
#include "names.hpp"
#include "vm.hpp"
#include "vm_lock.hpp"
#include "yaml_reader.hpp"

#include <libvirt/libvirt.h>
#include <pugixml.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

namespace forky {

namespace fs = std::filesystem;

namespace {

constexpr const char* warm_pool_namespace = "https://forky.dev/xmlns/warm-pool/1";
constexpr std::uint64_t record_capacity = 4096;

std::string text_of(const pugi::xml_node& root, const char* name) {
    return root.child(name).text().get();
}

void write_record(Host& host, const WarmPool& pool) {
    const std::string xml = warm_pool_to_xml(pool);
    if (xml.size() >= record_capacity)
        throw Error("The record of warm pool '" + pool.name + "' is too large");
    host.write_volume(warm_pool_record_name(pool.name), 0, xml + '\0');
}

// Whether the domain has the QEMU guest agent's channel (what virDomainSetTime needs).
bool has_guest_agent(virDomainPtr dom) {
    try {
        return domain_xml(dom).find("org.qemu.guest_agent.0") != std::string::npos;
    } catch (const Error&) {
        return false; // gone meanwhile: no clock to set
    }
}

// The snapshot a pool is made from; UsageError for anything but VM@SNAP.
PointRef pool_source(const WarmPool& pool) {
    const auto ref = parse_point_ref(pool.source);
    if (!ref)
        throw UsageError("A warm pool is made from a snapshot, VM@SNAP (forky snapshot VM "
                         "SNAP takes one); " +
                         forky::quoted(pool.source) + " is not one");
    return *ref;
}

void check_warm_pool_size(unsigned size) {
    if (size > max_warm_pool_size)
        throw UsageError("A warm pool keeps at most " + std::to_string(max_warm_pool_size) +
                         " children ready");
}

} // namespace

std::string warm_pool_record_name(const std::string& pool) {
    return pool + std::string(warm_pool_suffix);
}

std::string warm_pool_lock_name(const std::string& pool) {
    return pool + std::string(warm_pool_suffix); // a lock no VM's can be (names.hpp)
}

void check_warm_pool_name(const std::string& name) {
    if (name.size() > max_name_length - 4)
        throw UsageError("Invalid pool name " + forky::quoted(name) + ": at most " +
                         std::to_string(max_name_length - 4) +
                         " characters (its children are named NAME-N)");
    if (auto why = name_problem(name))
        throw UsageError("Invalid pool name " + forky::quoted(name) + ": " + *why +
                         " (its children are named NAME-1, NAME-2, ...)");
}

std::string warm_pool_to_xml(const WarmPool& p) {
    pugi::xml_document doc;
    pugi::xml_node root = doc.append_child("warm-pool");
    root.append_attribute("xmlns") = warm_pool_namespace;
    auto text = [&root](const char* name, const std::string& value) {
        root.append_child(name).text().set(value.c_str());
    };
    text("name", p.name);
    text("source", p.source);
    text("size", std::to_string(p.size));
    if (!p.host.empty())
        text("host", p.host);
    if (p.spread)
        text("spread", "yes");
    text("created-at", p.created_at);
    if (p.declared)
        text("declared", "yes");
    std::ostringstream out;
    doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
    return out.str();
}

WarmPool warm_pool_from_xml(std::string_view xml) {
    pugi::xml_document doc;
    if (!doc.load_buffer(xml.data(), xml.size()) || !doc.child("warm-pool"))
        throw Error("Malformed warm pool record");
    pugi::xml_node root = doc.child("warm-pool");
    WarmPool p;
    p.name = text_of(root, "name");
    p.source = text_of(root, "source");
    p.host = text_of(root, "host");
    p.spread = text_of(root, "spread") == "yes";
    p.created_at = text_of(root, "created-at");
    p.declared = text_of(root, "declared") == "yes";
    const std::string size = text_of(root, "size");
    if (name_problem(p.name) || !parse_point_ref(p.source) || size.empty() || size.size() > 4 ||
        size.find_first_not_of("0123456789") != std::string::npos)
        throw Error("Malformed warm pool record");
    p.size = static_cast<unsigned>(std::stoul(size));
    if (p.size > max_warm_pool_size || (!p.host.empty() && name_problem(p.host)))
        throw Error("Malformed warm pool record");
    return p;
}

std::vector<WarmPool> read_warm_pools(Host& host) {
    std::vector<WarmPool> out;
    for (const auto& v : host.volumes()) {
        if (v.name.size() <= warm_pool_suffix.size() || !v.name.ends_with(warm_pool_suffix))
            continue;
        try {
            // A record is at most record_capacity long: a larger file was planted and is
            // never read (a huge one would cost its size in memory for every command).
            if (v.capacity > record_capacity)
                throw Error("larger than a record (" + std::to_string(v.capacity) + " bytes)");
            std::string text = host.read_volume_range(v.name, 0, v.capacity);
            text = text.substr(0, text.find('\0'));
            if (text.find_first_not_of(" \t\r\n") == std::string::npos)
                continue; // being created
            WarmPool p = warm_pool_from_xml(text);
            if (warm_pool_record_name(p.name) != v.name)
                throw Error("its name is not its volume's");
            out.push_back(std::move(p));
        } catch (const NotFoundError&) {
            // removed while listed
        } catch (const Error& e) {
            logger("pool")->warn("Warm pool record '{}' is unreadable: {}", v.name, e.what());
        }
    }
    std::sort(out.begin(), out.end(),
              [](const WarmPool& a, const WarmPool& b) { return a.name < b.name; });
    return out;
}

WarmPool read_warm_pool(Host& host, const std::string& name) {
    check_warm_pool_name(name);
    for (auto& p : read_warm_pools(host))
        if (p.name == name)
            return p;
    throw NotFoundError("No warm pool named '" + name + "' on '" + host.options().uri +
                        "' (forky pool ls lists them)");
}

void warm_pool_create(Host& host, const WarmPool& pool, const CancelToken& cancel) {
    check_warm_pool_name(pool.name);
    check_warm_pool_size(pool.size);
    const PointRef ref = pool_source(pool);
    VmLock lock = VmLock::acquire(host, warm_pool_lock_name(pool.name), "pool-create",
                                  std::chrono::seconds(120), cancel);
    if (host.find_volume(warm_pool_record_name(pool.name)))
        throw ConflictError("A warm pool named '" + pool.name +
                            "' exists already (forky pool resize changes its size)");
    // The snapshot must be here (a kept one, or a fork point of a VM that still has it).
    DomainPtr vm = host.find_domain(ref.vm);
    find_fork_point(read_fork_points(host), ref,
                    vm ? std::optional<std::string>(domain_uuid(vm.get())) : std::nullopt);
    host.create_raw_volume(warm_pool_record_name(pool.name), record_capacity);
    try {
        write_record(host, pool);
    } catch (...) {
        host.delete_volume(warm_pool_record_name(pool.name));
        throw;
    }
}

void warm_pool_update(Host& host, const WarmPool& pool, const CancelToken& cancel) {
    VmLock lock = VmLock::acquire(host, warm_pool_lock_name(pool.name), "pool-update",
                                  std::chrono::seconds(120), cancel);
    read_warm_pool(host, pool.name); // still there
    write_record(host, pool);
}

void warm_pool_remove_record(Host& host, const std::string& name, const CancelToken& cancel) {
    VmLock lock = VmLock::acquire(host, warm_pool_lock_name(name), "pool-rm",
                                  std::chrono::seconds(120), cancel);
    host.delete_volume(warm_pool_record_name(name));
}

namespace {

// The children not handed out of every pool on `host` (or of `only` when not null), by
// pool, from one listing of the host's VMs.
std::map<std::string, std::vector<ReadyChild>> children_by_pool(Host& host,
                                                                const std::string& host_name,
                                                                const std::string* only,
                                                                bool with_memory) {
    std::map<std::string, std::vector<ReadyChild>> out;
    for (const auto& vm : vm_list(host)) {
        if (vm.lineage.warm_pool.empty() || (only != nullptr && vm.lineage.warm_pool != *only))
            continue;
        ReadyChild c{&host, host_name, vm.name, 0, ReadyChild::Status::ready};
        if (vm.state != VmState::paused)
            c.status = ReadyChild::Status::stale;
        else if (host.find_volume(lock_volume_name(vm.name)))
            c.status = ReadyChild::Status::held;
        if (with_memory && c.status == ReadyChild::Status::ready) {
            try {
                c.rss_bytes = rss_bytes(host, vm.name);
            } catch (const Error&) {
                // gone meanwhile
            }
        }
        out[vm.lineage.warm_pool].push_back(std::move(c));
    }
    return out;
}

} // namespace

std::vector<ReadyChild> ready_children(Host& host, const std::string& host_name,
                                       const std::string& pool, bool with_memory) {
    auto by_pool = children_by_pool(host, host_name, &pool, with_memory);
    return std::move(by_pool[pool]);
}

std::vector<ReadyChild> with_status(const std::vector<ReadyChild>& children,
                                    ReadyChild::Status status) {
    std::vector<ReadyChild> out;
    for (const auto& c : children)
        if (c.status == status)
            out.push_back(c);
    return out;
}

std::optional<Acquired> warm_pool_take(const std::vector<ReadyChild>& candidates,
                                       const std::string& pool) {
    for (const auto& c : candidates) {
        // Another client taking this one holds its lock: the next.
        std::optional<VmLock> lock = VmLock::try_acquire(*c.host, c.name, "acquire");
        if (!lock)
            continue;
        DomainPtr dom = c.host->find_domain(c.name);
        if (!dom)
            continue;
        std::optional<Lineage> lineage = read_lineage(dom.get());
        if (!lineage || lineage->warm_pool != pool)
            continue; // handed out meanwhile
        // Resumed first, then the mark cleared: a kill between the two leaves a running
        // child with the mark, stale (never handed out; the next refill removes it),
        // never a paused one nobody knows of.
        if (virDomainResume(dom.get()) < 0)
            throw_libvirt_error("Failed to resume '" + c.name + "' from warm pool '" + pool + "'");
        lineage->warm_pool.clear();
        lineage->acquired_from = pool;
        lineage->created_at = utc_now_rfc3339(); // its TTL runs from now
        write_lineage(dom.get(), c.name, *lineage);
        Acquired a;
        a.name = c.name;
        a.host_name = c.host_name;
        a.ports = lineage->ports;
        if (has_guest_agent(dom.get()))
            a.clock_not_set = set_guest_clock(dom.get());
        else
            a.clock_not_set = "no guest agent in its spec (guest_agent: true)";
        return a;
    }
    return std::nullopt;
}

std::vector<std::string> remove_ready(const std::vector<ReadyChild>& children,
                                      const std::string& pool, std::size_t how_many,
                                      const CancelToken& cancel) {
    std::vector<std::string> removed;
    for (auto it = children.rbegin(); it != children.rend() && removed.size() < how_many; ++it) {
        try {
            if (vm_remove_if(
                    *it->host, it->name, [&pool](const Lineage& l) { return l.warm_pool == pool; },
                    std::chrono::milliseconds(0), cancel))
                removed.push_back(it->name);
        } catch (const NotFoundError&) {
            // taken and removed meanwhile
        } catch (const ConflictError&) {
            // being acquired now
        }
    }
    return removed;
}

std::vector<WarmPoolView> list_warm_pools(Fleet& fleet, bool with_memory,
                                          std::vector<std::string>* unreachable) {
    std::vector<WarmPoolView> out;
    std::vector<std::pair<std::string, Host*>> hosts;
    for (const auto& h : fleet.inventory().hosts) {
        try {
            hosts.emplace_back(h.name, &fleet.host(h.name));
        } catch (const LibvirtError& e) {
            if (!unreachable)
                throw;
            unreachable->push_back("host '" + h.name + "': " + e.what());
        }
    }
    std::vector<std::pair<std::string, Host*>> answered;
    for (auto& [name, host] : hosts) {
        try {
            for (auto& p : read_warm_pools(*host))
                out.push_back({std::move(p), name, {}, 0});
            answered.emplace_back(name, host);
        } catch (const LibvirtError& e) {
            if (!unreachable)
                throw;
            unreachable->push_back("host '" + name + "': " + e.what());
        }
    }
    for (auto& [name, host] : answered) {
        auto by_pool = children_by_pool(*host, name, nullptr, with_memory);
        for (auto& view : out) {
            for (auto& c : by_pool[view.pool.name]) {
                view.memory_bytes += c.rss_bytes;
                if (c.status == ReadyChild::Status::held)
                    ++view.held;
                else if (c.status == ReadyChild::Status::stale)
                    ++view.stale;
                else
                    view.ready.push_back(std::move(c));
            }
        }
    }
    // A pool whose snapshot is gone (rm --recursive of its VM, say) is said, not hidden.
    for (auto& [name, host] : answered) {
        std::vector<ForkPoint> points;
        try {
            points = read_fork_points(*host);
        } catch (const Error&) {
            continue;
        }
        for (auto& view : out) {
            if (view.host_name != name)
                continue;
            const auto ref = parse_point_ref(view.pool.source);
            view.snapshot_missing =
                std::none_of(points.begin(), points.end(), [&](const ForkPoint& fp) {
                    return fp.vm == ref->vm && fp.name == ref->name;
                });
        }
    }
    return out;
}

Host& warm_pool_host(Fleet& fleet, const std::string& name, std::string* host_name) {
    check_warm_pool_name(name);
    for (const auto& h : fleet.inventory().hosts) {
        Host& host = fleet.host(h.name);
        if (host.find_volume(warm_pool_record_name(name))) {
            if (host_name)
                *host_name = h.name;
            return host;
        }
    }
    throw NotFoundError("No warm pool named '" + name + "' (forky pool ls lists them)");
}

std::vector<ReadyChild> fleet_ready(Fleet& fleet, const std::string& name, bool with_memory) {
    std::vector<ReadyChild> out;
    for (const auto& h : fleet.inventory().hosts)
        for (auto& c : ready_children(fleet.host(h.name), h.name, name, with_memory))
            out.push_back(std::move(c));
    return out;
}

Acquired warm_pool_acquire(Fleet& fleet, const std::string& name, std::chrono::milliseconds wait,
                           const CancelToken& cancel, const std::function<void()>& on_empty) {
    Host& host = warm_pool_host(fleet, name);
    const WarmPool pool = read_warm_pool(host, name);
    const auto deadline = std::chrono::steady_clock::now() + wait;
    bool said_empty = false;
    for (;;) {
        const std::vector<ReadyChild> children = fleet_ready(fleet, name);
        if (auto got = warm_pool_take(with_status(children, ReadyChild::Status::ready), name))
            return *got;
        if (!said_empty && on_empty) {
            on_empty();
            said_empty = true;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            const std::size_t held = with_status(children, ReadyChild::Status::held).size();
            throw ConflictError(
                "Warm pool '" + name + "' is empty: none of its " + std::to_string(pool.size) +
                " children is ready" +
                (held > 0 ? " (" + std::to_string(held) +
                                " held by an operation: a killed one's are freed by forky gc)"
                          : std::string()) +
                "; --wait SECONDS waits for a refill, forky pool resize makes it larger");
        }
        cancel.sleep_for(std::chrono::milliseconds(100), "Waiting for a child of '" + name + "'");
        if (!host.find_volume(warm_pool_record_name(name)))
            throw NotFoundError("Warm pool '" + name + "' was removed while waiting for it");
    }
}

RefillResult warm_pool_refill(Fleet& fleet, const std::string& name,
                              const PlacementPolicy& placement, ForkOptions base) {
    std::string host_name;
    Host& host = warm_pool_host(fleet, name, &host_name);
    VmLock lock = VmLock::acquire(host, warm_pool_lock_name(name), "pool-refill", base.lock_wait,
                                  base.ctx.cancel);
    const WarmPool pool = read_warm_pool(host, name);
    RefillResult result;
    const std::vector<ReadyChild> children = fleet_ready(fleet, name);
    // Stale ones (resumed or stopped behind forky's back) are never handed out: removed.
    const auto stale = with_status(children, ReadyChild::Status::stale);
    result.removed = remove_ready(stale, name, stale.size(), base.ctx.cancel);
    std::vector<ReadyChild> ready = with_status(children, ReadyChild::Status::ready);
    result.ready_before = static_cast<unsigned>(ready.size());
    if (ready.size() > pool.size) {
        for (auto& r : remove_ready(ready, name, ready.size() - pool.size, base.ctx.cancel))
            result.removed.push_back(std::move(r));
        return result;
    }
    if (ready.size() == pool.size)
        return result;
    ForkOptions o = std::move(base);
    o.count = pool.size - static_cast<unsigned>(ready.size());
    o.children_paused = true;
    o.prefix = name;
    o.warm_pool = name;
    o.host_name = host_name;
    o.names_elsewhere = fleet.names_elsewhere(host_name);
    if (!pool.host.empty() || pool.spread)
        result.placement = fleet.place_children(placement, pool.source, o.count, pool.host,
                                                pool.spread, host, host_name, o, o.ctx.cancel);
    result.made = vm_fork(host, pool.source, o).children;
    return result;
}

RefillResult warm_pool_make(Fleet& fleet, const WarmPool& pool, const PlacementPolicy& placement,
                            ForkOptions base) {
    check_warm_pool_name(pool.name);
    check_warm_pool_size(pool.size);
    const PointRef ref = pool_source(pool);
    if (!pool.host.empty())
        fleet.require_host(pool.host);
    if (pool.spread && !fleet.many())
        throw UsageError("Spreading a pool's children needs a host inventory (forky hosts --help)");
    for (const auto& h : fleet.inventory().hosts) {
        Host& on = fleet.host(h.name);
        if (on.find_volume(warm_pool_record_name(pool.name))) {
            bool readable = false;
            for (const auto& p : read_warm_pools(on))
                readable = readable || p.name == pool.name;
            throw ConflictError(
                readable ? "A warm pool named '" + pool.name + "' exists already on host '" +
                               h.name + "' (forky pool resize changes its size)"
                         : "'" + warm_pool_record_name(pool.name) + "' on host '" + h.name +
                               "' is no readable warm pool record (forky pool rm " + pool.name +
                               " removes it)");
        }
        // A VM and a pool never share a name (each blocks the other's volumes and locks).
        if (on.find_domain(pool.name))
            throw ConflictError("'" + pool.name + "' is the name of a VM on host '" + h.name +
                                "'; a warm pool needs a name of its own");
    }
    Host& host = fleet.host_of(ref.vm);
    warm_pool_create(host, pool, base.ctx.cancel);
    try {
        return warm_pool_refill(fleet, pool.name, placement, std::move(base));
    } catch (...) {
        try {
            if (fleet_ready(fleet, pool.name).empty())
                warm_pool_remove_record(host, pool.name);
        } catch (const std::exception& e) {
            logger("pool")->warn("Could not remove the record of warm pool '{}': {}", pool.name,
                                 e.what());
        }
        throw;
    }
}

RefillResult warm_pool_resize(Fleet& fleet, const std::string& name, unsigned size,
                              const PlacementPolicy& placement, ForkOptions base) {
    check_warm_pool_size(size);
    Host& host = warm_pool_host(fleet, name);
    WarmPool pool = read_warm_pool(host, name);
    pool.size = size;
    warm_pool_update(host, pool, base.ctx.cancel);
    try {
        return warm_pool_refill(fleet, name, placement, std::move(base));
    } catch (const Error&) {
        logger("pool")->warn("Warm pool '{}' is now of size {}, but its refill failed (forky "
                             "pool refill tries again):",
                             name, size);
        throw;
    }
}

PoolRemoved warm_pool_remove(Fleet& fleet, const std::string& name, const CancelToken& cancel) {
    Host& host = warm_pool_host(fleet, name);
    WarmPool pool;
    try {
        pool = read_warm_pool(host, name);
    } catch (const NotFoundError&) {
        // Its file is there but is no readable record (planted, or damaged): it goes, as
        // the pool would, with the children that name the pool.
        logger("pool")->warn("'{}' is not a readable warm pool record; removing it",
                             warm_pool_record_name(name));
    }
    warm_pool_remove_record(host, name, cancel);
    const auto ready = fleet_ready(fleet, name);
    PoolRemoved r;
    r.ready = ready.size();
    r.removed = remove_ready(ready, name, ready.size(), cancel).size();
    r.declared = pool.declared;
    return r;
}

Acquired warm_pool_acquire_as(Fleet& fleet, const std::string& pool_name, const std::string& name,
                              ForkOptions base) {
    require_valid_name(name);
    std::string host_name;
    Host& host = warm_pool_host(fleet, pool_name, &host_name);
    const WarmPool pool = read_warm_pool(host, pool_name);
    ForkOptions o = std::move(base);
    o.count = 1;
    o.name = name;
    o.host_name = host_name;
    o.names_elsewhere = fleet.names_elsewhere(host_name);
    ForkResult r = vm_fork(host, pool.source, o);
    DomainPtr dom = host.domain(name);
    Lineage lineage = require_forky_vm(dom.get(), name, "not handing it out");
    lineage.acquired_from = pool_name;
    write_lineage(dom.get(), name, lineage);
    Acquired a;
    a.name = name;
    a.host_name = host_name;
    a.ports = lineage.ports;
    if (!r.clock_not_set.empty())
        a.clock_not_set = r.clock_not_set.front();
    return a;
}

std::string warm_pool_release(Fleet& fleet, const std::string& vm, const CancelToken& cancel) {
    Host& host = fleet.host_of(vm);
    DomainPtr dom = host.domain(vm);
    const Lineage lineage = require_forky_vm(dom.get(), vm, "not releasing it");
    if (!lineage.warm_pool.empty())
        throw ConflictError("VM '" + vm + "' is a ready child of warm pool '" + lineage.warm_pool +
                            "', not handed out (forky pool resize or pool rm removes it)");
    if (lineage.acquired_from.empty())
        throw ConflictError("VM '" + vm +
                            "' was not handed out by a warm pool (forky rm removes it)");
    vm_remove(host, vm, /*force=*/true, cancel);
    return lineage.acquired_from;
}

std::vector<WarmPool> parse_pools_policy(std::string_view text, const fs::path& file) {
    YamlReader r(fs::absolute(file).lexically_normal());
    YAML::Node root = r.load(std::string(text));
    std::vector<WarmPool> out;
    if (root.IsNull() || !root.IsDefined())
        return out;
    if (!root.IsMap())
        throw SpecError(r.file().string() +
                        ": a pool policy is a YAML mapping with a list 'pools' (each with "
                        "name, from and size)");
    r.only_keys(root, "", {"pools"});
    YAML::Node pools = root["pools"];
    if (!pools.IsDefined() || pools.IsNull())
        return out;
    if (!pools.IsSequence())
        r.fail(pools, "pools", "expected a list of pools, each with name, from and size");
    std::set<std::string> names;
    for (std::size_t i = 0; i < pools.size(); ++i) {
        const std::string at = "pools[" + std::to_string(i) + "]";
        const YAML::Node p = pools[i];
        r.require_map(p, at);
        r.only_keys(p, at, {"name", "from", "size", "host", "spread"});
        WarmPool w;
        const YAML::Node name = r.required(p, "name", at + ".name");
        w.name = r.scalar(name, at + ".name");
        try {
            check_warm_pool_name(w.name);
        } catch (const UsageError& e) {
            r.fail(name, at + ".name", e.what());
        }
        if (!names.insert(w.name).second)
            r.fail(name, at + ".name", "pool '" + w.name + "' is declared twice");
        const YAML::Node from = r.required(p, "from", at + ".from");
        w.source = r.scalar(from, at + ".from");
        try {
            if (!parse_point_ref(w.source))
                r.fail(from, at + ".from",
                       "expected a snapshot, VM@SNAP, got " + forky::quoted(w.source));
        } catch (const UsageError& e) {
            r.fail(from, at + ".from", e.what());
        }
        w.size = r.whole_number(r.required(p, "size", at + ".size"), at + ".size", 0,
                                max_warm_pool_size);
        if (YAML::Node h = p["host"]; h.IsDefined()) {
            w.host = r.scalar(h, at + ".host");
            if (auto why = name_problem(w.host))
                r.fail(h, at + ".host", "'" + w.host + "' is not a valid host name: " + *why);
        }
        if (YAML::Node s = p["spread"]; s.IsDefined()) {
            const std::string v = r.scalar(s, at + ".spread");
            if (v != "true" && v != "false")
                r.fail(s, at + ".spread", "expected true or false, got " + forky::quoted(v));
            w.spread = v == "true";
        }
        if (w.spread && !w.host.empty())
            r.fail(p, at, "host and spread: one or the other");
        w.declared = true;
        out.push_back(std::move(w));
    }
    return out;
}

std::vector<WarmPool> load_pools_policy(const fs::path& dir) {
    const fs::path file = dir / "pools.yaml";
    auto text = read_trusted_file(file, /*required=*/false, "the pool policy", "");
    return text ? parse_pools_policy(*text, file) : std::vector<WarmPool>{};
}

} // namespace forky

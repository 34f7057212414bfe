#include "convert.hpp"

#include <chrono>

namespace forky::api {

namespace {

template <typename Field>
void add_all(Field* field, const std::vector<std::string>& items) {
    for (const auto& i : items)
        field->Add(std::string(i));
}

template <typename Field>
std::vector<std::string> all(const Field& field) {
    return {field.begin(), field.end()};
}

// A VM's forwarded ports, each way.
template <typename Field>
void add_ports(Field* field, const std::vector<PortForward>& ports) {
    for (const auto& p : ports) {
        auto* port = field->Add();
        port->set_guest(p.guest);
        port->set_host(p.host);
    }
}

template <typename Field>
std::vector<PortForward> ports_of(const Field& field) {
    std::vector<PortForward> out;
    for (const auto& p : field)
        out.push_back({p.guest(), p.host()});
    return out;
}

// The enum value whose to_string() is `text` (each enum's values, first to `last`).
template <typename Enum>
Enum parse_enum(const std::string& text, Enum last, Enum fallback) {
    for (int i = 0; i <= static_cast<int>(last); ++i)
        if (text == to_string(static_cast<Enum>(i)))
            return static_cast<Enum>(i);
    return fallback;
}

} // namespace

void throw_error(int code, const std::string& message) {
    switch (static_cast<ExitCode>(code)) {
    case ExitCode::usage:
        throw UsageError(message);
    case ExitCode::spec:
        throw SpecError(message);
    case ExitCode::not_found:
        throw NotFoundError(message);
    case ExitCode::conflict:
        throw ConflictError(message);
    case ExitCode::storage:
        throw StorageError(message);
    case ExitCode::interrupted:
        throw InterruptedError(message);
    case ExitCode::libvirt:
        throw LibvirtError(message, 0, 0);
    case ExitCode::ok:
    case ExitCode::internal:
        break;
    }
    throw Error(message);
}

void fill(v1::Vm& out, const VmInfo& vm, const std::string& host) {
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
    add_ports(out.mutable_ports(), vm.lineage.ports);
    for (const auto& v : vm.lineage.volumes) {
        auto* vol = out.add_volumes();
        vol->set_role(v.role);
        vol->set_target(v.target);
        vol->set_name(v.name);
    }
    out.set_host(host);
    out.set_parent_host(vm.lineage.parent_host);
    if (vm.lineage.ttl)
        out.set_ttl_s(static_cast<std::uint64_t>(vm.lineage.ttl->count()));
    out.set_pinned(vm.lineage.pinned);
}

VmInfo vm_from(const v1::Vm& in) {
    VmInfo vm;
    vm.name = in.name();
    vm.uuid = in.uuid();
    vm.state = parse_enum(in.state(), VmState::unknown, VmState::unknown);
    vm.domain_type = in.accel() == "kvm" ? "kvm" : "qemu";
    vm.memory_bytes = in.memory_bytes();
    vm.vcpus = in.vcpus();
    vm.genid = in.genid();
    vm.lineage.generation = in.generation();
    vm.lineage.parent = in.parent();
    vm.lineage.fork_point = in.fork_point();
    vm.lineage.created_at = in.created_at();
    vm.lineage.pool = in.pool();
    vm.lineage.ports = ports_of(in.ports());
    for (const auto& v : in.volumes())
        vm.lineage.volumes.push_back({v.role(), v.target(), v.name()});
    vm.lineage.parent_host = in.parent_host();
    if (in.has_ttl_s())
        vm.lineage.ttl = std::chrono::seconds(static_cast<std::int64_t>(in.ttl_s()));
    vm.lineage.pinned = in.pinned();
    return vm;
}

void fill(v1::ForkResponse& out, const ForkResult& r) {
    out.set_parent(r.parent);
    out.set_fork_point(r.fork_point);
    add_all(out.mutable_children(), r.children);
    add_all(out.mutable_child_hosts(), r.child_hosts);
    if (r.parent_downtime_ms)
        out.set_parent_downtime_ms(*r.parent_downtime_ms);
    out.set_parent_left_paused(r.parent_left_paused);
    out.set_snapshot_ms(static_cast<std::uint64_t>(r.snapshot_ms));
    out.set_children_ms(static_cast<std::uint64_t>(r.children_ms));
    out.set_total_ms(static_cast<std::uint64_t>(r.total_ms));
    out.set_memory_image_bytes(r.memory_image_bytes);
    add_all(out.mutable_clock_not_set(), r.clock_not_set);
    out.set_bytes_shipped(r.bytes_shipped);
    out.set_volumes_shipped(r.volumes_shipped);
    out.set_volumes_reused(r.volumes_reused);
    out.set_ship_ms(static_cast<std::uint64_t>(r.ship_ms));
    for (const auto& g : r.child_gpus)
        add_all(out.add_child_gpus()->mutable_names(), g);
    out.set_parent_gpus_detached(r.parent_gpus_detached);
}

ForkResult fork_from(const v1::ForkResponse& in) {
    ForkResult r;
    r.parent = in.parent();
    r.fork_point = in.fork_point();
    r.children = all(in.children());
    r.child_hosts = all(in.child_hosts());
    if (in.has_parent_downtime_ms())
        r.parent_downtime_ms = in.parent_downtime_ms();
    r.parent_left_paused = in.parent_left_paused();
    r.snapshot_ms = static_cast<double>(in.snapshot_ms());
    r.children_ms = static_cast<double>(in.children_ms());
    r.total_ms = static_cast<double>(in.total_ms());
    r.memory_image_bytes = in.memory_image_bytes();
    r.clock_not_set = all(in.clock_not_set());
    r.bytes_shipped = in.bytes_shipped();
    r.volumes_shipped = in.volumes_shipped();
    r.volumes_reused = in.volumes_reused();
    r.ship_ms = static_cast<double>(in.ship_ms());
    for (const auto& g : in.child_gpus())
        r.child_gpus.push_back(all(g.names()));
    r.parent_gpus_detached = in.parent_gpus_detached();
    return r;
}

void fill(v1::TreeResponse& out, const LineageTree& t) {
    for (const auto& n : t.nodes) {
        auto* node = out.add_nodes();
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
    add_all(out.mutable_problems(), t.problems);
}

LineageTree tree_from(const v1::TreeResponse& in) {
    LineageTree t;
    for (const auto& n : in.nodes()) {
        TreeNode node;
        node.kind = parse_enum(n.kind(), TreeNode::Kind::fork_point, TreeNode::Kind::vm);
        node.id = n.id();
        node.name = n.name();
        node.parent = n.parent();
        node.state = parse_enum(n.state(), VmState::unknown, VmState::unknown);
        node.generation = n.generation();
        node.point_kind =
            parse_enum(n.point_kind(), ForkPoint::Kind::pre_revert, ForkPoint::Kind::fork);
        node.created_at = n.created_at();
        node.disk_bytes = n.disk_bytes();
        node.host = n.host();
        node.copy = n.copy();
        t.nodes.push_back(std::move(node));
    }
    t.problems = all(in.problems());
    return t;
}

void fill(v1::GcResponse& out, const GcResult& r) {
    add_all(out.mutable_removed_domains(), r.removed_domains);
    add_all(out.mutable_resumed_domains(), r.resumed_domains);
    add_all(out.mutable_deleted_volumes(), r.deleted_volumes);
    add_all(out.mutable_released_locks(), r.released_locks);
    add_all(out.mutable_busy(), r.busy);
    add_all(out.mutable_refused(), r.refused);
    add_all(out.mutable_problems(), r.problems);
    add_all(out.mutable_reattached_gpus(), r.reattached_gpus);
    add_all(out.mutable_removed_mdevs(), r.removed_mdevs);
}

GcResult gc_from(const v1::GcResponse& in) {
    GcResult r;
    r.removed_domains = all(in.removed_domains());
    r.resumed_domains = all(in.resumed_domains());
    r.deleted_volumes = all(in.deleted_volumes());
    r.released_locks = all(in.released_locks());
    r.busy = all(in.busy());
    r.refused = all(in.refused());
    r.problems = all(in.problems());
    r.reattached_gpus = all(in.reattached_gpus());
    r.removed_mdevs = all(in.removed_mdevs());
    return r;
}

void fill(v1::Host& h, const HostReport& r) {
    h.set_name(r.entry.name);
    h.set_uri(r.entry.uri);
    h.set_pool(r.entry.pool);
    h.set_reachable(r.reachable);
    h.set_problem(r.problem);
    h.set_hostname(r.hostname);
    h.set_libvirt_version(r.libvirt_version);
    h.set_qemu_version(r.qemu_version);
    h.set_cpus(r.cpus);
    h.set_memory_bytes(r.memory_bytes);
    h.set_memory_free_bytes(r.memory_free_bytes);
    h.set_forky_vms(r.forky_vms);
    h.set_forky_vms_running(r.forky_vms_running);
    h.set_fork_points(r.fork_points);
    h.set_pool_exists(r.pool_exists);
    h.set_pool_free_bytes(r.pool_free_bytes);
    for (const auto& [k, v] : r.entry.labels)
        (*h.mutable_labels())[k] = v;
    if (r.entry.max_forks)
        h.set_max_forks(*r.entry.max_forks);
}

HostReport host_from(const v1::Host& h) {
    HostReport r;
    r.entry.name = h.name();
    r.entry.uri = h.uri();
    r.entry.pool = h.pool();
    r.reachable = h.reachable();
    r.problem = h.problem();
    r.hostname = h.hostname();
    r.libvirt_version = h.libvirt_version();
    r.qemu_version = h.qemu_version();
    r.cpus = h.cpus();
    r.memory_bytes = h.memory_bytes();
    r.memory_free_bytes = h.memory_free_bytes();
    r.forky_vms = h.forky_vms();
    r.forky_vms_running = h.forky_vms_running();
    r.fork_points = h.fork_points();
    r.pool_exists = h.pool_exists();
    r.pool_free_bytes = h.pool_free_bytes();
    for (const auto& [k, v] : h.labels())
        r.entry.labels[k] = v;
    if (h.has_max_forks())
        r.entry.max_forks = h.max_forks();
    return r;
}

void fill(v1::GpusResponse& out, const GpuInventory& inv) {
    for (const auto& g : inv.gpus) {
        auto* o = out.add_gpus();
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
        for (const auto& m : inv.mdevs) {
            if (m.parent != g.address)
                continue;
            auto* md = o->add_mdevs();
            md->set_uuid(m.uuid);
            md->set_type(m.type);
            add_all(md->mutable_held_by(), m.held_by);
        }
    }
}

GpuInventory gpus_from(const v1::GpusResponse& in) {
    GpuInventory inv;
    for (const auto& o : in.gpus()) {
        Gpu g;
        g.address = o.address();
        g.device = o.device();
        g.pci_class = o.pci_class();
        g.vendor_id = o.vendor_id();
        g.vendor = o.vendor();
        g.product_id = o.product_id();
        g.product = o.product();
        g.driver = o.driver();
        if (o.has_iommu_group())
            g.iommu_group = o.iommu_group();
        g.group_members = all(o.iommu_group_others());
        if (o.has_numa_node())
            g.numa_node = o.numa_node();
        for (const auto& t : o.mdev_types())
            g.mdev_types.push_back({t.type(), t.name(), t.available()});
        g.held_by = all(o.held_by());
        for (const auto& m : o.mdevs())
            inv.mdevs.push_back({m.uuid(), m.type(), o.address(), all(m.held_by())});
        inv.gpus.push_back(std::move(g));
    }
    return inv;
}

void fill(v1::StatsResponse& out, const MemoryStats& s) {
    out.set_ksm_available(s.ksm.available);
    out.set_ksm_running(s.ksm.settings.run == 1);
    out.set_pages_shared(s.ksm.pages_shared);
    out.set_pages_sharing(s.ksm.pages_sharing);
    out.set_page_size(s.ksm.page_size);
    out.set_saved_bytes(s.ksm.saved_bytes());
    out.set_pages_to_scan(s.ksm.settings.pages_to_scan);
    out.set_sleep_ms(s.ksm.settings.sleep_ms);
    out.set_tuned_by_forkyd(s.tuned_by_forkyd);
    for (const auto& f : s.families) {
        auto* o = out.add_families();
        o->set_root(f.root);
        add_all(o->mutable_vms(), f.vms);
        o->set_rss_bytes(f.rss_bytes);
        o->set_merging_pages(f.merging_pages);
        o->set_saved_bytes(f.saved_bytes);
    }
}

MemoryStats stats_from(const v1::StatsResponse& in) {
    MemoryStats s;
    s.ksm.available = in.ksm_available();
    s.ksm.settings.run = in.ksm_running() ? 1 : 0;
    s.ksm.pages_shared = in.pages_shared();
    s.ksm.pages_sharing = in.pages_sharing();
    s.ksm.page_size = in.page_size();
    s.ksm.settings.pages_to_scan = in.pages_to_scan();
    s.ksm.settings.sleep_ms = in.sleep_ms();
    s.tuned_by_forkyd = in.tuned_by_forkyd();
    for (const auto& o : in.families()) {
        FamilyMemory f;
        f.root = o.root();
        f.vms = all(o.vms());
        f.rss_bytes = o.rss_bytes();
        f.merging_pages = o.merging_pages();
        f.saved_bytes = o.saved_bytes();
        s.families.push_back(std::move(f));
    }
    return s;
}

void fill(v1::WarmPool& out, const WarmPool& p) {
    out.set_name(p.name);
    out.set_source(p.source);
    out.set_size(p.size);
    out.set_host(p.host);
    out.set_spread(p.spread);
    out.set_created_at(p.created_at);
    out.set_declared(p.declared);
}

WarmPool warm_pool_from(const v1::WarmPool& in) {
    WarmPool p;
    p.name = in.name();
    p.source = in.source();
    p.size = in.size();
    p.host = in.host();
    p.spread = in.spread();
    p.created_at = in.created_at();
    p.declared = in.declared();
    return p;
}

void fill(v1::PoolRefillResponse& out, const RefillResult& r) {
    out.set_ready_before(r.ready_before);
    add_all(out.mutable_made(), r.made);
    add_all(out.mutable_removed(), r.removed);
    add_all(out.mutable_placement(), r.placement);
}

RefillResult refill_from(const v1::PoolRefillResponse& in) {
    RefillResult r;
    r.ready_before = in.ready_before();
    r.made = all(in.made());
    r.removed = all(in.removed());
    r.placement = all(in.placement());
    return r;
}

void fill(v1::PoolView& out, const WarmPoolView& v) {
    fill(*out.mutable_pool(), v.pool);
    out.set_host(v.host_name);
    for (const auto& c : v.ready) {
        auto* r = out.add_ready();
        r->set_name(c.name);
        r->set_host(c.host_name);
        r->set_rss_bytes(c.rss_bytes);
    }
    out.set_memory_bytes(v.memory_bytes);
    out.set_held(v.held);
    out.set_stale(v.stale);
    out.set_snapshot_missing(v.snapshot_missing);
}

WarmPoolView pool_view_from(const v1::PoolView& in) {
    WarmPoolView v;
    v.pool = warm_pool_from(in.pool());
    v.host_name = in.host();
    for (const auto& c : in.ready())
        v.ready.push_back({nullptr, c.host(), c.name(), c.rss_bytes()});
    v.memory_bytes = in.memory_bytes();
    v.held = in.held();
    v.stale = in.stale();
    v.snapshot_missing = in.snapshot_missing();
    return v;
}

void fill(v1::AcquireResponse& out, const Acquired& a) {
    out.set_name(a.name);
    out.set_host(a.host_name);
    add_ports(out.mutable_ports(), a.ports);
    if (a.clock_not_set)
        out.set_clock_not_set(*a.clock_not_set);
}

Acquired acquired_from(const v1::AcquireResponse& in) {
    Acquired a;
    a.name = in.name();
    a.host_name = in.host();
    a.ports = ports_of(in.ports());
    if (in.has_clock_not_set())
        a.clock_not_set = in.clock_not_set();
    return a;
}

} // namespace forky::api

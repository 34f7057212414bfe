// GPUs of a host, from libvirt's node-device API (virConnectListAllNodeDevices): every
// PCI display or 3D controller (class 0x03xxxx) with its vendor and product, the driver
// bound to it, its IOMMU group and the group's other members, its NUMA node, the mediated
// device types it offers, and which domain holds it now. Read-only: works on a remote host
// through its URI, and changes nothing on any device.
#pragma once

#include "host.hpp"
#include "operation.hpp"
#include "spec.hpp"
#include "vm_lock.hpp"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forky {

struct MdevType {
    std::string id;   // "nvidia-593"
    std::string name; // "GRID T4-2Q"
    unsigned available = 0;
};

struct Gpu {
    std::string device;              // libvirt's node-device name, "pci_0000_65_00_0"
    std::string address;             // "0000:65:00.0"
    std::string pci_class;           // "0x030200"
    std::string vendor_id, vendor;   // "0x10de", "NVIDIA Corporation"
    std::string product_id, product; // "0x2330", "GH100 [H100 SXM5 80GB]"
    std::string driver;              // "vfio-pci", "nvidia"; empty when libvirt does not say
    std::optional<unsigned> iommu_group;
    std::vector<std::string> group_members; // the group's other PCI functions
    std::optional<int> numa_node;
    std::vector<MdevType> mdev_types;
    std::vector<std::string> held_by; // domains whose XML names it (a hostdev), running or not
};

// Any PCI function of the host, as far as GPU passthrough cares: the members of a GPU's
// IOMMU group must all be free for VFIO to take the group.
struct PciFunction {
    std::string address;
    std::string pci_class;
    std::string driver;
    std::optional<unsigned> iommu_group;
    std::vector<std::string> held_by;
};

// A mediated device that exists on the host (a slice of a GPU).
struct Mdev {
    std::string uuid;
    std::string type;   // "nvidia-593"
    std::string parent; // the GPU's PCI address
    std::vector<std::string> held_by;
};

struct GpuInventory {
    std::vector<Gpu> gpus;                        // by address
    std::map<std::string, PciFunction> functions; // every PCI function, by address
    std::vector<Mdev> mdevs;
    const Gpu* gpu(const std::string& address) const;
};

// A GPU as a domain holds it: a PCI function passed through whole, or a mediated device.
struct GpuAssignment {
    enum class Kind { pci, mdev };
    Kind kind = Kind::pci;
    std::string address;   // pci: the function; mdev: the GPU it is a slice of
    std::string mdev_type; // mdev
    std::string mdev_uuid; // mdev (made when it is created)
    bool operator==(const GpuAssignment&) const = default;
};
std::string describe(const GpuAssignment& a); // "0000:65:00.0", "mdev nvidia-593 on 0000:65:00.0"

// The <hostdev> element for an assignment: managed='yes' for a PCI function (libvirt
// detaches it from the host's driver and gives it back), model='vfio-pci' for an mdev.
std::string hostdev_xml(const GpuAssignment& a);

// The GPUs a domain's XML passes through: its PCI hostdevs and mdev hostdevs (mdevs
// completed from `inventory` when given: type and parent).
std::vector<GpuAssignment> domain_gpus(std::string_view domain_xml,
                                       const GpuInventory* inventory = nullptr);

// Whether the host can pass devices through, from libvirt's domain capabilities
// (virConnectGetDomainCapabilities): PCI functions need VFIO among the PCI backends (no
// IOMMU or no vfio module: none listed), mdevs need 'mdev' among the host device kinds.
// ConflictError naming what is missing, before anything changes.
void require_passthrough(std::string_view domcaps_xml, bool pci, bool mdev,
                         const std::string& where);

// Picks what `wanted` asks for from `inventory`, for domain `self` (what it holds itself
// counts as free): a named function must exist, be held by no other domain, and its IOMMU
// group's other members must be free (held by nobody, bound to no host driver but vfio-pci
// or pci-stub, or named by the same spec); `vendor` takes the first free GPUs of that
// vendor; `mdev_type` a GPU offering that type with an instance available. `reserved`
// lists what other requests of the same pick (children of one fork) took already.
// ConflictError naming what is missing, held or not free, and where.
std::vector<GpuAssignment> pick_gpus(const GpuInventory& inventory,
                                     const std::vector<GpuSpec>& wanted, const std::string& self,
                                     const std::string& where,
                                     const std::vector<GpuAssignment>& reserved = {});

// What each child of a fork gets in place of its parent's GPUs (policies/gpu.yaml).
struct GpuPolicy {
    enum class Children { none, exclusive, mdev };
    Children children = Children::none;
    // For `mdev` children of a parent that holds a whole GPU: the type to slice.
    std::string mdev_type;
    std::string source; // the file, for messages; empty: the default (none)
};
inline constexpr const char* default_gpu_policy_file = "/etc/forky/policies/gpu.yaml";
// Reads a GPU policy (strict, like the specs): `children: none | exclusive | mdev` and
// `mdev_type: TYPE`. SpecError naming file, line and key.
GpuPolicy load_gpu_policy(const std::filesystem::path& file);
GpuPolicy parse_gpu_policy(const std::string& text, const std::filesystem::path& file);

// Per child (count of them), the GPUs it gets for the parent's `parent_gpus` under
// `policy`: none; for each GPU a free one of the same model (vendor and product); or for
// each a new mdev of the same type. ConflictError naming what is missing, before anything
// changes.
std::vector<std::vector<GpuAssignment>>
pick_child_gpus(const GpuInventory& inventory, const std::vector<GpuAssignment>& parent_gpus,
                const GpuPolicy& policy, unsigned count, const std::string& where);

// A fork's GPUs: the parent's (from its XML, completed from the inventory) and, per child,
// what the policy gives it (mdevs with the UUIDs they will be made under). Checks libvirt's
// domain capabilities for what the children get. ConflictError before anything changes.
struct ChildGpuPlan {
    std::vector<GpuAssignment> parent;
    std::vector<std::vector<GpuAssignment>> children;
};
class GpuDevices;
ChildGpuPlan plan_child_gpus(Host& host, GpuDevices& devices, std::string_view parent_xml,
                             const GpuPolicy& policy, unsigned count);

// The device changes GPU passthrough makes, behind one seam: libvirt's (below) or a
// test's fake (libvirt's test driver has none of these calls).
class GpuDevices {
public:
    virtual ~GpuDevices() = default;
    // virConnectGetDomainCapabilities for domains of type `virt_type` ("kvm", "qemu").
    virtual std::string domain_capabilities(const std::string& virt_type) = 0;
    // A new mdev of `type` on GPU `parent` (its PCI address) under `uuid`.
    virtual void create_mdev(const std::string& parent, const std::string& type,
                             const std::string& uuid) = 0;
    // Removes the mdev of `uuid`; one already gone is fine.
    virtual void remove_mdev(const std::string& uuid) = 0;
    // Hot-plugs `hostdev` into a running domain (and its definition, `persistent`).
    virtual void attach(virDomainPtr dom, const std::string& hostdev, bool persistent) = 0;
    // Unplugs it from the running domain and waits until the guest let it go.
    virtual void detach(virDomainPtr dom, const std::string& hostdev) = 0;
};
std::unique_ptr<GpuDevices> libvirt_gpu_devices(Host& host);
// The operation's seam if it has one, else libvirt's.
std::shared_ptr<GpuDevices> gpu_devices(Host& host, const OpContext& ctx);

// Around a cut (a fork or snapshot of a VM whose spec allowed `gpu_fork: detach`): its
// GPUs unplugged from the running domain now, each unplug waited for, and plugged back
// when this ends, whatever happened in between (a failure to plug back is logged: the
// domain's definition still names the device, so its next start has it). `journal` (the
// operation's) records it, so gc attaches them again should the process die meanwhile.
class GpusDetached {
public:
    GpusDetached(std::shared_ptr<GpuDevices> devices, virDomainPtr dom, std::string name,
                 std::vector<GpuAssignment> gpus, VmLock* journal = nullptr);
    GpusDetached(const GpusDetached&) = delete;
    GpusDetached& operator=(const GpusDetached&) = delete;
    ~GpusDetached();
    // Plugs them back now; throws what libvirt said.
    void reattach();

private:
    std::shared_ptr<GpuDevices> devices_;
    virDomainPtr dom_;
    std::string name_;
    std::vector<GpuAssignment> gpus_;
    VmLock* journal_;
    std::size_t detached_ = 0;
};

// The refusal for a fork or snapshot of a VM with GPUs whose spec did not allow detaching
// them: ConflictError naming the devices and `gpu_fork: detach`. Nothing when it has none or
// allowed it.
void require_gpu_cut_allowed(const std::string& vm, bool allowed,
                             const std::vector<GpuAssignment>& gpus, const std::string& what);

// A new mdev for `a` (its parent GPU, type and UUID) made within `op`: journalled first (gc
// removes it should the process die), made, and removed again if the operation fails.
void make_mdev(Operation& op, const std::shared_ptr<GpuDevices>& devices, const GpuAssignment& a);

// Removes the mdevs of `uuids` that still exist and that no domain holds (`dry_run`: only
// says which it would); `held` lists the others, each with a domain holding it.
struct MdevRemoval {
    std::vector<std::string> removed;
    std::vector<std::pair<std::string, std::string>> held; // uuid, a domain holding it
};
MdevRemoval remove_unheld_mdevs(Host& host, const std::vector<std::string>& uuids,
                                bool dry_run = false);

// Holds the host's GPU lock from a pick until the domains that got the devices name them
// in their XML (and `held_by` shows it), so concurrent ups and forks never pick the same
// device: a lock volume in the pool, as the VMs' own.
inline constexpr const char* gpus_lock_name = "forky-gpus";
VmLock lock_gpus(Host& host, const CancelToken& cancel);

// "0000:65:00.0" from libvirt's <address domain='0x0000' bus='0x65' slot='0x00' function='0x0'/>
// values (hex or decimal, as libvirt writes them).
std::string pci_address(unsigned domain, unsigned bus, unsigned slot, unsigned function);

// The GPU a node device's XML describes; nullopt for anything else (not PCI, or not a
// display/3D controller). Throws Error on XML that does not parse.
std::optional<Gpu> parse_gpu_device(std::string_view xml);

// PCI addresses of the host devices a domain's XML passes through (<hostdev type='pci'>).
std::vector<std::string> domain_pci_hostdevs(std::string_view domain_xml);

// Every GPU of the host, by PCI address, each with the domains that hold it; every PCI
// function and every mdev.
GpuInventory read_inventory(Host& host);
std::vector<Gpu> list_gpus(Host& host);

// Parses an mdev node device's XML; nullopt for anything else.
std::optional<Mdev> parse_mdev_device(std::string_view xml);

} // namespace forky

// What forky does to VMs: up, list, stop, remove, read the console. Each operation
// that changes the world is a Transaction: on failure nothing is left behind.
#pragma once

#include "cancel.hpp"
#include "host.hpp"
#include "lineage.hpp"
#include "operation.hpp"
#include "spec.hpp"

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace forky {

struct VmInfo {
    std::string name;
    std::string uuid;
    VmState state = VmState::unknown;
    std::string domain_type; // kvm or qemu
    std::uint64_t memory_bytes = 0;
    unsigned vcpus = 0;
    std::string genid; // the VM generation ID it runs under (the live XML's); may be empty
    Lineage lineage;
};

struct UpOptions {
    std::string name; // overrides the spec's name when set
    bool start = true;
    // Where the spec may take images from (the administrator's image_dirs); empty: the
    // spec's folder and the pool's (images.hpp).
    std::vector<std::filesystem::path> image_dirs;
    OpContext ctx; // Ctrl-C: undo and throw InterruptedError; the test seam
    // Upload the spec's kernel, initrd and disk bases into the host's pool first (once:
    // reused while unchanged), so the host needs none of this machine's files: what
    // `forky up` does with a host inventory.
    bool upload = false;
    ProgressFn progress; // uploads
};

// Checks every file the spec names, base chains included (images.hpp), creates the VM's
// overlays and console log in the pool, defines the domain with forky's lineage metadata
// and starts it with its vCPUs paused; once the chains QEMU opened (the live XML) pass
// the same check, its vCPUs run. Returns the VM's name.
std::string vm_up(Host& host, const DomainSpec& spec, const UpOptions& options = {});

// The domain XML `vm_up` would define (the same checks first), its volumes at the paths
// they would have in the pool; makes nothing, starts nothing (forky up --print-xml).
std::string vm_up_xml(Host& host, const DomainSpec& spec, const UpOptions& options = {});

// forky's VMs on the host that keep their volumes in this Host's pool (domains that carry
// forky's metadata), sorted by name. NotFoundError when the pool does not exist.
std::vector<VmInfo> vm_list(Host& host);

// One VM; NotFoundError for an unknown name, ConflictError for a domain forky did not
// make.
VmInfo vm_info(Host& host, const std::string& name);

struct StopOptions {
    bool force = false;                                           // destroy at once
    std::chrono::milliseconds timeout = std::chrono::seconds(10); // for the ACPI shutdown
    std::chrono::milliseconds lock_wait = std::chrono::seconds(120);
    CancelToken cancel;
};
// Stops one of forky's VMs (a domain without forky's metadata, or of another pool, is
// refused), once any operation on it is over (its lock). Returns false when the VM was
// already stopped.
bool vm_stop(Host& host, const std::string& name, const StopOptions& options = {});

struct RemoveResult {
    std::vector<std::string> deleted; // volumes deleted
    std::vector<std::string> kept;    // own volumes kept: "name (needed by x)"
};
// Undefines the VM and deletes its own volumes, except any that another volume or
// domain still uses. A running VM is refused unless `force`. Waits for any operation on
// the VM (a fork that is still making it, say) to end first.
RemoveResult vm_remove(Host& host, const std::string& name, bool force = false,
                       const CancelToken& cancel = {});

// vm_remove of a running or stopped VM, only if `still` holds for its lineage read under its
// lock (the reaper: still expired, not pinned meanwhile), waiting at most `lock_wait` for
// the lock. nullopt when `still` said no; ConflictError when the VM is busy.
std::optional<RemoveResult> vm_remove_if(Host& host, const std::string& name,
                                         const std::function<bool(const Lineage&)>& still,
                                         std::chrono::milliseconds lock_wait,
                                         const CancelToken& cancel = {});

// The lineage of a domain forky made; ConflictError "...; <what> it" for any other domain
// ("not stopping": virsh stops it, forky does not).
Lineage require_forky_vm(virDomainPtr dom, const std::string& name, const std::string& what);

// Pins a VM (`pinned`: it outlives its TTL; forkyd's reaper leaves it) or unpins it, under
// its lock. Returns whether anything changed.
bool vm_pin(Host& host, const std::string& name, bool pinned, const CancelToken& cancel = {});

// The console log from `offset` on. Throws ConflictError when the VM has no log.
VolumeChunk vm_console(Host& host, const std::string& name, std::uint64_t offset);

// forky's names for a VM's own volumes (gc's naming rule matches these).
std::string disk_volume_name(const std::string& vm, const std::string& target);
std::string console_volume_name(const std::string& vm);

// A VM's volumes live in the pool its lineage names; throws ConflictError unless this
// Host is on that pool.
void require_same_pool(const Host& host, const std::string& name, const Lineage& lineage);

// Stops and undefines a domain, persistent or transient; an absent one is fine. With
// `uuid`, only the domain of that UUID: a name may have passed to another VM meanwhile.
// Returns whether this call removed it (false: absent, another VM's, or removed meanwhile
// by someone else).
bool remove_domain(Host& host, const std::string& name, const std::string& uuid = {});

// The UUID of a domain as a string.
std::string domain_uuid(virDomainPtr dom);

// Replaces a domain's lineage: in its live and persistent definitions, or, `live_only`,
// in the running instance alone (what lasts only as long as it runs, like host ports).
void write_lineage(virDomainPtr dom, const std::string& name, const Lineage& lineage,
                   bool live_only = false);

// Lineage of a domain, or nullopt for a domain that forky did not make.
std::optional<Lineage> read_lineage(virDomainPtr dom);

} // namespace forky

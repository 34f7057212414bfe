// One forky operation that changes the world (up, fork, snapshot, revert, squash, ...):
// the VM's lock and journal, a transaction, the cancellation and the test seam. Each step
// that makes something is one call that journals it, makes it and registers its undo, so
// no undo can be forgotten; commit() writes the journal's commit point, then drops the
// undos and releases the locks.
#pragma once

#include "cancel.hpp"
#include "fault.hpp"
#include "host.hpp"
#include "transaction.hpp"
#include "vm_lock.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace forky {

class GpuDevices;

// What every operation is run with: Ctrl-C and the test seams.
struct OpContext {
    CancelToken cancel;
    Faults faults;
    // Device changes for GPU passthrough (gpus.hpp); null: libvirt's.
    std::shared_ptr<GpuDevices> gpu_devices;
};

class Operation {
public:
    // Takes the lock of `vm` (waiting up to `wait`) for an operation of kind `kind`.
    Operation(Host& host, const std::string& vm, const std::string& kind, const OpContext& ctx,
              std::chrono::milliseconds wait);
    Operation(const Operation&) = delete;
    Operation& operator=(const Operation&) = delete;
    ~Operation() = default; // an operation not committed is undone, then unlocked

    Host& host() { return *host_; }
    VmLock& lock() { return lock_; }
    const std::string& id() const { return lock_.journal().op; }
    const CancelToken& cancel() const { return ctx_.cancel; }

    // Between steps: throws InterruptedError on Ctrl-C, and runs the test seam.
    void step(const char* name, unsigned index = 0);

    // Journals, creates and registers the deletion of a volume; returns its path.
    std::string create_overlay(const std::string& name, const std::string& backing,
                               DiskFormat backing_format);
    std::string create_raw(const std::string& name, std::uint64_t capacity = 0);
    // Journals volume `name` of `from` (another host) and copies it here under the same
    // name (Host::ship_volume); registers its deletion.
    ShipResult ship_in(Host& from, const std::string& name, const ProgressFn& progress = {});
    // Journals volume `name` and makes it a flattened copy of volume `from`
    // (Host::flatten_volume); registers its deletion.
    void flatten(const std::string& name, const std::string& from);
    // Journals volume `name` and uploads local file `file` into it (Host::upload_file);
    // registers its deletion.
    ShipResult upload(const std::string& file, const std::string& name,
                      const ProgressFn& progress = {});
    // Journals a domain about to be made (name and UUID) and registers its removal.
    void expect_domain(const std::string& name, const std::string& uuid);
    // Any other undo.
    void on_undo(std::string what, std::function<void()> undo);

    // Holds `lock` (a name reserved for a child) until the operation ends.
    void hold(VmLock lock) { held_.push_back(std::move(lock)); }

    // Steps whose results are kept once a later step succeeds, even if the operation
    // fails after it (a snapshot moves the VM onto new layers for good): undos registered
    // while a Scope lives run if it ends without keep(), and are dropped by keep().
    class Scope {
    public:
        explicit Scope(Operation& op);
        Scope(const Scope&) = delete;
        Scope& operator=(const Scope&) = delete;
        ~Scope();
        void keep() { txn_.commit(); }

    private:
        Operation& op_;
        Transaction txn_;
    };

    // The commit point: "committed" in the journal (so gc never undoes it), then the
    // undos are dropped and the locks released. Throws, and undoes, if the journal
    // cannot be written (libvirt gone).
    void commit();

private:
    Host* host_;
    OpContext ctx_;
    VmLock lock_;
    std::vector<VmLock> held_; // released after the undo, so nobody takes a name mid-undo
    Transaction txn_;          // declared last: undone first
    std::vector<Transaction*> undo_to_{&txn_}; // the innermost scope's
};

} // namespace forky

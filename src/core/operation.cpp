#include "operation.hpp"

#include "log.hpp"
#include "vm.hpp"

namespace forky {

Operation::Operation(Host& host, const std::string& vm, const std::string& kind,
                     const OpContext& ctx, std::chrono::milliseconds wait)
    : host_(&host), ctx_(ctx), lock_(VmLock::acquire(host, vm, kind, wait, ctx.cancel)) {
    txn_.before_rollback([this] { host_->reconnect_if_lost(); });
    txn_.if_rollback_fails([this] {
        lock_.abandon(); // gc finishes what the undo could not
        logger("op")->warn("Some steps could not be undone; run 'forky gc' to finish (it "
                           "undoes what the journal in the pool names)");
    });
}

void Operation::step(const char* name, unsigned index) {
    ctx_.cancel.check("forky " + lock_.journal().operation);
    ctx_.faults.at(name, index, ctx_.cancel);
}

std::string Operation::create_overlay(const std::string& name, const std::string& backing,
                                      DiskFormat backing_format) {
    lock_.record_volume(name);
    StorageVolPtr vol = host_->create_overlay(name, backing, backing_format);
    undo_to_.back()->on_rollback("delete volume '" + name + "'",
                                 [this, name] { host_->delete_volume(name); });
    return host_->volume_path(vol.get());
}

std::string Operation::create_raw(const std::string& name, std::uint64_t capacity) {
    lock_.record_volume(name);
    StorageVolPtr vol = host_->create_raw_volume(name, capacity);
    undo_to_.back()->on_rollback("delete volume '" + name + "'",
                                 [this, name] { host_->delete_volume(name); });
    return host_->volume_path(vol.get());
}

void Operation::flatten(const std::string& name, const std::string& from) {
    lock_.record_volume(name);
    host_->flatten_volume(from, name);
    undo_to_.back()->on_rollback("delete volume '" + name + "'",
                                 [this, name] { host_->delete_volume(name); });
}

ShipResult Operation::upload(const std::string& file, const std::string& name,
                             const ProgressFn& progress) {
    lock_.record_volume(name);
    ShipResult r = host_->upload_file(file, name, progress);
    undo_to_.back()->on_rollback("delete volume '" + name + "'",
                                 [this, name] { host_->delete_volume(name); });
    return r;
}

ShipResult Operation::ship_in(Host& from, const std::string& name, const ProgressFn& progress) {
    lock_.record_volume(name);
    ShipResult r = from.ship_volume(name, *host_, name, progress);
    undo_to_.back()->on_rollback("delete volume '" + name + "'",
                                 [this, name] { host_->delete_volume(name); });
    return r;
}

void Operation::expect_domain(const std::string& name, const std::string& uuid) {
    lock_.record_child(name, uuid);
    undo_to_.back()->on_rollback("remove VM '" + name + "'",
                                 [this, name, uuid] { remove_domain(*host_, name, uuid); });
}

void Operation::on_undo(std::string what, std::function<void()> undo) {
    undo_to_.back()->on_rollback(std::move(what), std::move(undo));
}

Operation::Scope::Scope(Operation& op) : op_(op) {
    txn_.before_rollback([&op] { op.host_->reconnect_if_lost(); });
    txn_.if_rollback_fails([&op] { op.lock_.abandon(); });
    op_.undo_to_.push_back(&txn_);
}

Operation::Scope::~Scope() {
    op_.undo_to_.pop_back(); // txn_ then undoes, unless kept
}

void Operation::commit() {
    lock_.record_committed();
    txn_.commit();
    lock_.release();
    held_.clear();
}

} // namespace forky

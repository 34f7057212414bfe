// A fork point reaching another host of the fleet: its memory image, its frozen layers and
// every layer below them, streamed through libvirt (download on one host, upload on the
// other, in bounded memory, holes as holes), each checked by SHA-256 on arrival, each
// qcow2 layer made to name its backing file's copy there. A copy of the fork point's
// record follows them (same id), so the next fork of it to that host ships nothing.
#pragma once

#include "cancel.hpp"
#include "fork_point.hpp"
#include "operation.hpp"
#include "vm_lock.hpp"

#include <cstdint>
#include <functional>
#include <string>

namespace forky {

// An uploaded or shipped image is named by its content, 'img-<sha256>[.ext]', and marked
// whole by a small volume beside it, '<name>.ok', holding that SHA-256, once it arrived
// and was verified. image_sha: the SHA-256 a name says, empty for other names.
std::string image_sha(const std::string& name);
bool image_complete(Host& host, const std::string& name);
// Writes image `name`'s mark (replacing a stale one): it arrived whole and was verified.
void mark_image_whole(Host& host, const std::string& name);
// Complete, and its content read back has the SHA-256 its name says.
bool image_verified(Host& host, const std::string& name);

// Uploads and ships of images into a host's pool take this lock ('forky-images.lock',
// gc's like any lock); no VM may take the name.
inline constexpr const char* images_lock_name = "forky-images";
VmLock lock_images(Host& host, const CancelToken& cancel);

struct ShipStats {
    std::uint64_t bytes_sent = 0; // data sent (holes not counted)
    unsigned volumes_shipped = 0;
    unsigned volumes_reused = 0; // there already, known by id or content
    double ms = 0;
};

// Makes fork point `point` of host `from` (named `from_name` in the inventory) available
// on `to`'s host, inside operation `to` (which journals every volume it makes there, so a
// failure or a kill leaves nothing a gc there does not remove). Returns the copy's record.
// A volume there already is reused only when known to be the same: part of a copy of the
// same fork point (its id), or with the same SHA-256 as recorded on arrival; a volume of
// the same name that is not is a ConflictError (never overwritten).
ForkPoint ship_fork_point(Host& from, const std::string& from_name, const ForkPoint& point,
                          Operation& to, const std::string& to_name, ShipStats& stats,
                          const ProgressFn& progress = {});

struct UploadStats {
    std::uint64_t bytes_sent = 0;
    unsigned files_uploaded = 0;
    unsigned files_reused = 0; // there already (the same SHA-256)
};

// The spec with its kernel, initrd and disk bases in `host`'s pool: each file uploaded
// through the storage API as 'img-<sha256>.<ext>' unless a verified copy is there already
// (so a spec written on a laptop works against a remote host; the same file is uploaded
// once). A copy is verified on arrival and marked complete by a small volume beside it
// ('<name>.ok'); one without its mark (a killed upload) is replaced. A base image with a
// backing file of its own is refused (flatten it first). `checked`: the spec as
// check_spec_images returned it.
// `journal` is told each volume before it is made (an operation's journal: gc leaves a
// live operation's half-uploaded image alone).
DomainSpec upload_spec_files(Host& host, const DomainSpec& checked, UploadStats& stats,
                             const std::function<void(const std::string&)>& journal,
                             const ProgressFn& progress = {}, const CancelToken& cancel = {});

} // namespace forky

// The few bytes of a qcow2 header forky edits itself: the backing file's name. A layer
// shipped to another host names its backing file by the path it had where it was made;
// there, that path is another pool's. The name lives in the image's first cluster, after
// the header and its extensions (QEMU refuses a name beyond it), so a longer one fits as
// long as the first cluster has room.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace forky {

// One write into the image: `bytes` at `offset`.
struct ByteEdit {
    std::uint64_t offset = 0;
    std::string bytes;
};

// The backing file name that `header` (the image's first bytes, at least up to the end
// of the name) records; empty for none. Throws Error for what is not a qcow2 header.
std::string qcow2_backing_name(std::string_view header);

// The writes that make the image whose first bytes are `header` name `backing` as its
// backing file: the name (the old one's remaining bytes zeroed) and its length in the
// header. `header` must hold the whole first cluster (qcow2_first_cluster_size). Throws
// Error when the image has no backing file or the name does not fit the first cluster.
std::vector<ByteEdit> qcow2_set_backing(std::string_view header, const std::string& backing);

// What an image whose first bytes are `header` (at least 104) is, as a whole disk: its
// virtual size, whether it names a backing file (`backing_offset` non-zero), an external
// data file (incompatible feature bit 2 of a version 3 image). Throws Error for what is not
// a qcow2 header.
struct Qcow2Facts {
    std::uint64_t virtual_size = 0;
    bool has_backing = false;
    bool external_data = false;
};
Qcow2Facts qcow2_facts(std::string_view header);

// The size of the first cluster, from the header's first 24 bytes.
std::uint64_t qcow2_first_cluster_size(std::string_view header);

} // namespace forky

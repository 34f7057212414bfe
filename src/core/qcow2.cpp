#include "qcow2.hpp"

#include "errors.hpp"

namespace forky {

namespace {

std::uint64_t be(std::string_view s, std::size_t at, std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i)
        v = (v << 8) | static_cast<unsigned char>(s[at + i]);
    return v;
}

std::string to_be32(std::uint32_t v) {
    std::string s(4, '\0');
    for (int i = 3; i >= 0; --i) {
        s[static_cast<std::size_t>(i)] = static_cast<char>(v & 0xff);
        v >>= 8;
    }
    return s;
}

void require_qcow2(std::string_view h) {
    if (h.size() < 72 || h.substr(0, 4) != std::string_view("QFI\xfb", 4))
        throw Error("Not a qcow2 image (no qcow2 header)");
    const auto version = be(h, 4, 4);
    if (version != 2 && version != 3)
        throw Error("A qcow2 image of version " + std::to_string(version) +
                    ", which forky does not edit");
}

} // namespace

std::uint64_t qcow2_first_cluster_size(std::string_view h) {
    require_qcow2(h);
    const auto bits = be(h, 20, 4);
    if (bits < 9 || bits > 21)
        throw Error("A qcow2 image with cluster_bits " + std::to_string(bits));
    return std::uint64_t{1} << bits;
}

Qcow2Facts qcow2_facts(std::string_view h) {
    require_qcow2(h);
    Qcow2Facts f;
    f.virtual_size = be(h, 24, 8);
    f.has_backing = be(h, 8, 8) != 0;
    if (be(h, 4, 4) == 3) {
        if (h.size() < 80)
            throw Error("The qcow2 header was read short of its feature bits");
        f.external_data = (be(h, 72, 8) & 0x4) != 0;
    }
    return f;
}

std::string qcow2_backing_name(std::string_view h) {
    require_qcow2(h);
    const auto offset = be(h, 8, 8);
    const auto size = be(h, 16, 4);
    if (offset == 0 || size == 0)
        return "";
    if (offset + size > h.size())
        throw Error("The qcow2 header's backing file name lies beyond the bytes read");
    return std::string(h.substr(offset, size));
}

std::vector<ByteEdit> qcow2_set_backing(std::string_view h, const std::string& backing) {
    const std::uint64_t cluster = qcow2_first_cluster_size(h);
    if (h.size() < cluster)
        throw Error("The qcow2 header was read short of its first cluster");
    const auto offset = be(h, 8, 8);
    const auto old_size = be(h, 16, 4);
    if (offset == 0 || old_size == 0)
        throw Error("The qcow2 image has no backing file to rename");
    if (backing.empty() || backing.find('\0') != std::string::npos)
        throw Error("A backing file name must be a non-empty path");
    if (offset + backing.size() > cluster)
        throw Error("The backing file name '" + backing + "' does not fit the image's first " +
                    "cluster (" + std::to_string(cluster - offset) + " bytes there)");
    // Past the old name, up to the new one's end: free space of the first cluster, zeros.
    for (std::uint64_t i = offset + old_size; i < offset + backing.size(); ++i)
        if (h[i] != '\0')
            throw Error("The qcow2 image keeps data right after its backing file name; forky "
                        "does not rename it to a longer one");
    std::string name = backing;
    if (old_size > name.size())
        name.append(old_size - name.size(), '\0');
    return {{offset, name}, {16, to_be32(static_cast<std::uint32_t>(backing.size()))}};
}

} // namespace forky

// libvirt's QEMU save image, which is also what an external memory snapshot writes:
//   "LibvirtQemudSave", u32 version (2), data_len, was_running, format, cookieOffset,
//   14 unused u32 (92 bytes), then data_len bytes: the domain XML + NUL, the <cookie>
//   + NUL at cookieOffset, zero padding; then QEMU's migration stream.
// libvirt refuses to restore an image under a new name or UUID, so forky sets the XML in
// the header per child; the migration stream after it is never touched.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace forky {

inline constexpr std::size_t save_header_size = 92;

struct SaveImageHeader {
    std::uint32_t version = 0;
    std::uint32_t data_len = 0;
    std::uint32_t was_running = 0;
    std::uint32_t format = 0; // 0 = raw; compressed images are refused
    std::string xml;
    std::string cookie;

    // Bytes the header occupies at the start of the image (fixed part + data).
    std::size_t size() const { return save_header_size + data_len; }
};

// Parses the first bytes of an image: at least save_header_size to learn data_len, and
// save_header_size + data_len to read the XML. Throws Error on anything but a complete,
// uncompressed version-2 image.
SaveImageHeader parse_save_header(std::string_view bytes);

// data_len from the fixed part alone (the first save_header_size bytes).
std::uint32_t save_header_data_len(std::string_view fixed_part);

// The same header with `xml` in place of the original's: exactly header.size() bytes,
// so writing it over the image leaves the migration stream where it was. Throws Error
// when the XML does not fit in data_len.
std::string encode_save_header(const SaveImageHeader& header, std::string_view xml);

} // namespace forky

#include "save_image.hpp"

#include "errors.hpp"

#include <cstring>

namespace forky {

namespace {

constexpr std::string_view magic_complete = "LibvirtQemudSave";
constexpr std::string_view magic_partial = "LibvirtQemudPart";
constexpr std::size_t field_offset = 16; // after the magic
constexpr std::uint32_t supported_version = 2;

std::uint32_t get_u32(std::string_view bytes, std::size_t index) {
    std::uint32_t v = 0;
    std::memcpy(&v, bytes.data() + field_offset + 4 * index, 4); // little-endian host
    return v;
}

void put_u32(std::string& bytes, std::size_t index, std::uint32_t v) {
    std::memcpy(bytes.data() + field_offset + 4 * index, &v, 4);
}

} // namespace

std::uint32_t save_header_data_len(std::string_view fixed) {
    if (fixed.size() < save_header_size)
        throw Error("Memory image is too short to hold a save header");
    if (fixed.substr(0, magic_complete.size()) == magic_partial)
        throw Error("Memory image is incomplete (libvirt did not finish writing it)");
    if (fixed.substr(0, magic_complete.size()) != magic_complete)
        throw Error("Not a libvirt memory image (bad magic)");
    return get_u32(fixed, 1);
}

SaveImageHeader parse_save_header(std::string_view bytes) {
    SaveImageHeader h;
    h.data_len = save_header_data_len(bytes);
    h.version = get_u32(bytes, 0);
    h.was_running = get_u32(bytes, 2);
    h.format = get_u32(bytes, 3);
    std::uint32_t cookie_offset = get_u32(bytes, 4);
    if (h.version != supported_version)
        throw Error("Unsupported memory image version " + std::to_string(h.version));
    if (h.format != 0)
        throw Error("Compressed memory images cannot be forked (save_image_format must be raw)");
    if (bytes.size() < h.size())
        throw Error("Memory image header is truncated");
    if (cookie_offset > h.data_len)
        throw Error("Memory image header has a bad cookie offset");
    std::string_view data = bytes.substr(save_header_size, h.data_len);
    std::string_view xml_part = data.substr(0, cookie_offset ? cookie_offset : data.size());
    h.xml = std::string(xml_part.substr(0, xml_part.find('\0')));
    if (cookie_offset) {
        std::string_view cookie = data.substr(cookie_offset);
        h.cookie = std::string(cookie.substr(0, cookie.find('\0')));
    }
    if (h.xml.empty())
        throw Error("Memory image header holds no domain XML");
    return h;
}

std::string encode_save_header(const SaveImageHeader& h, std::string_view xml) {
    std::size_t xml_len = xml.size() + 1;
    std::size_t cookie_len = h.cookie.empty() ? 0 : h.cookie.size() + 1;
    if (xml_len + cookie_len > h.data_len)
        throw Error("The child's domain XML (" + std::to_string(xml_len) +
                    " bytes) does not fit in the memory image header (" +
                    std::to_string(h.data_len) + " bytes)");
    std::string out(h.size(), '\0');
    std::memcpy(out.data(), magic_complete.data(), magic_complete.size());
    put_u32(out, 0, h.version);
    put_u32(out, 1, h.data_len);
    put_u32(out, 2, h.was_running);
    put_u32(out, 3, h.format);
    put_u32(out, 4, cookie_len ? static_cast<std::uint32_t>(xml_len) : 0);
    std::memcpy(out.data() + save_header_size, xml.data(), xml.size());
    if (cookie_len)
        std::memcpy(out.data() + save_header_size + xml_len, h.cookie.data(), h.cookie.size());
    return out;
}

} // namespace forky

// SHA-256 of volumes as they travel between hosts (GnuTLS, which libvirt itself uses): a
// shipped layer or memory image is verified on arrival, and an uploaded image is known by
// its content, never by its name alone.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace forky {

class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;

    void update(std::string_view data);
    // `n` zero bytes: a hole in a sparse volume reads as zeros, and hashes as them.
    void update_zeros(std::uint64_t n);
    // The digest as 64 lower-case hex digits; the object is spent afterwards.
    std::string hex();

private:
    struct State;
    std::unique_ptr<State> state_;
};

// SHA-256 of `data`, hex.
std::string sha256_hex(std::string_view data);

// SHA-256 of a file on this machine, hex; `progress` is told the bytes read so far.
std::string file_sha256(const std::filesystem::path& file,
                        const std::function<void(std::uint64_t)>& progress = {});

// Whether `text` looks like a SHA-256 digest as hex() writes it.
bool is_sha256_hex(std::string_view text);

} // namespace forky

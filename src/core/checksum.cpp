#include "checksum.hpp"

#include "errors.hpp"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <array>
#include <fstream>
#include <vector>

namespace forky {

struct Sha256::State {
    gnutls_hash_hd_t hd = nullptr;
};

Sha256::Sha256() : state_(std::make_unique<State>()) {
    if (gnutls_hash_init(&state_->hd, GNUTLS_DIG_SHA256) < 0)
        throw Error("GnuTLS cannot compute SHA-256 here");
}

Sha256::~Sha256() {
    if (state_->hd != nullptr)
        gnutls_hash_deinit(state_->hd, nullptr);
}

void Sha256::update(std::string_view data) {
    if (!data.empty())
        gnutls_hash(state_->hd, data.data(), data.size());
}

void Sha256::update_zeros(std::uint64_t n) {
    static const std::array<char, 1 << 16> zeros{};
    while (n > 0) {
        const std::size_t k = n < zeros.size() ? static_cast<std::size_t>(n) : zeros.size();
        gnutls_hash(state_->hd, zeros.data(), k);
        n -= k;
    }
}

std::string Sha256::hex() {
    std::array<unsigned char, 32> digest{};
    gnutls_hash_deinit(state_->hd, digest.data());
    state_->hd = nullptr;
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned char c : digest) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

std::string sha256_hex(std::string_view data) {
    Sha256 h;
    h.update(data);
    return h.hex();
}

bool is_sha256_hex(std::string_view text) {
    return text.size() == 64 &&
           text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

std::string file_sha256(const std::filesystem::path& file,
                        const std::function<void(std::uint64_t)>& progress) {
    std::ifstream in(file, std::ios::binary);
    if (!in)
        throw NotFoundError("Cannot read '" + file.string() + "'");
    Sha256 hash;
    std::vector<char> buf(1 << 20);
    std::uint64_t done = 0;
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        hash.update(std::string_view(buf.data(), static_cast<std::size_t>(in.gcount())));
        done += static_cast<std::uint64_t>(in.gcount());
        if (progress)
            progress(done);
    }
    if (in.bad())
        throw Error("Failed to read '" + file.string() + "'");
    return hash.hex();
}

} // namespace forky

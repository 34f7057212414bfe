// Strict reading of forky's YAML files (domain specs, the configuration): every message
// names the file, the line and the key. Keys given twice, unknown keys, wrong types and
// files that are not small regular files are errors, never guesses.
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <string>

namespace forky {

// The most a spec or configuration file may hold.
inline constexpr std::uintmax_t max_yaml_file_bytes = 1 << 20;

// The text of a small regular file. Throws SpecError for a device, a FIFO, a directory,
// a missing file or one over `max_bytes` (read no further than that).
std::string read_small_file(const std::filesystem::path& file,
                            std::uintmax_t max_bytes = max_yaml_file_bytes);

class YamlReader {
public:
    explicit YamlReader(std::filesystem::path file) : file_(std::move(file)) {}

    // Parses `text`; a key given twice anywhere is an error naming both lines.
    YAML::Node load(const std::string& text) const;

    [[noreturn]] void fail(const YAML::Node& at, const std::string& key,
                           const std::string& why) const;
    // "FILE:LINE: key 'KEY'" (line 1-based; 0 leaves it out).
    std::string where(int line, const std::string& key) const;

    void require_map(const YAML::Node& node, const std::string& key) const;
    // Every key of `map` must be one of `known`.
    void only_keys(const YAML::Node& map, const std::string& where,
                   std::initializer_list<const char*> known) const;
    std::string scalar(const YAML::Node& node, const std::string& key) const;
    // A duration longer than 0s ("90s", "15m", "2h", "1d").
    std::chrono::seconds duration(const YAML::Node& node, const std::string& key) const;
    // A whole number in decimal digits (YAML would read 010 as 8 and 0x10 as 16), between
    // `low` and `high`.
    unsigned whole_number(const YAML::Node& node, const std::string& key, unsigned low,
                          unsigned high) const;
    YAML::Node required(const YAML::Node& map, const char* name, const std::string& key) const;
    // A path relative to the file's folder made absolute (not resolved: links stay).
    std::filesystem::path path(const YAML::Node& node, const std::string& key) const;
    // path() of a regular file that exists.
    std::filesystem::path existing_file(const YAML::Node& node, const std::string& key) const;

    const std::filesystem::path& file() const { return file_; }

private:
    std::filesystem::path file_;
};

} // namespace forky

// forky's own settings, /etc/forky/forky.yaml (or --config FILE, $FORKY_CONFIG): what an
// administrator decides for everyone who runs forky on this machine. Validated as
// strictly as a spec. A missing file means the defaults.
//
//   image_dirs:            # folders specs may take kernels, initrds and base images from
//     - /srv/forky/images  # (default: the spec's own folder and forky's pool)
#pragma once

#include <filesystem>
#include <optional>
#include <vector>

namespace forky {

inline constexpr const char* default_config_path = "/etc/forky/forky.yaml";

struct Config {
    std::filesystem::path source; // empty when the defaults apply
    std::vector<std::filesystem::path> image_dirs;
};

// Throws SpecError (file, line, key) for a file that exists and is wrong, and, when the
// file was named explicitly (`required`: --config, $FORKY_CONFIG), for one that is
// missing: a typo there must not mean "no rules".
Config load_config(const std::filesystem::path& file, bool required = false);

// The text of one of forky's own settings files (this one, the host inventory): they
// decide what forky trusts and where it connects, so nobody else may have written the
// file or a folder on its way, and what is read is where the walk led. nullopt for a
// missing file unless `required`; `what` names it in messages ("forky's settings file",
// "the host inventory"), `named_by` says where a required one was named.
std::optional<std::string> read_trusted_file(const std::filesystem::path& file, bool required,
                                             const std::string& what, const std::string& named_by);

// Parses configuration text as if it came from `file`.
Config parse_config(const std::string& text, const std::filesystem::path& file);

} // namespace forky

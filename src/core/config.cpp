#include "config.hpp"

#include "errors.hpp"
#include "images.hpp"
#include "safe_path.hpp"
#include "yaml_reader.hpp"

namespace forky {

namespace fs = std::filesystem;

Config parse_config(const std::string& text, const fs::path& file) {
    YamlReader r(fs::absolute(file).lexically_normal());
    Config config;
    config.source = r.file();
    YAML::Node root = r.load(text);
    if (root.IsNull())
        return config; // an empty file: the defaults
    if (!root.IsMap())
        throw SpecError(r.file().string() + ": forky's configuration is a YAML mapping");
    r.only_keys(root, "", {"image_dirs"});
    if (YAML::Node dirs = root["image_dirs"]; dirs.IsDefined()) {
        if (!dirs.IsSequence() || dirs.size() == 0)
            r.fail(dirs, "image_dirs", "expected a list of folders, e.g. [/srv/forky/images]");
        for (std::size_t i = 0; i < dirs.size(); ++i) {
            const std::string key = "image_dirs[" + std::to_string(i) + "]";
            fs::path dir(r.scalar(dirs[i], key));
            if (!dir.is_absolute())
                r.fail(dirs[i], key, "'" + dir.string() + "' is not an absolute path");
            dir = dir.lexically_normal();
            if (dir == dir.root_path())
                r.fail(dirs[i], key, "'/' would allow every file; name the folders images are in");
            for (const auto& never : forbidden_image_dirs()) {
                auto rel = dir.lexically_relative(never);
                if (!rel.empty() && *rel.begin() != "..")
                    r.fail(dirs[i], key,
                           "'" + dir.string() + "' lies under " + never.string() +
                               ", where forky never reads images");
            }
            config.image_dirs.push_back(dir);
        }
    }
    return config;
}

std::optional<std::string> read_trusted_file(const fs::path& file, bool required,
                                             const std::string& what, const std::string& named_by) {
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(file, ec))) {
        if (required)
            throw SpecError(file.string() + ": " + what + " does not exist (named by " + named_by +
                            ")");
        return std::nullopt;
    }
    const PathWalk walk = walk_path(fs::absolute(file));
    if (walk.problem)
        throw SpecError(file.string() + ": forky does not trust " + what + ": " + *walk.problem);
    return read_small_file(walk.resolved);
}

Config load_config(const fs::path& file, bool required) {
    const auto text =
        read_trusted_file(file, required, "forky's settings file", "--config or FORKY_CONFIG");
    if (!text)
        return {};
    Config config = parse_config(*text, file);
    for (const auto& dir : config.image_dirs)
        if (walk_path(dir).resolved == "/")
            throw SpecError(file.string() + ": image_dirs entry '" + dir.string() +
                            "' leads to /, which would allow every file");
    return config;
}

} // namespace forky

#include "safe_path.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

namespace forky {

namespace fs = std::filesystem;

namespace {

std::string mode_of(const struct stat& st) {
    char mode[16];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return mode;
}

std::optional<std::string> check(const fs::path& path, int depth) {
    if (depth > 40)
        return "'" + path.string() + "' goes through too many links";
    fs::path p = path.lexically_normal();
    if (!p.has_filename() && p != p.root_path())
        p = p.parent_path(); // "dir/" is "dir"
    fs::path at = p.root_path();
    const auto last = std::prev(p.end());
    for (auto it = p.begin(); it != p.end(); ++it) {
        if (*it == p.root_path() || it->empty())
            continue;
        at /= *it;
        struct stat st {};
        if (::lstat(at.c_str(), &st) != 0)
            return std::nullopt; // does not exist (yet): the folders above were checked
        if (st.st_uid != 0 && st.st_uid != ::geteuid())
            return "'" + at.string() + "' belongs to uid " + std::to_string(st.st_uid) +
                   ", who could change it";
        if (S_ISLNK(st.st_mode)) {
            // The link is safe where it stands; where it leads must be too.
            std::error_code ec;
            fs::path target = fs::read_symlink(at, ec);
            if (ec)
                return "'" + at.string() + "' is a link that cannot be read";
            if (target.is_relative())
                target = at.parent_path() / target;
            if (auto why = check(target, depth + 1))
                return why;
            at = fs::weakly_canonical(at, ec);
            continue;
        }
        const bool is_last = it == last;
        if (S_ISDIR(st.st_mode) && !is_last) {
            if ((st.st_mode & 022) != 0 && (st.st_mode & S_ISVTX) == 0)
                return "others can write '" + at.string() + "' (mode " + mode_of(st) + ")";
            continue;
        }
        if ((st.st_mode & 022) != 0)
            return "others can write '" + at.string() + "' (mode " + mode_of(st) + ")";
        if (S_ISREG(st.st_mode) && st.st_nlink > 1)
            return "'" + at.string() + "' has " + std::to_string(st.st_nlink) +
                   " names (hard links), so forky cannot tell where else it lives";
    }
    return std::nullopt;
}

} // namespace

std::optional<std::string> others_could_change(const fs::path& path) {
    return check(path, 0);
}

} // namespace forky

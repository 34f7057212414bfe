#include "safe_path.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <deque>

namespace forky {

namespace fs = std::filesystem;

namespace {

std::string mode_of(const struct stat& st) {
    char mode[16];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return mode;
}

bool owner_ok(const struct stat& st) {
    return st.st_uid == 0 || st.st_uid == ::geteuid();
}

} // namespace

PathWalk walk_path(const fs::path& path, bool allow_links) {
    PathWalk w;
    if (!path.is_absolute()) {
        w.problem = "'" + path.string() + "' is not an absolute path";
        return w;
    }
    std::deque<fs::path> pending(path.begin(), path.end());
    fs::path at = "/";
    int links = 0;
    struct stat st {};
    ::lstat("/", &st);
    while (!pending.empty()) {
        const fs::path c = pending.front();
        pending.pop_front();
        const std::string s = c.string();
        if (s.empty() || s == "." || s == "/")
            continue;
        if (s == "..") {
            at = at.parent_path(); // `at` is real: its parent is where the kernel goes
            ::lstat(at.c_str(), &st);
            continue;
        }
        const fs::path next = at / c;
        if (::lstat(next.c_str(), &st) != 0) {
            // Missing from here on: what follows, as written.
            fs::path rest = next;
            for (const auto& r : pending)
                rest /= r;
            w.resolved = rest.lexically_normal();
            return w;
        }
        if (!owner_ok(st)) {
            w.problem = "'" + next.string() + "' belongs to uid " + std::to_string(st.st_uid) +
                        ", who could change it";
            return w;
        }
        if (S_ISLNK(st.st_mode)) {
            if (!allow_links) {
                w.problem = "'" + next.string() + "' is a symbolic link";
                return w;
            }
            if (++links > 40) {
                w.problem = "'" + path.string() + "' goes through too many links";
                return w;
            }
            std::error_code ec;
            const fs::path target = fs::read_symlink(next, ec);
            if (ec) {
                w.problem = "'" + next.string() + "' is a link that cannot be read";
                return w;
            }
            // The target's components come next, from / or from where the link stands.
            if (target.is_absolute())
                at = "/";
            std::deque<fs::path> front(target.begin(), target.end());
            pending.insert(pending.begin(), front.begin(), front.end());
            continue;
        }
        if (!pending.empty()) {
            if (!S_ISDIR(st.st_mode)) {
                w.problem = "'" + next.string() + "' is not a folder";
                return w;
            }
            if ((st.st_mode & 022) != 0 && (st.st_mode & S_ISVTX) == 0) {
                w.problem = "others can write '" + next.string() + "' (mode " + mode_of(st) + ")";
                return w;
            }
        }
        at = next;
    }
    w.resolved = at;
    w.exists = true;
    // `st` is the final component's.
    const bool dir = S_ISDIR(st.st_mode);
    if ((st.st_mode & 022) != 0 && !(dir && (st.st_mode & S_ISVTX) != 0))
        w.problem = "others can write '" + at.string() + "' (mode " + mode_of(st) + ")";
    else if (S_ISREG(st.st_mode) && st.st_nlink > 1)
        w.problem = "'" + at.string() + "' has " + std::to_string(st.st_nlink) +
                    " names (hard links), so forky cannot tell where else it lives";
    return w;
}

std::optional<std::string> others_could_change(const fs::path& path) {
    return walk_path(path).problem;
}

} // namespace forky

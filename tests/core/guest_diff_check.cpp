// guest_diff_check: builds two small ext4 images (mkfs.ext4 -d, no root tricks needed),
// converts them to qcow2, diffs them with guest_diff under emulation and checks that
// exactly the expected changes come back; a blank qcow2 must give a problem, not a throw.
// Needs libguestfs (its appliance takes ~30 s under emulation), mkfs.ext4 and qemu-img.
// Exit status: 0 when everything matched, 1 otherwise (a missing tool included).
#include "guest_diff.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <set>
#include <string>
#include <sys/stat.h>
#include <sys/time.h>

namespace fs = std::filesystem;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
    std::cout << (ok ? "ok   " : "FAIL ") << what << "\n";
    if (!ok)
        ++failures;
}

void run(const std::string& cmd) {
    if (std::system(cmd.c_str()) != 0) {
        std::cerr << "command failed: " << cmd << "\n";
        std::exit(1); // scripts/install-deps installs every tool used here
    }
}

void write(const fs::path& p, const std::string& data) {
    std::ofstream(p, std::ios::binary) << data;
}

// Same mtime on both sides, so mkfs -d copies identical metadata for unchanged files.
void set_mtime(const fs::path& p, time_t t) {
    const timeval tv[2] = {{t, 0}, {t, 0}};
    lutimes(p.c_str(), tv);
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v)
        s += (s.empty() ? "" : ",") + x;
    return s;
}

void print(const std::vector<forky::DiskDiff>& diffs) {
    for (const auto& d : diffs) {
        std::cout << "disk " << d.target << (d.problem.empty() ? "" : ": problem: " + d.problem)
                  << "\n";
        for (const auto& f : d.filesystems) {
            std::cout << "  filesystem partition '" << f.partition << "' " << f.fs_type << "\n";
            for (const auto& c : f.changes) {
                std::cout << "    " << forky::to_string(c.kind) << " " << c.path << " ["
                          << c.type_before << "->" << c.type_after << "] size "
                          << (c.size_before ? std::to_string(*c.size_before) : "-") << "->"
                          << (c.size_after ? std::to_string(*c.size_after) : "-");
                if (!c.what.empty())
                    std::cout << " what=" << join(c.what);
                if (c.first_difference)
                    std::cout << " first_difference=" << *c.first_difference;
                std::cout << "\n";
            }
        }
    }
}

} // namespace

int main() {
    const char* tmpdir = std::getenv("TMPDIR");
    std::string templ = std::string(tmpdir ? tmpdir : "/tmp") + "/guest-diff-check-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) {
        std::perror("mkdtemp");
        return 1;
    }
    const fs::path dir = templ;
    const fs::path a = dir / "a", b = dir / "b";
    fs::create_directories(a / "dir");
    fs::create_directories(b / "dir");
    const time_t t = 1700000000;

    // before: keep.txt, del.txt, mod.txt, dir/sub.txt, link -> keep.txt
    write(a / "keep.txt", "unchanged\n");
    write(a / "del.txt", "to be removed\n");
    write(a / "mod.txt", "hello");
    write(a / "dir/sub.txt", "sub\n");
    fs::create_symlink("keep.txt", a / "link");
    // after: keep.txt and dir/sub.txt identical, mod.txt changed at byte 4, new.bin added,
    // del.txt gone, link retargeted
    write(b / "keep.txt", "unchanged\n");
    write(b / "mod.txt", "hellO world");
    write(b / "dir/sub.txt", "sub\n");
    {
        std::mt19937_64 rng(42);
        std::string data(1 << 20, '\0');
        for (auto& ch : data)
            ch = static_cast<char>(rng());
        write(b / "new.bin", data);
    }
    fs::create_symlink("mod.txt", b / "link");
    for (const auto& root : {a, b})
        for (const auto& e : fs::recursive_directory_iterator(root))
            set_mtime(e.path(), t);
    set_mtime(a, t);
    set_mtime(b, t);
    set_mtime(a / "dir", t);
    set_mtime(b / "dir", t);

    const std::string d = dir.string();
    run("mkfs.ext4 -q -d " + a.string() + " " + d + "/a.raw 16M");
    run("mkfs.ext4 -q -d " + b.string() + " " + d + "/b.raw 16M");
    run("qemu-img convert -O qcow2 " + d + "/a.raw " + d + "/a.qcow2");
    run("qemu-img convert -O qcow2 " + d + "/b.raw " + d + "/b.qcow2");
    run("qemu-img create -q -f qcow2 " + d + "/blank.qcow2 16M");

    forky::GuestDiffOptions options;
    options.force_tcg = true;
    double launch_seconds = 0;
    std::string last_stage;
    options.progress = [&](const std::string& stage, double seconds) {
        if (stage == "starting libguestfs's appliance")
            launch_seconds = seconds;
        if (stage != last_stage)
            std::cout << "[" << seconds << " s] " << stage << "\n";
        last_stage = stage;
    };

    const auto t0 = std::chrono::steady_clock::now();
    std::vector<forky::DiskDiff> diffs;
    try {
        diffs = forky::guest_diff({{"vda", d + "/a.qcow2", d + "/b.qcow2", "qcow2"},
                                   {"vdb", d + "/blank.qcow2", d + "/blank.qcow2", "qcow2"}},
                                  options);
    } catch (const std::exception& e) {
        std::cout << "guest_diff threw: " << e.what() << "\n";
        fs::remove_all(dir);
        return 1;
    }
    const double total =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    print(diffs);
    std::cout << "appliance started within ~" << launch_seconds << " s; total " << total << " s\n";

    expect(diffs.size() == 2, "two disks");
    if (diffs.size() == 2) {
        const auto& vda = diffs[0];
        expect(vda.target == "vda" && vda.problem.empty(), "vda compared without a problem");
        expect(vda.filesystems.size() == 1, "vda has one filesystem");
        if (vda.filesystems.size() == 1) {
            const auto& f = vda.filesystems[0];
            expect(f.partition.empty() && f.fs_type == "ext4", "whole-disk ext4");
            std::set<std::string> seen;
            for (const auto& c : f.changes) {
                seen.insert(c.path);
                if (c.path == "/new.bin")
                    expect(c.kind == forky::FileChange::Kind::added && c.type_after == "file" &&
                               c.size_after == (1u << 20),
                           "/new.bin added, 1 MiB file");
                else if (c.path == "/del.txt")
                    expect(c.kind == forky::FileChange::Kind::removed && c.type_before == "file",
                           "/del.txt removed");
                else if (c.path == "/mod.txt")
                    expect(c.kind == forky::FileChange::Kind::changed &&
                               c.what == std::vector<std::string>{"content"} &&
                               c.first_difference == 4u,
                           "/mod.txt changed content at byte 4");
                else if (c.path == "/link")
                    expect(c.kind == forky::FileChange::Kind::changed &&
                               c.what == std::vector<std::string>{"link"},
                           "/link changed target");
                else
                    expect(false, "unexpected change " + c.path);
            }
            expect(seen == std::set<std::string>{"/del.txt", "/link", "/mod.txt", "/new.bin"},
                   "exactly the four expected changes (no /keep.txt, /dir)");
            bool sorted = std::is_sorted(f.changes.begin(), f.changes.end(),
                                         [](auto& x, auto& y) { return x.path < y.path; });
            expect(sorted, "changes sorted by path");
        }
        const auto& vdb = diffs[1];
        expect(vdb.target == "vdb" && vdb.filesystems.empty() &&
                   vdb.problem == "no filesystem libguestfs can read on vdb",
               "blank vdb: problem set, no throw");
    }
    fs::remove_all(dir);
    std::cout << (failures == 0 ? "PASS" : "FAILED") << "\n";
    return failures == 0 ? 0 : 1;
}

// forky diff A B: what a branch changed, file by file (libguestfs) or by blocks written.
#include "commands.hpp"
#include "diff.hpp"
#include "forky.hpp"
#include "json_out.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct DiffCommand {
    std::string after;
    std::string before;
    bool blocks = false;
    bool no_snapshot = false;
    bool json = false;
    unsigned wait_s = 120;
};

Json optional_size(const std::optional<std::uint64_t>& v) {
    return v ? Json(*v) : Json(nullptr);
}

Json change_json(const FileChange& c) {
    Json j = {{"path", c.path}};
    if (c.kind == FileChange::Kind::changed) {
        j["type"] = c.type_after;
        if (c.type_before != c.type_after)
            j["type_before"] = c.type_before;
        j["size_before"] = optional_size(c.size_before);
        j["size_after"] = optional_size(c.size_after);
        j["what"] = c.what;
        j["first_difference"] = optional_size(c.first_difference);
    } else {
        j["type"] = c.kind == FileChange::Kind::added ? c.type_after : c.type_before;
        j["size"] = optional_size(c.kind == FileChange::Kind::added ? c.size_after : c.size_before);
    }
    return j;
}

Json blocks_json(const BlockDiff& b) {
    auto layers = [](const std::vector<LayerBytes>& v) {
        Json a = Json::array();
        for (const auto& l : v)
            a.push_back({{"volume", l.volume}, {"bytes", l.bytes}});
        return a;
    };
    return {{"target", b.target},
            {"common_layer", text_or_null(b.common)},
            {"after_bytes", b.after_bytes},
            {"before_bytes", b.before_bytes},
            {"after_layers", layers(b.after_layers)},
            {"before_layers", layers(b.before_layers)}};
}

std::string size_text(const std::optional<std::uint64_t>& v) {
    return v ? std::to_string(*v) : "-";
}

void print_blocks(const BlockDiff& b, const DiffResult& r) {
    std::printf("%s: %s written by %s, %s by %s since %s\n", b.target.c_str(),
                format_size(b.after_bytes).c_str(), r.after.c_str(),
                format_size(b.before_bytes).c_str(), r.before.c_str(),
                b.common.empty() ? "ever (no layer in common)"
                                 : ("layer '" + b.common + "'").c_str());
}

void run_diff(const DiffCommand& cmd, Context& ctx) {
    if (ctx.remote())
        not_served("diff", ctx);
    DiffOptions o;
    o.blocks = cmd.blocks;
    o.no_snapshot = cmd.no_snapshot;
    o.lock_wait = std::chrono::seconds(cmd.wait_s);
    o.ctx = ctx.op_context();
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    bool shown = false;
    o.progress = [tty, &shown](const std::string& stage, double s) {
        if (tty) {
            std::fprintf(stderr, "\r%s… %.0f s   ", stage.c_str(), s);
            shown = true;
        } else if (s == 0) {
            std::fprintf(stderr, "%s…\n", stage.c_str());
        }
    };
    const std::string vm = cmd.after.substr(0, cmd.after.find('@'));
    DiffResult r = vm_diff(ctx.host_of(vm), cmd.after, cmd.before, o);
    if (shown)
        std::fprintf(stderr, "\r\033[K");
    for (const auto& p : r.problems)
        std::fprintf(stderr, "forky: warning: %s\n", p.c_str());
    if (cmd.json) {
        Json disks = Json::array();
        for (const auto& d : r.files) {
            Json fss = Json::array();
            for (const auto& f : d.filesystems) {
                Json added = Json::array(), removed = Json::array(), changed = Json::array();
                for (const auto& c : f.changes)
                    (c.kind == FileChange::Kind::added     ? added
                     : c.kind == FileChange::Kind::removed ? removed
                                                           : changed)
                        .push_back(change_json(c));
                fss.push_back({{"partition", text_or_null(f.partition)},
                               {"filesystem", f.fs_type},
                               {"added", added},
                               {"removed", removed},
                               {"changed", changed}});
            }
            disks.push_back(
                {{"target", d.target}, {"problem", text_or_null(d.problem)}, {"filesystems", fss}});
        }
        Json blocks = Json::array();
        for (const auto& b : r.blocks)
            blocks.push_back(blocks_json(b));
        Json out = {{"after", r.after}, {"before", r.before}};
        if (!cmd.blocks)
            out["disks"] = disks;
        out["blocks"] = blocks;
        out["problems"] = r.problems;
        out["froze_running_vm"] = r.froze;
        out["ms"] = static_cast<std::uint64_t>(r.ms);
        print_json(out);
        return;
    }
    for (const auto& d : r.files) {
        for (const auto& f : d.filesystems) {
            std::printf("%s%s (%s): %zu change%s\n", d.target.c_str(),
                        f.partition.empty() ? "" : (" partition " + f.partition).c_str(),
                        f.fs_type.c_str(), f.changes.size(), f.changes.size() == 1 ? "" : "s");
            for (const auto& c : f.changes) {
                if (c.kind == FileChange::Kind::added)
                    std::printf("  + %s  (%s, %s bytes)\n", c.path.c_str(), c.type_after.c_str(),
                                size_text(c.size_after).c_str());
                else if (c.kind == FileChange::Kind::removed)
                    std::printf("  - %s  (%s, %s bytes)\n", c.path.c_str(), c.type_before.c_str(),
                                size_text(c.size_before).c_str());
                else {
                    std::string what;
                    for (const auto& w : c.what)
                        what += (what.empty() ? "" : ", ") + w;
                    std::printf("  ~ %s  (%s; %s", c.path.c_str(), c.type_after.c_str(),
                                what.c_str());
                    if (c.size_before != c.size_after ||
                        std::find(c.what.begin(), c.what.end(), "content") != c.what.end())
                        std::printf(": %s -> %s bytes", size_text(c.size_before).c_str(),
                                    size_text(c.size_after).c_str());
                    if (c.first_difference)
                        std::printf(", first difference at byte %llu",
                                    static_cast<unsigned long long>(*c.first_difference));
                    std::printf(")\n");
                }
            }
        }
        if (!d.problem.empty())
            std::printf("%s: %s; its blocks instead:\n", d.target.c_str(), d.problem.c_str());
    }
    for (const auto& b : r.blocks)
        print_blocks(b, r);
    if (!cmd.blocks)
        std::fprintf(stderr, "Compared in %.1f s (libguestfs's appliance %.1f s)%s\n", r.ms / 1000,
                     r.appliance_s,
                     r.froze ? "; a running VM's disks were read through a fork point taken "
                               "for it and removed"
                             : "");
}

} // namespace

void setup_diff(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<DiffCommand>();
    CLI::App* sub = app.add_subcommand(
        "diff",
        "Show what A changed compared with B, disk by disk, file by file.\n"
        "A and B are VMs or snapshots (VM@SNAP), typically a child and the fork point it\n"
        "came from, or two siblings. Listed: the files added (in A, not in B), removed (in\n"
        "B, not in A) and changed (type, mode, owner, link target or content), with sizes\n"
        "before and after and a changed file's first differing byte when both are small.\n"
        "The disks are read with libguestfs, on this machine, read-only: a running VM is\n"
        "read through a disk-only snapshot taken for the purpose and removed afterwards (the\n"
        "VM keeps running, its disk chain one layer deeper; --no-snapshot refuses instead).\n"
        "libguestfs starts a small appliance VM once per diff: a few seconds with KVM, about\n"
        "30 s under emulation (used here when KVM is absent or this machine is itself a VM).\n"
        "--blocks answers at once without reading inside the guest: the bytes each side\n"
        "wrote since the newest disk layer they share (libvirt's allocation of each layer\n"
        "above it), for any filesystem, also against a remote host. A disk whose filesystem\n"
        "libguestfs cannot read gets that answer too.\n"
        "Examples: forky diff web-1 web@fp1\n"
        "          forky diff web-1 web-2 --json\n"
        "          forky diff web-1 web@fp1 --blocks");
    sub->add_option("a", cmd->after, "the VM or snapshot whose changes are shown (after)")
        ->required();
    sub->add_option("b", cmd->before, "the VM or snapshot it is compared with (before)")
        ->required();
    sub->add_flag("--blocks", cmd->blocks, "bytes written per disk since the common layer");
    sub->add_flag("--no-snapshot", cmd->no_snapshot,
                  "refuse a running VM instead of snapshotting its disks to read them");
    sub->add_option("--wait", cmd->wait_s, "seconds to wait while another operation runs")
        ->capture_default_str();
    sub->add_flag("--json", cmd->json, "print the result as JSON");
    sub->callback([cmd, &ctx] { run_diff(*cmd, ctx); });
}

} // namespace forky::cli

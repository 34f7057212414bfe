#include "yaml_reader.hpp"

#include "errors.hpp"
#include "names.hpp"
#include "units.hpp"

#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace forky {

namespace fs = std::filesystem;

std::string read_small_file(const fs::path& file, std::uintmax_t max_bytes) {
    std::error_code ec;
    fs::file_status st = fs::status(file, ec);
    if (ec || !fs::exists(st))
        throw SpecError(file.string() + ": cannot read the file: it does not exist");
    if (!fs::is_regular_file(st))
        throw SpecError(file.string() + ": not a regular file; forky reads specs and settings "
                                        "from plain files only");
    std::ifstream in(file, std::ios::binary);
    if (!in)
        throw SpecError(file.string() + ": cannot read the file");
    std::string text(max_bytes + 1, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<std::size_t>(in.gcount()));
    if (text.size() > max_bytes)
        throw SpecError(file.string() + ": larger than " + std::to_string(max_bytes >> 10) +
                        " KiB; this is not a forky file");
    return text;
}

namespace {

// A spec has a few dozen nodes. Aliases (*a) share nodes, so a walk of a small file can
// visit billions ("billion laughs"): the walk stops, with an error, long before.
constexpr std::size_t max_yaml_nodes = 10000;
constexpr std::size_t max_yaml_depth = 32;

// Key given twice in any mapping of the document: yaml-cpp keeps both and answers
// lookups with the first, so a second 'memory:' would be silently ignored.
void refuse_duplicates(const YamlReader& r, const YAML::Node& node, const std::string& path,
                       std::size_t depth, std::size_t& visited) {
    if (++visited > max_yaml_nodes)
        r.fail(node, path,
               "the document has more than " + std::to_string(max_yaml_nodes) +
                   " values (aliases expanding?); this is not a forky file");
    if (depth > max_yaml_depth)
        r.fail(node, path, "nested more than " + std::to_string(max_yaml_depth) + " levels deep");
    if (node.IsMap()) {
        std::map<std::string, int> seen;
        for (const auto& kv : node) {
            const std::string k = kv.first.IsScalar() ? kv.first.Scalar() : std::string();
            const std::string key = path.empty() ? k : path + "." + k;
            auto [it, fresh] = seen.emplace(k, kv.first.Mark().line + 1);
            if (!fresh)
                r.fail(kv.first, key,
                       "given twice (first on line " + std::to_string(it->second) + ")");
            refuse_duplicates(r, kv.second, key, depth + 1, visited);
        }
    } else if (node.IsSequence()) {
        for (std::size_t i = 0; i < node.size(); ++i)
            refuse_duplicates(r, node[i], path + "[" + std::to_string(i) + "]", depth + 1, visited);
    }
}

} // namespace

YAML::Node YamlReader::load(const std::string& text) const {
    YAML::Node root;
    try {
        std::vector<YAML::Node> docs = YAML::LoadAll(text);
        if (docs.size() > 1)
            throw SpecError(file_.string() + ':' + std::to_string(docs[1].Mark().line + 1) +
                            ": a second YAML document ('---'): one document per file");
        if (!docs.empty())
            root = docs.front();
    } catch (const YAML::Exception& e) {
        std::ostringstream out;
        out << file_.string() << ':' << e.mark.line + 1 << ": invalid YAML: " << e.msg;
        throw SpecError(out.str());
    }
    std::size_t visited = 0;
    refuse_duplicates(*this, root, "", 0, visited);
    return root;
}

unsigned YamlReader::whole_number(const YAML::Node& node, const std::string& key, unsigned low,
                                  unsigned high) const {
    const std::string text = scalar(node, key);
    if (text.empty() || text.size() > 9 ||
        text.find_first_not_of("0123456789") != std::string::npos)
        fail(node, key, "expected a whole number, got " + forky::quoted(text));
    const unsigned long v = std::stoul(text);
    if (v < low || v > high)
        fail(node, key, "must be between " + std::to_string(low) + " and " + std::to_string(high));
    return static_cast<unsigned>(v);
}

std::chrono::seconds YamlReader::duration(const YAML::Node& node, const std::string& key) const {
    std::string why;
    auto s = parse_duration(scalar(node, key), &why);
    if (!s)
        fail(node, key, why);
    if (s->count() == 0)
        fail(node, key, "must be longer than 0s");
    return *s;
}

std::string YamlReader::where(int line, const std::string& key) const {
    std::string out = file_.string();
    if (line > 0)
        out += ':' + std::to_string(line);
    if (!key.empty()) // as the file wrote it: quoted, control bytes escaped, cut short
        out += ": key " + forky::quoted(key.size() > 64 ? key.substr(0, 61) + "..." : key);
    return out;
}

void YamlReader::fail(const YAML::Node& at, const std::string& key, const std::string& why) const {
    int line = at.IsDefined() && at.Mark().line >= 0 ? at.Mark().line + 1 : 0;
    throw SpecError(where(line, key) + ": " + why);
}

void YamlReader::require_map(const YAML::Node& node, const std::string& key) const {
    if (!node.IsMap())
        fail(node, key, "expected a mapping");
}

void YamlReader::only_keys(const YAML::Node& map, const std::string& where,
                           std::initializer_list<const char*> known) const {
    std::set<std::string> allowed(known.begin(), known.end());
    for (const auto& kv : map) {
        std::string k = kv.first.Scalar();
        if (!allowed.count(k)) {
            std::string list;
            for (const auto* a : known)
                list += (list.empty() ? "" : ", ") + std::string(a);
            fail(kv.first, where.empty() ? k : where + "." + k,
                 "unknown key (known keys: " + list + ")");
        }
    }
}

std::string YamlReader::scalar(const YAML::Node& node, const std::string& key) const {
    if (!node.IsScalar())
        fail(node, key, "expected a single value");
    return node.Scalar();
}

YAML::Node YamlReader::required(const YAML::Node& map, const char* name,
                                const std::string& key) const {
    YAML::Node n = map[name];
    if (!n.IsDefined() || n.IsNull())
        fail(map, key, "is required");
    return n;
}

fs::path YamlReader::path(const YAML::Node& node, const std::string& key) const {
    std::string text = scalar(node, key);
    if (text.empty())
        fail(node, key, "path is empty");
    fs::path p(text);
    if (p.is_relative())
        p = file_.parent_path() / p;
    return p.lexically_normal();
}

fs::path YamlReader::existing_file(const YAML::Node& node, const std::string& key) const {
    fs::path p = path(node, key);
    std::error_code ec;
    if (!fs::exists(p, ec))
        fail(node, key, "file '" + p.string() + "' does not exist");
    if (!fs::is_regular_file(p, ec))
        fail(node, key, "'" + p.string() + "' is not a regular file");
    return p;
}

} // namespace forky

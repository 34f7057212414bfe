// A small JSON writer for `--json` output: no dependency for a few objects and lists.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace forky {

std::string json_quote(std::string_view text);

// Builds one JSON value; begin/end calls nest, commas are placed for you.
class JsonWriter {
public:
    JsonWriter& begin_object();
    JsonWriter& end_object();
    JsonWriter& begin_array();
    JsonWriter& end_array();
    JsonWriter& key(std::string_view k);
    JsonWriter& value(std::string_view v);
    JsonWriter& value(const char* v) { return value(std::string_view(v)); }
    JsonWriter& value(std::uint64_t v);
    JsonWriter& value(bool v);
    JsonWriter& null();
    const std::string& str() const { return out_; }

private:
    void separate();
    std::string out_;
    bool need_comma_ = false;
};

} // namespace forky

#pragma once
// Internal to the config loader: the merged key tree. Each value remembers where it came from
// (file and line, or the override that set it) and the directory its relative paths resolve
// against, so that an error found after `extends:` merging still names the right file and line.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace mg::config_detail {

struct Entry {
  std::string key;           // last path component ("alpha"); empty for the root
  std::string path;          // full dotted path ("lora.alpha"); empty for the root
  // The YAML value (scalar, sequence, or the map for a section). Held by pointer because
  // yaml-cpp's Node::operator= writes through to the node it refers to instead of rebinding,
  // which would corrupt shared nodes whenever Entries are moved or assigned.
  std::shared_ptr<const YAML::Node> node = std::make_shared<const YAML::Node>();
  const YAML::Node& value() const { return *node; }
  void set_value(const YAML::Node& v) { node = std::make_shared<const YAML::Node>(v); }
  std::string source;        // the file ("experiments/x.yaml") or "override 'lora.r=8'"
  int line = 0;              // 1-based line of the key in `source`; 0 = none (overrides)
  std::string base_dir;      // relative paths in this value resolve against it
  bool is_map = false;
  std::vector<Entry> children;  // when is_map, in file order

  const Entry* find(std::string_view child_key) const;
  Entry* find(std::string_view child_key);
};

// "experiments/x.yaml:12" (clickable in terminals and editors), or the override's text.
std::string where(const Entry& e);

// The i-th element of a list entry as an Entry of its own (path "data.path[1]", its own line).
Entry list_element(const Entry& list, size_t i);

// Reads a YAML file and everything it `extends:`, merged. `chain` holds the files being read
// (outermost first) for cycle detection; `files_read` collects every file in read order.
Entry load_file_tree(const std::string& path, std::vector<std::string>& chain,
                     std::vector<std::string>& files_read);

// Same from text already in memory (source_name in messages, base_dir for relative paths).
Entry load_text_tree(std::string_view text, const std::string& source_name,
                     const std::string& base_dir, std::vector<std::string>& chain,
                     std::vector<std::string>& files_read);

// Merges `over` into `base`: maps merge key by key (recursively), anything else replaces;
// a null never erases a map (an empty "lora:" section leaves the base's lora keys alone).
void merge_into(Entry& base, Entry over);

// Applies one "a.b.c=value" override on top of `root`. `is_known_path(path)` says whether a
// dotted path is a key or section of the schema; unknown ones throw with a suggestion.
void apply_override(Entry& root, const std::string& override_text,
                    const std::vector<std::string>& known_paths);

// Optimal-string-alignment edit distance (Levenshtein plus adjacent transpositions), so the
// common "alpah" typo is distance 1.
int edit_distance(std::string_view a, std::string_view b);

// The known path nearest to `unknown` (full path or last component), or "" when none is close.
std::string nearest_key(const std::string& unknown, const std::vector<std::string>& known_paths);

// "a string 'abc'", "a list", "a map", "null", "3.5": how a value reads in an error message.
std::string describe(const YAML::Node& node);

}  // namespace mg::config_detail
